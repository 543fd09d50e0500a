"""The contrastive (SimCLR-style) paradigm in the convolutional population engine (virtual_lab.lab.conv)."""

import dataclasses

import numpy as np
import pytest
import torch

from virtual_lab.lab import conv
from virtual_lab.lab.contrastive import CONTRASTIVE_RULES, augment_generator, make_views
from virtual_lab.lab.conv import CONV_RULES, train_conv_population
from virtual_lab.lab.conv_geometry import CONV_ARCHITECTURES, task_images
from virtual_lab.lab.conv_reference import ConvReferenceTrainer, train_conv_reference
from virtual_lab.lab.rules import get_rule
from virtual_lab.lab.tasks import Task
from virtual_lab.lab.spec import RunSpec, batch_order
from virtual_lab.seeding import derive_seed

TINY = {"cnn": (4, 4, 4), "resnet": (4, 6)}
STRONG_IA = {"ia_alpha": 0.05, "ia_beta": 0.02, "ia_gamma": 0.005}  # B moves visibly and stays bounded
PROJECTION = 12  # != 10 classes: the projection head's width is free


def spec(rule, architecture="cnn", seed=0, lr=None, **kw):
    # the rules' default rates capped at 0.05 (NT-Xent dynamics are chaotic at plain SGD's 0.1), times 4 so
    # that 20 steps move every tiny network visibly
    lr = lr if lr is not None else 4 * min(get_rule(rule).default_learning_rate, 0.05)
    kw.setdefault("n_epochs", 1)
    kw.setdefault("batch_size", 32)
    kw.setdefault("n_checkpoints", 3)
    kw.setdefault("channels", TINY[architecture])
    kw.setdefault("weight_decay", get_rule(rule).default_weight_decay)
    kw.setdefault("layer_sizes", (64, PROJECTION))
    return RunSpec(rule=rule, learning_rate=lr, seed=seed, n_probe=50, architecture=architecture,
                   paradigm="contrastive", **kw)


@pytest.fixture(scope="module")
def small_digits(digits):
    """The digits task with its first 640 training images (20 steps of 32)."""
    return dataclasses.replace(digits, train_x=digits.train_x[:640], train_y=digits.train_y[:640])


@pytest.fixture(scope="module")
def mixed(small_digits):
    """One mixed contrastive population per architecture: every conv rule, own seed, rate and temperature."""
    cache = {}

    def get(architecture):
        if architecture not in cache:
            specs = [spec(r, architecture, seed=10 + i, temperature=0.3 if i % 2 else 0.5,
                          **(STRONG_IA if r == "information_alignment" else {}))
                     for i, r in enumerate(CONV_RULES)]
            state = {}
            cache[architecture] = specs, train_conv_population(specs, small_digits, final_state=state,
                                                               dtype=torch.float64), state
        return cache[architecture]

    return get


def test_every_conv_rule_is_a_contrastive_rule():
    assert set(CONV_RULES) <= set(CONTRASTIVE_RULES)
    assert conv.CONV_RULES is __import__("virtual_lab.lab.rules", fromlist=["CONV_RULES"]).CONV_RULES


@pytest.mark.parametrize("architecture", CONV_ARCHITECTURES)
@pytest.mark.parametrize("rule", CONV_RULES)
def test_population_equals_one_at_a_time_reference(rule, architecture, mixed, small_digits):
    specs, results, state = mixed(architecture)
    i = CONV_RULES.index(rule)
    reference_state = {}
    batched, reference = results[i], train_conv_reference(specs[i], small_digits, final_state=reference_state,
                                                          dtype=torch.float64)
    assert batched.layer_names == reference.layer_names
    # Both sides in float64. NT-Xent normalizes the projections and divides by the temperature, so a float32
    # rounding difference of the two implementations is amplified step after step (Adam's eps and ReLU
    # boundaries add finite jumps: 1.2e-4 on Adam's ResNet weights after these 20 steps with
    # ATEN_CPU_CAPABILITY=default); float64's ~1e-16 grown as much stays far below float32 resolution. The
    # recorded arrays are float32: equal float64 values may round one ulp (1.2e-7 relative) apart, hence
    # rtol=1e-6; atol=1e-9 for values that cancel to ~0 on both sides.
    tol = {"rtol": 1e-6, "atol": 1e-9}
    for layer in batched.layer_names:
        np.testing.assert_array_equal(batched.weights[layer][0], reference.weights[layer][0])  # same float32 draws
        np.testing.assert_allclose(batched.weights[layer], reference.weights[layer], **tol)
        np.testing.assert_allclose(batched.activations[layer], reference.activations[layer], **tol)
        np.testing.assert_allclose(batched.activity_change[layer], reference.activity_change[layer], **tol)
    for l in range(len(batched.layer_names)):  # IA's and KP's feedback kernels followed the same trajectory
        np.testing.assert_allclose(state["feedback"][l][i], reference_state["feedback"][l], **tol)
        np.testing.assert_allclose(state["biases"][l][i], reference_state["biases"][l], **tol)
        np.testing.assert_allclose(state["weights"][l][i], reference_state["weights"][l], **tol)
    np.testing.assert_allclose(batched.train_loss, reference.train_loss, **tol)
    # the reference averages class by class, the engine sums normalized representations: in float64 no
    # centroid similarity comes within their rounding difference of a tie
    np.testing.assert_array_equal(batched.test_accuracy, reference.test_accuracy)
    assert (batched.weights["fc"][-1] != batched.weights["fc"][0]).any()
    assert batched.activations["fc"].shape == (3, 50, PROJECTION)


