"""Sweeps drawn from priors (sampling = "random"), the learning-rate multiplier in every session, grid ids kept."""

import dataclasses
import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from virtual_lab import __version__
from virtual_lab.lab.spec import RunSpec
from virtual_lab.protocol import Prior, ProtocolError, load_protocol, parse_protocol
from virtual_lab.sweeps.expand import expand_sweep
from virtual_lab.sweeps.priors import draw_value, unit_draw
from virtual_lab.sweeps.storage import spec_metadata, spec_mismatches

ROOT = Path(__file__).resolve().parents[1]

LR_PRIOR = {"distribution": "log_uniform", "low": 0.35, "high": 2.83}


def random_protocol(seed=5, n_runs=6, **sweep):
    priors = sweep.pop("priors", {"learning_rate_scale": LR_PRIOR})
    return parse_protocol({"seed": seed, "sweep": {"rules": ["sgdm", "adam", "feedback_alignment"],
                                                   "sampling": "random", "n_runs": n_runs, "priors": priors,
                                                   **sweep}})


# -- grid protocols are unchanged ------------------------------------------------------------------------------

#: sha256 of the newline-joined run ids of each bundled grid protocol. First pinned at commit 2e79170 (before
#: priors and the descriptive learning-rate fields existed, virtual_lab 0.1.0) and kept through every change
#: since; re-pinned at virtual_lab 0.2.0, whose code version (convolutional information alignment's local loss
#: averaged over positions) enters every id, and whose paper protocol trains longer at other IA coefficients.
HEAD_RUN_IDS = {"quickstart": ("44bfb4a7415952bd", ["96c7c3ca0fbe", "734c43ca5317", "ce54b4ed18e9"]),
                "paper": ("175a54044dc49383", ["25b36cb6207e", "d5e623cf4b2d", "20dac3616f13"]),
                "zoo": ("2c9ba557a2ca2274", ["55e87889185a", "028f9bdcb7d3", "4df2f05e855e"])}


@pytest.mark.parametrize("name", sorted(HEAD_RUN_IDS))
def test_grid_protocols_keep_their_pinned_run_ids(name):
    if __version__ != "0.2.0":
        pytest.skip("the pinned ids were computed with code version 0.2.0")
    ids = [s.run_id for s in expand_sweep(load_protocol(name), 64, 10)]
    digest, first = HEAD_RUN_IDS[name]
    assert ids[:3] == first
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] == digest


def test_grid_runs_carry_their_multiplier_outside_the_run_id_and_the_spec_check():
    protocol = load_protocol("quickstart")
    specs = expand_sweep(protocol, 64, 10)
    assert Counter(s.learning_rate_scale for s in specs) == {0.5: 32, 1.0: 32, 2.0: 32}
    assert all(s.calibrated_scale == 1.0 for s in specs)
    for spec in specs[:: 17]:
        assert math.isclose(spec.learning_rate, protocol.base_learning_rate(spec.rule) * spec.learning_rate_scale,
                            rel_tol=1e-12)
    spec = next(s for s in specs if s.learning_rate_scale == 2.0)
    # descriptive: neither the id nor the check of a stored session sees it
    assert dataclasses.replace(spec, learning_rate_scale=7.0, calibrated_scale=3.0).run_id == spec.run_id
    stored = {"run_id": spec.run_id, **spec_metadata(spec)}
    assert not any("scale" in key for key in stored)
    assert spec_mismatches(spec, stored) == []  # a session written before the field existed is complete
    assert spec_mismatches(spec, {**stored, "learning_rate_scale": 0.5}) == []
    assert spec_mismatches(dataclasses.replace(spec, learning_rate=0.5), stored)  # what the run is still counts


# -- draws --------------------------------------------------------------------------------------------------------

def test_draw_value_inverts_each_distribution():
    assert draw_value(Prior("learning_rate_scale", "log_uniform", 0.25, 4.0), 0.5) == pytest.approx(1.0)
    assert draw_value(Prior("weight_decay", "uniform", 0.0, 1e-3), 0.25) == pytest.approx(2.5e-4)
    assert [draw_value(Prior("depth", "int_uniform", 1, 3), u) for u in (0.01, 0.34, 0.67, 0.99)] == [1, 2, 3, 3]
    log_int = Prior("width", "int_log_uniform", 1, 3)  # P(1) = log 2 / log 4 = 1/2
    assert [draw_value(log_int, u) for u in (0.49, 0.51, 0.99)] == [1, 2, 3]
    assert [draw_value(Prior("task", "choice", values=("a", "b", "c")), u) for u in (0.1, 0.5, 0.9)] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        draw_value(Prior("depth", "int_uniform", 1, 3), 1.0)


