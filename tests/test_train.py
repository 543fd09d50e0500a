import dataclasses

import numpy as np
import pytest
import torch

from virtual_lab.lab.reference import train_reference
from virtual_lab.lab.rules import ALL_RULES, PAPER_RULES, get_rule
from virtual_lab.lab.spec import RunSpec, checkpoint_schedule
from virtual_lab.lab.train import init_parameters, train_population

SIZES = (64, 24, 16, 10)


def spec(rule, seed=0, lr=None, **kw):
    kw.setdefault("n_epochs", 1)
    kw.setdefault("batch_size", 32)
    kw.setdefault("n_checkpoints", 4)
    kw.setdefault("weight_decay", get_rule(rule).default_weight_decay)
    return RunSpec(rule=rule, learning_rate=lr if lr is not None else get_rule(rule).default_learning_rate * 2,
                   seed=seed, layer_sizes=SIZES, n_probe=50, **kw)


def test_checkpoint_schedule():
    assert checkpoint_schedule(100, 5).tolist() == [0, 25, 50, 75, 100]
    log = checkpoint_schedule(100, 6, "log")
    assert log[0] == 0 and log[-1] == 100 and np.all(np.diff(log) > 0)
    with pytest.raises(ValueError, match="spacing"):
        checkpoint_schedule(100, 5, "cubic")
    with pytest.raises(ValueError, match="training steps"):
        checkpoint_schedule(3, 10)


# Engine-vs-reference comparisons run both sides in float64. In float32 a ~3e-8 rounding difference of the two
# implementations grows over the 54 steps (ReLU boundaries, Adam's eps) past any tolerance on some CPUs. In
# float64 the differences (~1e-16 relative) stay many orders below float32's resolution even if training
# amplifies them a millionfold; the recorded arrays are float32, so two equal float64 values can still round
# one ulp apart (1.2e-7 relative) where they straddle a float32 rounding boundary, hence rtol=1e-6 (8 ulps).
# atol=1e-9 covers values that are zero on one side and ~1e-16 on the other (a float64 sum that cancels).
F64 = {"rtol": 1e-6, "atol": 1e-9}


def assert_ground_truths_close(batched, reference, tol):
    """Every recorded trajectory of the two runs (weights, activations, activity change, loss) within ``tol``."""
    for layer in batched.layer_names:
        np.testing.assert_allclose(batched.weights[layer], reference.weights[layer], **tol)
        np.testing.assert_allclose(batched.activations[layer], reference.activations[layer], **tol)
        np.testing.assert_allclose(batched.activity_change[layer], reference.activity_change[layer], **tol)
    np.testing.assert_allclose(batched.train_loss, reference.train_loss, **tol)


@pytest.mark.parametrize("rule", ALL_RULES)
def test_population_equals_one_at_a_time_reference(rule, digits):
    # a mixed population: the rule under test next to every other rule, different seeds and rates
    specs = [spec(rule, seed=1)] + [spec(r, seed=10 + i) for i, r in enumerate(ALL_RULES)]
    if rule == "information_alignment":  # make B move visibly so the IA update itself is compared
        specs[0] = spec(rule, seed=1, ia_alpha=0.5, ia_beta=0.2, ia_gamma=0.05)
    batched = train_population(specs, digits, dtype=torch.float64)[0]
    reference = train_reference(specs[0], digits, dtype=torch.float64)
    initial_weights = init_parameters(SIZES, 1)[0]
    for layer, w0 in zip(batched.layer_names, initial_weights):  # both start from the float32 draws, exactly
        np.testing.assert_array_equal(batched.weights[layer][0], w0.numpy())
        np.testing.assert_array_equal(reference.weights[layer][0], w0.numpy())
    assert_ground_truths_close(batched, reference, F64)
    np.testing.assert_array_equal(batched.test_accuracy, reference.test_accuracy)
    assert (batched.weights["fc1"][-1] != batched.weights["fc1"][0]).any()


def test_float32_population_equals_reference_over_a_few_steps(digits):
    # the default float32 path of the same comparison, kept short: over 4 steps a float32 rounding difference
    # (~6e-8 relative per operation) cannot grow (measured: <= 4e-8 on weights, 4e-7 on activations and
    # loss, with avx2 and with ATEN_CPU_CAPABILITY=default), so 1e-6 leaves a margin of ~3-25x
    short = dataclasses.replace(digits, train_x=digits.train_x[:128], train_y=digits.train_y[:128])
    specs = [spec(r, seed=10 + i, n_checkpoints=3) for i, r in enumerate(ALL_RULES)]
    for batched, s in zip(train_population(specs, short), specs):
        reference = train_reference(s, short)
        assert batched.weights["fc1"].dtype == np.float32 and batched.metadata["n_steps"] == 4
        assert_ground_truths_close(batched, reference, {"rtol": 1e-5, "atol": 1e-6})
        # a float32 near-tie of two logits may flip one probe's argmax
        assert np.abs(batched.test_accuracy - reference.test_accuracy).max() <= 1 / 50 + 1e-6, s.rule