def test_engine_trains_on_each_networks_own_views(small_digits, monkeypatch):
    seen = []

    def spy(x, image_shape, generators, **kw):
        views = make_views(x, image_shape, generators, **kw)
        seen.append((x.clone(), views.clone()))
        return views

    monkeypatch.setattr(conv, "make_views", spy)
    specs = [spec("sgdm", seed=3, n_checkpoints=2), spec("adam", seed=4, n_checkpoints=2)]
    train_conv_population(specs, small_digits)
    assert len(seen) == 20  # one call per step, every network's two views at once
    x, views = seen[0]
    train_x = torch.as_tensor(small_digits.train_x)
    assert views.shape == (2, 64, 64)  # (N, 2B, D)
    for i, s in enumerate(specs):
        first_batch = batch_order(s.seed, 640, 32, 1)[0]
        torch.testing.assert_close(x[i], train_x[first_batch], rtol=0, atol=0)
        # deterministic per seed: a fresh generator of the network's own stream gives the same views
        own = make_views(x[i:i + 1], small_digits.image_shape, [augment_generator(s.seed)])[0]
        torch.testing.assert_close(views[i], own, rtol=0, atol=0)
        other = make_views(x[i:i + 1], small_digits.image_shape, [augment_generator(specs[1 - i].seed)])[0]
        assert (views[i] - other).abs().max() > 0.05  # another network's stream would give other views
        assert (views[i, :32] - views[i, 32:]).abs().max() > 0.05  # the two views of an image differ
    # the stream advances: the second step's views are new draws
    second = make_views(seen[1][0][:1], small_digits.image_shape, [augment_generator(specs[0].seed)])[0]
    assert (seen[1][1][0] - second).abs().max() > 0.05