def test_unit_draws_are_uniform_and_stateless():
    u = np.array([unit_draw(1, "prior", "x", i) for i in range(4000)])
    assert ((u > 0) & (u < 1)).all() and len(set(u)) == len(u)
    assert abs(u.mean() - 0.5) < 0.02 and abs(np.median(u) - 0.5) < 0.03
    state = np.random.get_state()[1].copy()
    expand_sweep(random_protocol(), 64, 10)
    assert (np.random.get_state()[1] == state).all()  # no global RNG drawn from


def test_random_sweeps_are_deterministic_per_seed_and_within_bounds():
    priors = {"learning_rate_scale": LR_PRIOR,
              "width": {"distribution": "int_uniform", "low": 32, "high": 256},
              "depth": {"distribution": "int_uniform", "low": 1, "high": 3},
              "batch_size": {"distribution": "choice", "values": [32, 64, 128]},
              "weight_decay": {"distribution": "log_uniform", "low": 1e-6, "high": 1e-3}}
    specs = expand_sweep(random_protocol(n_runs=40, priors=priors), 64, 10)
    again = expand_sweep(random_protocol(n_runs=40, priors=priors), 64, 10)
    assert specs == again
    other = expand_sweep(random_protocol(seed=6, n_runs=40, priors=priors), 64, 10)
    assert [s.learning_rate for s in other] != [s.learning_rate for s in specs]
    assert Counter(s.rule for s in specs) == {"sgdm": 40, "adam": 40, "feedback_alignment": 40}
    assert len({s.seed for s in specs}) == len(specs) and len({s.run_id for s in specs}) == len(specs)
    scales = np.array([s.learning_rate_scale for s in specs])
    assert (scales >= 0.35).all() and (scales <= 2.83).all()
    assert np.log(scales).std() > 0.4  # spread over the range, not a constant
    for spec in specs:
        hidden = spec.layer_sizes[1:-1]
        assert 1 <= len(hidden) <= 3 and len(set(hidden)) == 1 and 32 <= hidden[0] <= 256
        assert spec.batch_size in (32, 64, 128) and 1e-6 <= spec.weight_decay <= 1e-3
    assert {len(s.layer_sizes) - 2 for s in specs} == {1, 2, 3} and {s.batch_size for s in specs} == {32, 64, 128}
    # draw i is the same for every rule (paired hyperparameters), the seeds are not
    by_rule = {rule: [s for s in specs if s.rule == rule] for rule in ("sgdm", "adam")}
    assert [(s.learning_rate_scale, s.layer_sizes, s.batch_size) for s in by_rule["sgdm"]] == \
        [(s.learning_rate_scale, s.layer_sizes, s.batch_size) for s in by_rule["adam"]]
    assert not {s.seed for s in by_rule["sgdm"]} & {s.seed for s in by_rule["adam"]}


def test_each_axis_draws_from_its_own_stream():
    lr_only = expand_sweep(random_protocol(n_runs=8), 64, 10)
    with_width = expand_sweep(random_protocol(n_runs=8, priors={
        "learning_rate_scale": LR_PRIOR, "width": {"distribution": "choice", "values": [16, 32]}}), 64, 10)
    assert [s.learning_rate_scale for s in lr_only] == [s.learning_rate_scale for s in with_width]
    more = expand_sweep(random_protocol(n_runs=12), 64, 10)  # more draws keep the first ones
    assert [s.learning_rate_scale for s in more if s.rule == "adam"][:8] == \
        [s.learning_rate_scale for s in lr_only if s.rule == "adam"]


def test_per_layer_widths_and_crossed_lists_with_priors():
    per_layer = expand_sweep(random_protocol(n_runs=20, priors={
        "width": {"distribution": "int_log_uniform", "low": 8, "high": 64, "per_layer": True}}), 64, 10)
    assert any(len(set(s.layer_sizes[1:-1])) > 1 for s in per_layer)
    assert all(8 <= w <= 64 for s in per_layer for w in s.layer_sizes[1:-1])
    assert {s.learning_rate_scale for s in per_layer} == {1.0}  # no lr prior: the single grid value
    crossed = expand_sweep(random_protocol(n_runs=3, batch_sizes=[32, 64]), 64, 10)
    assert Counter((s.rule, s.batch_size) for s in crossed) == {(r, b): 3 for r in ("sgdm", "adam",
                                                                                   "feedback_alignment")
                                                                 for b in (32, 64)}
    cells = {b: [s.learning_rate_scale for s in crossed if s.rule == "sgdm" and s.batch_size == b] for b in (32, 64)}
    assert cells[32] != cells[64]  # every cell has its own draws


