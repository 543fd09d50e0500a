"""The recorded training loss on a fixed, seeded evaluation subset ([training] eval_subset, RunSpec.eval_subset)."""

import dataclasses

import h5py
import numpy as np
import pytest
import torch

from virtual_lab.lab.conv import train_conv_population
from virtual_lab.lab.rules import get_rule
from virtual_lab.lab.spec import EVAL_SUBSET, RunSpec, eval_subset_indices, eval_subset_seed
from virtual_lab.lab.train import train_population
from virtual_lab.protocol import ProtocolError, parse_protocol
from virtual_lab.seeding import derive_seed
from virtual_lab.sessions import read_session_metadata, write_session
from virtual_lab.sweeps.expand import expand_sweep


def mlp_spec(rule="sgdm", seed=0, **kw):
    return RunSpec(rule=rule, learning_rate=get_rule(rule).default_learning_rate, batch_size=64, n_epochs=1,
                   seed=seed, layer_sizes=(64, 12, 10), n_probe=50, n_checkpoints=3, **kw)


def test_subset_is_fixed_sorted_and_seeded_by_the_task():
    a = eval_subset_indices(1747, 100, 3)
    assert a.tolist() == eval_subset_indices(1747, 100, 3).tolist() and len(set(a.tolist())) == 100
    assert torch.all(a[1:] > a[:-1]) and int(a.max()) < 1747
    assert a.tolist() != eval_subset_indices(1747, 100, 4).tolist()  # another task seed, another subset
    assert eval_subset_seed(3) == derive_seed(3, "eval_subset")
    # 0, or a subset at least as large as the training set, is the whole training set
    assert eval_subset_indices(1747, 0, 3) is None and eval_subset_indices(1747, 1747, 3) is None
    with pytest.raises(ValueError, match="eval_subset"):
        eval_subset_indices(1747, -1, 3)
    with pytest.raises(TypeError, match="eval_subset"):
        eval_subset_indices(1747, "all", 3)


def _cross_entropy(final_state, x, y):
    """Mean cross-entropy of network 0 of an MLP population's final parameters on (x, y)."""
    a = torch.as_tensor(x, dtype=torch.float64)
    weights, biases = final_state["weights"], final_state["biases"]
    for i, (w, b) in enumerate(zip(weights, biases)):
        a = a @ torch.as_tensor(w[0]).t() + torch.as_tensor(b[0])
        a = a if i == len(weights) - 1 else torch.relu(a)
    return float(torch.nn.functional.cross_entropy(a, torch.as_tensor(y)))


def test_mlp_engine_records_the_loss_on_the_subset_and_trains_exactly_as_before(digits):
    n_train = len(digits.train_y)
    results, states, timings = {}, {}, {}
    for size in (0, 200):
        specs = [mlp_spec(eval_subset=size), mlp_spec("adam", seed=1, eval_subset=size)]
        states[size] = {}
        results[size] = train_population(specs, digits, dtype=torch.float64, final_state=states[size],
                                         timings=timings)
        assert 0 < timings["record_loss"] < timings["record"] < timings["total"]
    whole, subset = results[0][0], results[200][0]
    for layer in whole.layer_names:  # the subset changes only what the loss is measured on
        np.testing.assert_array_equal(whole.activations[layer], subset.activations[layer])
        np.testing.assert_array_equal(whole.weights[layer], subset.weights[layer])
    np.testing.assert_array_equal(whole.test_accuracy, subset.test_accuracy)
    index = eval_subset_indices(n_train, 200, 0).numpy()
    assert whole.train_loss[-1] == pytest.approx(_cross_entropy(states[0], digits.train_x, digits.train_y),
                                                 rel=1e-6)
    assert subset.train_loss[-1] == pytest.approx(
        _cross_entropy(states[200], digits.train_x[index], digits.train_y[index]), rel=1e-6)
    assert subset.train_loss[-1] != whole.train_loss[-1]
    assert whole.metadata["n_loss_examples"] == n_train and whole.metadata["eval_subset"] == 0
    assert subset.metadata["n_loss_examples"] == 200 and subset.metadata["eval_subset_seed"] == eval_subset_seed(0)


def test_conv_engine_records_the_loss_on_the_subset(digits):
    def conv_spec(size):
        return RunSpec(rule="sgdm", learning_rate=0.02, batch_size=64, n_epochs=1, seed=0, layer_sizes=(64, 10),
                       n_probe=50, n_checkpoints=2, architecture="cnn", channels=(2, 2, 2), eval_subset=size)

    whole = train_conv_population([conv_spec(0)], digits)[0]
    everything = train_conv_population([conv_spec(len(digits.train_y))], digits)[0]  # as large: the whole set
    subset = train_conv_population([conv_spec(64)], digits)[0]
    np.testing.assert_array_equal(whole.train_loss, everything.train_loss)
    assert np.all(subset.train_loss != whole.train_loss)
    np.testing.assert_array_equal(whole.test_accuracy, subset.test_accuracy)
    assert subset.metadata["n_loss_examples"] == 64 and whole.metadata["n_loss_examples"] == len(digits.train_y)


def test_populations_with_different_subsets_do_not_mix(digits):
    with pytest.raises(ValueError, match="cohort_key"):
        train_population([mlp_spec(eval_subset=100), mlp_spec(seed=1, eval_subset=200)], digits)


def test_session_stores_the_subset_and_says_what_the_loss_is_on(tmp_path, digits):
    gt = train_population([mlp_spec(eval_subset=300)], digits)[0]
    path = write_session(gt, tmp_path / "s.nwb")
    metadata = read_session_metadata(path)
    assert metadata["eval_subset"] == 300 and metadata["n_loss_examples"] == 300
    assert metadata["eval_subset_seed"] == eval_subset_seed(0)
    with h5py.File(path, "r") as f:
        description = f["processing/behavior/performance/train_loss"].attrs["description"]
    assert "300 training examples" in description


def test_protocol_key_reaches_every_run_and_keeps_default_run_ids():
    default = parse_protocol({"sweep": {"rules": ["sgdm"], "n_seeds": 2}})
    assert default.training.eval_subset == EVAL_SUBSET
    specs = expand_sweep(default, 64, 10)
    assert {s.eval_subset for s in specs} == {EVAL_SUBSET}
    whole = parse_protocol({"training": {"eval_subset": 0}, "sweep": {"rules": ["sgdm"], "n_seeds": 2}})
    whole_specs = expand_sweep(whole, 64, 10)
    assert {s.eval_subset for s in whole_specs} == {0}
    # the default leaves run ids as they were; another subset is another run
    assert specs[0].run_id == dataclasses.replace(specs[0], eval_subset=EVAL_SUBSET).run_id
    assert whole_specs[0].run_id != specs[0].run_id
    for bad in (-1, "all", 1.5):
        with pytest.raises(ProtocolError, match="training.eval_subset"):
            parse_protocol({"training": {"eval_subset": bad}})