def test_views_do_not_depend_on_neighbours_and_runs_are_deterministic(small_digits):
    alone = train_conv_population([spec("feedback_alignment", "resnet", seed=7)], small_digits)[0]
    again = train_conv_population([spec("feedback_alignment", "resnet", seed=7)], small_digits)[0]
    beside = train_conv_population([spec("sgdm", "resnet", seed=8), spec("feedback_alignment", "resnet", seed=7)],
                                   small_digits)[1]
    for layer in alone.layer_names:
        np.testing.assert_array_equal(alone.weights[layer], again.weights[layer])
        np.testing.assert_allclose(alone.weights[layer], beside.weights[layer], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(alone.train_loss, again.train_loss)


def test_contrastive_training_lowers_the_evaluation_loss(digits):
    specs = [spec("sgdm", "cnn", seed=2, lr=0.05, n_epochs=2, batch_size=64, channels=(8, 8, 8), layer_sizes=(64, 32)),
             spec("adam", "resnet", seed=2, lr=3e-3, n_epochs=2, batch_size=64, channels=(8, 16),
                  layer_sizes=(64, 32))]
    cnn, resnet = (train_conv_population([s], digits)[0] for s in specs)
    assert cnn.train_loss[0] == pytest.approx(np.log(511), abs=0.02)  # near chance: 1 positive among 511
    assert cnn.train_loss[-1] < cnn.train_loss[0] - 0.5  # the evaluation NT-Xent falls clearly
    assert resnet.train_loss[-1] < resnet.train_loss[0] - 0.3
    for run in (cnn, resnet):
        assert run.test_accuracy[-1] > 0.5  # centroid read-out of the representation; chance is 0.1
    meta = cnn.metadata
    assert meta["paradigm"] == "contrastive" and meta["temperature"] == 0.5 and meta["projection_width"] == 32
    assert meta["representation_layer"] == "conv3" and meta["representation_pooling"] == "flatten"
    assert meta["augment_seed"] == derive_seed(2, "augment") and meta["n_eval_pairs"] == 256
    assert meta["eval_seed"] == derive_seed(digits.seed, "contrastive_eval")
    assert resnet.metadata["representation_layer"] == "block2_conv2"
    assert resnet.metadata["representation_pooling"] == "global_average"


def test_colour_images_keep_their_layout():
    rng = np.random.default_rng(0)
    x = rng.random((300, 8 * 8 * 3), dtype=np.float32)
    y = rng.integers(0, 10, 300)
    task = Task("cifar10", x[:256], y[:256], x[256:], y[256:], (8, 8, 3), 10, 0)
    s = dataclasses.replace(spec("sgdm", "cnn", seed=1, task="cifar10", layer_sizes=(192, 8), n_checkpoints=2),
                            n_probe=44)
    batched, reference = train_conv_population([s], task)[0], train_conv_reference(s, task)
    assert batched.metadata["n_eval_pairs"] == 256 and batched.weights["conv1"].shape == (2, 4, 27)
    # the default float32 path: 8 steps of plain SGD, too few for NT-Xent to amplify rounding (measured <= 3e-8
    # on weights and activations, with avx2 and with ATEN_CPU_CAPABILITY=default); a layout error would
    # differ by O(0.1)
    for name in batched.layer_names:
        np.testing.assert_allclose(batched.weights[name], reference.weights[name], rtol=0, atol=1e-6)
        np.testing.assert_allclose(batched.activations[name], reference.activations[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batched.train_loss, reference.train_loss, rtol=1e-6)


def test_reference_trainer_sees_two_views(digits):
    s = spec("sgd", "cnn", seed=5)
    trainer = ConvReferenceTrainer(s, (1, 8, 8))
    images = torch.as_tensor(task_images(digits.train_x[:6], digits.image_shape))
    trainer.step(images, None)
    x_in = trainer.model.tape["conv1"][0]
    assert x_in.shape == (12, 1, 8, 8)
    flat = torch.as_tensor(digits.train_x[:6]).unsqueeze(0)
    expected = make_views(flat, digits.image_shape, [augment_generator(5)])[0].reshape(12, 1, 8, 8)
    torch.testing.assert_close(x_in, expected, rtol=0, atol=1e-6)


def test_invalid_contrastive_populations_are_rejected(digits):
    with pytest.raises(ValueError, match="paradigm must be one of"):
        train_conv_population([dataclasses.replace(spec("sgdm"), paradigm="reinforcement")], digits)
    with pytest.raises(ValueError, match="does not match the contrastive runs"):
        train_conv_population([spec("sgdm", layer_sizes=(48, 12))], digits)
    with pytest.raises(ValueError, match="cohort_key"):  # paradigms do not mix in one population
        train_conv_population([spec("sgdm"), dataclasses.replace(spec("sgdm"), paradigm="supervised")], digits)
    with pytest.raises(ValueError, match="has no convolutional version"):
        train_conv_population([spec("sgdm"), spec("hebbian")], digits)


def test_chunked_read_outs_equal_one_pass(small_digits, monkeypatch):
    specs = [spec("sgdm", seed=1, n_checkpoints=2), spec("adam", seed=2, n_checkpoints=2, temperature=0.2),
             spec("kolen_pollack", seed=3, n_checkpoints=2)]
    whole = train_conv_population(specs, small_digits)
    # one network per evaluation chunk, 2 image chunks of the 512 evaluation views, 8 of the training set
    monkeypatch.setattr(conv, "_CHUNK_FLOATS", 2 ** 16)
    chunked = train_conv_population(specs, small_digits)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-6)
        np.testing.assert_array_equal(a.test_accuracy, b.test_accuracy)
        np.testing.assert_allclose(a.weights["fc"], b.weights["fc"], rtol=0, atol=1e-6)