def test_choice_priors_over_tasks_and_architectures():
    protocol = parse_protocol({"network": {"channels": [4, 8, 8]}, "sweep": {
        "rules": ["sgdm", "feedback_alignment"], "sampling": "random", "n_runs": 12, "priors": {
            "architecture": {"distribution": "choice", "values": ["mlp", "cnn"]},
            "task": {"distribution": "choice", "values": ["digits", "gaussian_clusters"]}}}})
    specs = expand_sweep(protocol, 64, 10)
    assert {s.architecture for s in specs} == {"mlp", "cnn"} and {s.task for s in specs} == {"digits",
                                                                                            "gaussian_clusters"}
    assert all(s.channels == (4, 8, 8) for s in specs if s.architecture == "cnn")
    with pytest.raises(ProtocolError, match="sweep.rules: rule 'hebbian' has no convolutional version"):
        parse_protocol({"sweep": {"rules": ["sgdm", "hebbian"], "sampling": "random", "n_runs": 2, "priors": {
            "architecture": {"distribution": "choice", "values": ["mlp", "cnn"]}}}})


def test_sampled_values_are_stored_in_every_session(tmp_path):
    from virtual_lab.sessions import read_session_metadata
    from virtual_lab.sweeps.run import run_sweep

    protocol = parse_protocol({
        "name": "drawn", "seed": 3, "output_dir": str(tmp_path), "task": {"n_probe": 20},
        "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3},
        "sweep": {"rules": ["sgdm", "adam"], "sampling": "random", "n_runs": 2, "priors": {
            "learning_rate_scale": LR_PRIOR, "width": {"distribution": "choice", "values": [8, 12]}}}})
    result = run_sweep(protocol, n_workers=0, progress=False)
    assert result.ok and result.n_trained == 4
    for spec in result.plan.specs:
        metadata = read_session_metadata(result.plan.paths[spec.run_id])
        assert metadata["learning_rate_scale"] == spec.learning_rate_scale
        assert metadata["calibrated_scale"] == 1.0
        assert metadata["learning_rate"] == pytest.approx(protocol.base_learning_rate(spec.rule)
                                                          * spec.learning_rate_scale)
        assert metadata["spec_layer_sizes"] == ",".join(map(str, spec.layer_sizes))
    assert run_sweep(protocol, n_workers=0, progress=False).n_reused == 4  # found complete again


# -- validation ---------------------------------------------------------------------------------------------------

def random_sweep(**sweep):
    return {"sweep": {"sampling": "random", "n_runs": 4, **sweep}}