def test_float64_run_starts_from_the_float32_draws(digits):
    specs = [spec("adam", seed=2), spec("feedback_alignment", seed=3), spec("node_perturbation", seed=4),
             spec("direct_feedback_alignment", seed=5)]
    single, double = {}, {}
    first = train_population(specs, digits, final_state=single)
    second = train_population(specs, digits, final_state=double, dtype=torch.float64)
    assert all(a.dtype == np.float64 for arrays in double.values() for a in arrays)
    for key in ("feedback", "direct_feedback"):  # none of these rules moves B or D: the float32 draws, cast
        for a, b in zip(single[key], double[key]):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(first, second):
        assert b.weights["fc1"].dtype == np.float32  # recorded arrays stay float32
        for layer in a.layer_names:
            np.testing.assert_array_equal(a.weights[layer][0], b.weights[layer][0])
    with pytest.raises(ValueError, match="dtype must be one of torch.float32, torch.float64; got torch.float16"):
        train_population(specs, digits, dtype=torch.float16)
    with pytest.raises(ValueError, match="dtype must be one of"):
        train_reference(specs[0], digits, dtype=torch.bfloat16)


def test_feedback_alignment_keeps_fixed_random_feedback(digits):
    state = {}
    specs = [spec("feedback_alignment", seed=3), spec("sgdm", seed=4)]
    train_population(specs, digits, final_state=state)
    _, _, b0 = init_parameters(SIZES, 3)
    for layer, b in enumerate(b0):
        np.testing.assert_array_equal(state["feedback"][layer][0], b.numpy())  # B never changes
        w = state["weights"][layer][0]
        cos = np.sum(w * b.numpy()) / np.linalg.norm(w) / np.linalg.norm(b.numpy())
        assert abs(cos) < 0.3  # B is an independent draw, not W (in the engine's [out, in] layout)


def test_information_alignment_moves_feedback_by_its_local_loss_only(digits):
    state = {}
    strong = spec("information_alignment", seed=5, ia_alpha=0.5, ia_beta=0.0, ia_gamma=0.0)
    frozen = spec("information_alignment", seed=5, ia_alpha=0.0, ia_beta=0.0, ia_gamma=0.0)
    train_population([strong, frozen], digits, final_state=state)
    _, _, b0 = init_parameters(SIZES, 5)
    for layer, b in enumerate(b0):
        np.testing.assert_array_equal(state["feedback"][layer][1], b.numpy())  # zero loss -> B is FA's B
        moved = state["feedback"][layer][0] - b.numpy()
        assert np.abs(moved).max() > 1e-3
        # R_amp pulls B towards W (in [out, in] layout): the change is positively aligned with W
        w = state["weights"][layer][0]
        assert np.sum(moved * w) > 0


def test_divergent_run_is_marked_and_does_not_affect_neighbours(digits):
    good = [spec("sgdm", seed=7), spec("adam", seed=8)]
    bad = spec("sgdm", seed=9, lr=1e6)
    alone = train_population(good, digits)
    mixed = train_population([good[0], bad, good[1]], digits)
    assert mixed[1].diverged and mixed[1].metadata["diverged_step"] >= 0
    assert not mixed[0].diverged and not mixed[2].diverged
    for a, m in zip(alone, [mixed[0], mixed[2]]):
        for layer in a.layer_names:
            np.testing.assert_allclose(a.weights[layer], m.weights[layer], atol=1e-6)
    assert np.isnan(mixed[1].test_accuracy[-1])


def test_training_is_deterministic_and_learns(digits):
    specs = [spec(r, seed=i, n_epochs=3) for i, r in enumerate(PAPER_RULES)]
    first = train_population(specs, digits)
    second = train_population(specs, digits)
    for a, b in zip(first, second):
        for layer in a.layer_names:
            np.testing.assert_array_equal(a.activations[layer], b.activations[layer])
        assert a.test_accuracy[-1] > 0.5 > a.test_accuracy[0]  # every rule learns digits above chance (0.1)


def test_run_id_is_deterministic_and_spec_sensitive():
    a, b = spec("sgdm", seed=1), spec("sgdm", seed=1)
    assert a.run_id == b.run_id
    assert spec("sgdm", seed=2).run_id != a.run_id
    assert spec("adam", seed=1).run_id != a.run_id


def test_mismatched_cohort_is_rejected(digits):
    with pytest.raises(ValueError, match="cohort_key"):
        train_population([spec("sgdm"), spec("sgdm", batch_size=16)], digits)


def test_library_does_not_touch_global_rng(digits):
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    train_population([spec("sgdm")], digits)
    assert torch.rand(1) == expected_torch and np.random.rand() == expected_np
