"""Tests of the convolutional engine's checkpoint recording (virtual_lab.lab.conv): chunks of probes and loss
examples, and the ``conv(1, W)`` sums a checkpoint forms once for all its chunks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import virtual_lab.lab.conv as conv
from virtual_lab.lab.conv_geometry import CONV_ARCHITECTURES, conv_input_sums, conv_layers
from virtual_lab.lab.conv_network import _input_sums
from virtual_lab.lab.rules import get_rule
from virtual_lab.lab.spec import RunSpec

TINY = {"cnn": (4, 4, 4), "resnet": (4, 6)}


def spec(rule, architecture, seed):
    return RunSpec(rule=rule, learning_rate=get_rule(rule).default_learning_rate, seed=seed, n_probe=50,
                   architecture=architecture, channels=TINY[architecture], layer_sizes=(64, 10), n_epochs=1,
                   batch_size=256, n_checkpoints=3, weight_decay=get_rule(rule).default_weight_decay)


@pytest.mark.parametrize("architecture", CONV_ARCHITECTURES)
def test_recording_in_chunks_equals_recording_in_one_pass(architecture, digits, monkeypatch):
    specs = [spec("sgdm", architecture, 1), spec("feedback_alignment", architecture, 2)]
    whole = conv.train_conv_population(specs, digits)
    # widest layer 4 x 8 x 8 = 256 units, 2 networks: 7 images per chunk (8 chunks of 50 probes, 37 of 256
    # loss examples, the last ones no smaller than the others)
    monkeypatch.setattr(conv, "_CHUNK_FLOATS", 2 * 256 * 7)
    chunked = conv.train_conv_population(specs, digits)
    for a, b in zip(whole, chunked):
        for name in a.layer_names:
            np.testing.assert_allclose(b.activations[name], a.activations[name], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b.activity_change[name], a.activity_change[name], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(b.weights[name], a.weights[name])  # training ignores the chunks
        assert np.isfinite(a.activity_change[a.layer_names[0]]).all()
        np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=1e-6)
        np.testing.assert_array_equal(b.test_accuracy, a.test_accuracy)


@pytest.mark.parametrize("architecture", CONV_ARCHITECTURES)
def test_input_sums_are_the_convolution_of_an_all_ones_input(architecture):
    layers = conv_layers(architecture, TINY[architecture], (1, 8, 8), 10)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn((3, *layer.weight_shape), generator=generator, dtype=torch.float64) for layer in layers]
    for layer, w, sums in zip(layers, weights, _input_sums(layers, weights)):
        if layer.kind == "fc":
            expected = w.sum(2)
        else:  # each network's kernels on one all-ones image: the zero padding makes edge units see less
            ones = torch.ones((1, *layer.in_shape), dtype=torch.float64)
            expected = torch.stack([F.conv2d(ones, w[i], None, layer.stride, layer.padding).reshape(-1)
                                    for i in range(len(w))])
            np.testing.assert_allclose(conv_input_sums(layer, w.numpy()), expected.numpy(), rtol=1e-6)
        assert sums.shape == (3, layer.n_units)
        np.testing.assert_allclose(sums.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