@pytest.mark.parametrize("data, message", [
    (random_sweep(priors={"learning_rate_scale": {"distribution": "gaussian", "low": 1, "high": 2}}),
     "sweep.priors.learning_rate_scale.distribution: 'gaussian' is not allowed"),
    (random_sweep(priors={"width": {"distribution": "log_uniform", "low": 8, "high": 64}}),
     "sweep.priors.width.distribution: 'log_uniform' is not allowed; did you mean 'int_log_uniform'?"),
    (random_sweep(priors={"learning_rate_scale": {"distribution": "log_uniform", "low": 2.0, "high": 1.0}}),
     "sweep.priors.learning_rate_scale: low (2.0) must be < high (1.0)"),
    (random_sweep(priors={"depth": {"distribution": "int_uniform", "low": 2, "high": 2}}),
     "sweep.priors.depth: low (2) must be < high (2)"),
    (random_sweep(priors={"weight_decay": {"distribution": "log_uniform", "low": 0, "high": 1e-3}}),
     "sweep.priors.weight_decay.low: log_uniform needs low > 0, got 0.0"),
    (random_sweep(priors={"learning_rate_scale": {"distribution": "log_uniform", "low": -1, "high": 1}}),
     "sweep.priors.learning_rate_scale.low: -1.0 is out of range (allowed: > 0)"),
    (random_sweep(priors={"width": {"distribution": "int_uniform", "low": 8.5, "high": 64}}),
     "sweep.priors.width.low: expected an integer, got number 8.5"),
    (random_sweep(priors={"widht": {"distribution": "choice", "values": [8]}}),
     "sweep.priors.widht: unknown key; did you mean 'sweep.priors.width'?"),
    (random_sweep(priors={"width": {"low": 8, "high": 64}}), "sweep.priors.width: missing 'distribution'"),
    (random_sweep(priors={"width": {"distribution": "int_uniform", "low": 8}}),
     "sweep.priors.width: distribution 'int_uniform' needs low and high"),
    (random_sweep(priors={"batch_size": {"distribution": "choice", "values": [32], "low": 1}}),
     "sweep.priors.batch_size.low: unknown key for distribution 'choice' (allowed: distribution, values)"),
    (random_sweep(priors={"batch_size": {"distribution": "choice", "values": []}}),
     "sweep.priors.batch_size.values: expected a non-empty list"),
    (random_sweep(priors={"task": {"distribution": "choice", "values": ["digts"]}}),
     "sweep.priors.task.values[0]: 'digts' is not allowed; did you mean 'digits'?"),
    (random_sweep(priors={"depth": {"distribution": "int_uniform", "low": 1, "high": 3, "per_layer": True}}),
     "sweep.priors.depth.per_layer: unknown key"),
    (random_sweep(priors={"width": 64}), "sweep.priors.width: expected a table such as"),
    ({"sweep": {"sampling": "random", "n_runs": 0}}, "sweep.n_runs: sampling = \"random\" needs n_runs >= 1"),
    ({"sweep": {"sampling": "random"}}, "sweep.n_runs: sampling = \"random\" needs n_runs >= 1"),
    ({"sweep": {"priors": {"learning_rate_scale": LR_PRIOR}}}, "sweep.priors: priors need sampling = \"random\""),
    ({"sweep": {"n_runs": 8}}, "sweep.n_runs: used only with sampling = \"random\""),
    (random_sweep(n_seeds=2), "sweep.n_seeds: not used with sampling = \"random\""),
    (random_sweep(learning_rate_scales=[0.5, 1.0], priors={"learning_rate_scale": LR_PRIOR}),
     "sweep.learning_rate_scales: axis 'learning_rate_scale' has a prior"),
    ({"sweep": {"sampling": "lattice"}}, "sweep.sampling: 'lattice' is not allowed"),
])
def test_invalid_priors_give_one_line_errors(data, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocol(data, "bad.toml")
    text = str(info.value)
    assert text.startswith("bad.toml: ") and message in text and "\n" not in text


# -- the bundled protocol ----------------------------------------------------------------------------------------

def test_robust_protocol_draws_an_eightfold_learning_rate_range_at_quickstart_scale():
    protocol = load_protocol("robust")
    assert protocol.sweep.sampling == "random"
    assert protocol.sweep.rules == ("sgdm", "adam", "feedback_alignment", "information_alignment")
    lr = protocol.sweep.prior("learning_rate_scale")
    assert lr.distribution == "log_uniform" and lr.high / lr.low >= 8
    assert protocol.sweep.prior("width") and protocol.sweep.prior("batch_size")
    specs = expand_sweep(protocol, 64, 10)
    assert 96 <= len(specs) <= 160 and len(set(Counter(s.rule for s in specs).values())) == 1
    for line in (ROOT / "protocols" / "robust.toml").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"parameter without a comment: {line!r}"


@pytest.mark.parametrize("name, n_train", [("robust", 1597), ("paper", 1697)])
def test_every_information_alignment_run_trains_one_feedback_time_constant(name, n_train):
    """Not just most runs (what `run` warns about): the slowest IA network of the protocol too."""
    from virtual_lab.lab.rules import feedback_time_constant
    from virtual_lab.lab.spec import n_training_steps

    specs = [s for s in expand_sweep(load_protocol(name), 64, 10) if s.rule == "information_alignment"]
    assert specs
    for spec in specs:
        steps = n_training_steps(n_train, spec.batch_size, spec.n_epochs)  # digits without its probe images
        assert steps >= feedback_time_constant(spec.rule, spec.learning_rate, ia_gamma=spec.ia_gamma), spec


def test_unknowns_protocol_draws_rate_width_depth_and_task_and_trains_ia_one_time_constant():
    from virtual_lab.lab.rules import feedback_time_constant

    protocol = load_protocol("unknowns")
    lr = protocol.sweep.prior("learning_rate_scale")
    assert lr.distribution == "log_uniform" and lr.high / lr.low >= 8
    for axis in ("width", "depth", "task"):
        assert protocol.sweep.prior(axis), axis
    specs = expand_sweep(protocol, 64, 10)
    assert len(specs) == 192 and len(set(Counter(s.rule for s in specs).values())) == 1
    assert {s.task for s in specs} == {"digits", "gaussian_clusters", "teacher"}
    assert {len(s.layer_sizes) - 2 for s in specs} == {1, 2, 3}
    # information alignment trains at least one feedback time constant even at the lowest rate drawn
    slowest = min((s for s in specs if s.rule == "information_alignment"), key=lambda s: s.learning_rate)
    steps_per_epoch = 1597 // slowest.batch_size  # digits, the smallest training set of the three tasks
    assert slowest.n_epochs * steps_per_epoch >= feedback_time_constant(slowest.rule, slowest.learning_rate,
                                                                       ia_gamma=slowest.ia_gamma)
    for line in (ROOT / "protocols" / "unknowns.toml").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"parameter without a comment: {line!r}"


def test_the_report_gives_the_range_of_many_drawn_rates():
    from virtual_lab.analysis.report import _learning_rate_text

    drawn = {"per_rule": {"sgdm": [0.007 + 0.001 * i for i in range(24)], "adam": [0.001, 0.002]}, "scales": None}
    assert _learning_rate_text(drawn) == "learning rates per rule: SGDM 0.007-0.03 (24 rates); Adam 0.001/0.002"
