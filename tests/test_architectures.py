"""Sweeps that cross architectures (width x depth), tasks and hyperparameters."""

import dataclasses
import json

import pytest

from virtual_lab import __version__
from virtual_lab.lab.rules import get_rule
from virtual_lab.sweeps.expand import expand_sweep, group_cohorts
from virtual_lab.lab.spec import RunSpec
from virtual_lab.lab.train import train_population
from virtual_lab.protocol import ProtocolError, parse_protocol
from virtual_lab.seeding import stable_hash


def protocol(**sweep):
    sweep.setdefault("rules", ["sgdm", "kp"])
    sweep.setdefault("n_seeds", 2)
    return parse_protocol({"name": "t", "sweep": sweep, "network": {"hidden_sizes": [32, 16]}})


def test_sweep_crosses_widths_depths_batch_sizes_weight_decays_and_tasks():
    p = protocol(widths=[8, 16], depths=[1, 3], batch_sizes=[16, 32], weight_decays=[0.0, 1e-3],
                 tasks=["digits", "teacher"], learning_rate_scales=[1.0, 2.0])
    specs = expand_sweep(p, 64, 10)
    assert len(specs) == 2 * 2 * 2 * 2 * 2 * 2 * 2 * 2
    assert {s.layer_sizes for s in specs} == {(64, 8, 10), (64, 8, 8, 8, 10), (64, 16, 10), (64, 16, 16, 16, 10)}
    assert {s.batch_size for s in specs} == {16, 32} and {s.weight_decay for s in specs} == {0.0, 1e-3}
    assert {s.task for s in specs} == {"digits", "teacher"}
    assert len({s.seed for s in specs}) == len(specs)  # every run its own seed, none paired
    assert len({s.run_id for s in specs}) == len(specs)
    assert len(group_cohorts(specs)) == 2 * 4 * 2  # task x hidden sizes x batch size


def test_uncrossed_sweep_uses_the_network_and_rule_defaults():
    specs = expand_sweep(protocol(), 64, 10)
    assert {s.layer_sizes for s in specs} == {(64, 32, 16, 10)}
    kp = [s for s in specs if s.rule == "kolen_pollack"]
    assert kp and all(s.weight_decay == get_rule("kolen_pollack").default_weight_decay for s in kp)
    assert all(s.weight_decay == 0.0 for s in specs if s.rule == "sgdm")
    only_widths = expand_sweep(protocol(widths=[8]), 64, 10)
    assert {s.layer_sizes for s in only_widths} == {(64, 8, 8, 10)}  # depth of [network].hidden_sizes


def test_run_ids_of_specs_without_new_fields_are_unchanged():
    # the id formula of the first release: every field but the protocol name, plus the code version
    spec = RunSpec(rule="sgdm", learning_rate=0.02, batch_size=64, n_epochs=20, seed=7)
    fields = {k: v for k, v in dataclasses.asdict(spec).items()
              if k not in ("protocol", "weight_decay", "perturbation_sd", "architecture", "channels", "paradigm",
                           "temperature", "eval_subset", *RunSpec.DESCRIPTIVE_FIELDS)}
    fields["code_version"] = __version__
    assert spec.run_id == stable_hash(json.dumps(fields, sort_keys=True))
    assert dataclasses.replace(spec, weight_decay=1e-4).run_id != spec.run_id
    assert dataclasses.replace(spec, architecture="cnn", layer_sizes=(64, 10)).run_id \
        != dataclasses.replace(spec, layer_sizes=(64, 10)).run_id
    assert dataclasses.replace(spec, perturbation_sd=0.1).run_id != spec.run_id


@pytest.mark.parametrize("data, message", [
    ({"sweep": {"widths": [0]}}, "sweep.widths[0]: 0 is out of range (allowed: >= 1)"),
    ({"sweep": {"tasks": ["digit"]}}, "sweep.tasks[0]: 'digit' is not allowed; did you mean 'digits'?"),
    ({"sweep": {"weight_decays": [-1e-3]}}, "sweep.weight_decays[0]: -0.001 is out of range"),
    ({"rules": {"np": {"perturbation_sd": 0}}}, "rules.np.perturbation_sd: 0.0 is out of range (allowed: > 0"),
    ({"sweep": {"rules": ["hebian"]}}, "sweep.rules[0]: 'hebian' is not allowed; did you mean 'hebbian'?"),
])
def test_sweep_protocol_errors_are_precise(data, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocol(data, "p.toml")
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("hidden", [(12,), (12, 10, 8)])
def test_population_trains_any_depth(hidden, digits):
    specs = [RunSpec(rule=r, learning_rate=get_rule(r).default_learning_rate, batch_size=64, n_epochs=1, seed=i,
                     layer_sizes=(64, *hidden, 10), n_probe=50, n_checkpoints=3)
             for i, r in enumerate(["sgdm", "direct_feedback_alignment", "hebbian", "node_perturbation"])]
    for gt in train_population(specs, digits):
        assert gt.layer_names == tuple(f"fc{i + 1}" for i in range(len(hidden) + 1))
        assert gt.weights[gt.layer_names[-1]].shape == (3, 10, hidden[-1])
        assert not gt.diverged
