"""Power analysis: exact reuse of the rig, monotone curves, chance under a destroying rig, reproducibility,
skipped grid values, and the small statistics (known values from rig_facts.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from virtual_lab.analysis.observables import compute_observables
from virtual_lab.analysis.power import (
    animals_to_certify, binomial_chance, compute_grid_features, power_analysis, wilson_interval,
)
from virtual_lab.types import GroundTruth, depth_positions
from virtual_lab.rig import observe
from virtual_lab.seeding import derive_seed

OBS = ["actraw_mean", "actabs_mean", "weightraw_mean"]


def synthetic_ground_truth(rule: str, index: int, effect: float = 0.5, layer_sizes=(16, 24, 24, 4),
                           n_checkpoints: int = 6, n_stimuli: int = 12, extra: dict | None = None) -> GroundTruth:
    """Rule-dependent sessions without training: each rule shifts every unit's activity over learning
    (``a`` up, ``b`` down, ``c`` not at all) on top of per-unit offsets and per-stimulus noise, so the rule
    shows in the activity trajectory, more clearly with more units; weights carry no rule information.
    ``extra``: more run metadata (e.g. a ``learning_rate_scale`` to hold out)."""
    rng = np.random.default_rng((index, ord(rule)))
    sign = {"a": 1.0, "b": -1.0, "c": 0.0}[rule]
    names = tuple(f"fc{i + 1}" for i in range(len(layer_sizes) - 1))
    t = np.linspace(0, 1, n_checkpoints)
    acts, weights, change = {}, {}, {}
    for name, n_in, n_out in zip(names, layer_sizes[:-1], layer_sizes[1:]):
        offset = rng.normal(0, 1, n_out)
        acts[name] = (offset[None, None, :] + sign * effect * t[:, None, None]
                      + rng.normal(0, 1, (n_checkpoints, n_stimuli, n_out))).astype(np.float32)
        weights[name] = rng.normal(0, 1, (n_checkpoints, n_out, n_in)).astype(np.float32)
        change[name] = rng.normal(0, 1, (n_checkpoints, n_stimuli)).astype(np.float32)
    metadata = {"run_id": f"syn{rule}{index}", "rule": rule, "family": "synthetic", "architecture": "mlp",
                "layer_sizes": ",".join(map(str, layer_sizes)), "task": "synthetic", "seed": index,
                "diverged": False, "diverged_step": -1, **(extra or {})}
    return GroundTruth(layer_names=names, depth_positions=depth_positions(len(names)),
                       checkpoint_steps=np.arange(n_checkpoints, dtype=np.int64) * 10, activations=acts,
                       weights=weights, activity_change=change,
                       train_loss=np.linspace(2, 0.1, n_checkpoints).astype(np.float32),
                       test_accuracy=np.linspace(0.1, 0.9, n_checkpoints).astype(np.float32),
                       probe_stimuli=rng.random((n_stimuli, 4, 4), dtype=np.float32),
                       probe_labels=(np.arange(n_stimuli) % 4).astype(np.int64), metadata=metadata)


@pytest.fixture(scope="module")
def population():
    return [synthetic_ground_truth(rule, i) for rule in "ab" for i in range(12)]


#: Networks of a separate cohort that confirm the protocol chosen on ``population`` (the grid is then
#: cross-validated on exactly the 24 networks of ``population``).
CONFIRMERS = [synthetic_ground_truth(rule, 100 + i) for rule in "ab" for i in range(8)]


def _small(population, **kw):
    options = dict(units=[2, 8, 24], noise=[0.0, 3.0], sessions=[2, 6], rig="paper-absolute", layers=["fc1", "fc2"],
                   observables=OBS, decoder="logistic", n_splits=5, rig_seeds=1, seed=3, n_jobs=1, n_bootstrap=500)
    options.update(kw)
    if {g.rule for g in population} == {"a", "b"} and not {"confirm_fraction", "confirm_networks"} & set(options):
        population = list(population) + CONFIRMERS
        options["confirm_networks"] = [g.run_id for g in CONFIRMERS]
    return power_analysis(population, **options)


# -- the reduction equals the rig ------------------------------------------------------------------------------------
def _per_layer(recording, observables):
    """compute_observables of a recording as a (layers, checkpoints, observables) float32 array."""
    values = compute_observables(recording, observables)
    return np.stack([values[layer].astype(np.float32) for layer in recording.layer_names])


@pytest.mark.parametrize("relative, synapse_fraction", [(True, None), (False, 0.3)])
def test_grid_features_equal_observe_and_apply_preset_exactly_at_every_grid_point(relative, synapse_fraction):
    from virtual_lab.rig.presets import RigPreset, apply_preset
    from virtual_lab.rig.transforms import checkpoint_positions

    gt = synthetic_ground_truth("a", 0)  # layers of 24, 24 and 4 units, 6 checkpoints
    gt = GroundTruth(**{**gt.__dict__, "activations": {k: np.maximum(v, 0) for k, v in gt.activations.items()}})
    observables = ["actraw_mean", "actsq_median", "actabs_thirdquartile", "weightabs_var", "gradavgraw_id",
                   "weightraw_skew"]
    units = {3: (3, 3, 3), 10: (10, 10, 4), 24: None}  # units value -> units per layer (capped), None: all
    noise, sessions = [0.0, 0.7], [2, 4, 6]
    positions = {k: checkpoint_positions(6, k, "even") for k in sessions}
    checkpoints = np.unique(np.concatenate(list(positions.values())))
    features = compute_grid_features(gt, unit_counts=list(units.values()), noise_sds=noise,
                                     checkpoint_indices=checkpoints, rig_seeds=[11, 12], noise_relative=relative,
                                     synapse_fraction=synapse_fraction, observables=observables)
    assert features.shape == (2, 3, 2, 3, len(checkpoints), len(observables)) and np.isfinite(features).all()
    n_observe = 0
    for r, rig_seed in enumerate([11, 12]):
        seed = derive_seed(rig_seed, gt.run_id)
        for u_i, n in enumerate(units):
            for n_i, sd in enumerate(noise):
                for k in sessions:
                    columns = np.searchsorted(checkpoints, positions[k])
                    got = features[r, u_i, n_i][:, columns]
                    stages = {"checkpoints": {"n_checkpoints": k}, "units": {"n_units": n, "cap": True},
                              "noise": {"sd": sd, "relative": relative}}
                    if synapse_fraction is not None:
                        stages["synapses"] = {"fraction": synapse_fraction}
                    preset = apply_preset(gt, RigPreset("paper-steps", stages=stages), seed=seed)
                    np.testing.assert_array_equal(got, _per_layer(preset, observables))
                    if n > 4 and units[n] is not None:
                        continue  # observe() keeps the same count in every layer: the 4-unit layer has fewer
                    kw = {} if units[n] is None else {"n_units": n}
                    rec = observe(gt, noise_sd=sd, noise_relative=relative, synapse_fraction=synapse_fraction,
                                  n_checkpoints=k, seed=seed, **kw)
                    np.testing.assert_array_equal(got, _per_layer(rec, observables))
                    n_observe += 1
    assert n_observe == 2 * 2 * 2 * 3
    assert not np.array_equal(features[0, 0], features[1, 0])  # the rig seed matters


def test_observe_and_apply_preset_split_a_rig_seed_into_the_same_stage_seeds():
    from virtual_lab.rig import RIG_STAGES, rig_stage_seeds
    from virtual_lab.rig.presets import STAGES, apply_preset

    # observe() keeps the split it has always had (its recordings, hence the quickstart, are unchanged)
    old = [int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(5).spawn(4)]
    assert list(rig_stage_seeds(5, ("units", "synapses", "noise", "checkpoints")).values()) == old
    assert set(STAGES) <= set(RIG_STAGES) and len(set(rig_stage_seeds(5).values())) == len(RIG_STAGES)
    assert rig_stage_seeds(5, ["noise"])["noise"] == rig_stage_seeds(5)["noise"]
    with pytest.raises(ValueError, match="unknown rig stage 'unit'"):
        rig_stage_seeds(5, ["unit"])
    gt = synthetic_ground_truth("b", 1)
    seeds = rig_stage_seeds(9)
    rec = apply_preset(gt, "paper-gaussian", seed=9, n_checkpoints=4)  # 25% of units and synapses, noise 0.5
    steps = {step["step"]: step["seed"] for step in rec.provenance[1:]}
    assert steps == {"keep_checkpoints": seeds["checkpoints"], "keep_units": seeds["units"],
                     "keep_synapses": seeds["synapses"], "add_noise": seeds["noise"]}
    by_observe = observe(gt, unit_fraction=0.25, synapse_fraction=0.25, noise_sd=0.5, noise_relative=True,
                         n_checkpoints=4, seed=9)
    assert {s["step"]: s["seed"] for s in by_observe.provenance} == steps
    every = ["actraw_mean", "actabs_var", "weightraw_mean", "weightsq_median", "gradavgraw_id"]
    np.testing.assert_array_equal(_per_layer(rec, every), _per_layer(by_observe, every))


def test_paper_like_rig_presets_are_reproduced_exactly():
    from virtual_lab.analysis.power import resolve_rig
    from virtual_lab.rig.presets import apply_preset

    settings = resolve_rig("paper-gaussian")
    assert settings["origin"] == "preset" and settings["synapse_fraction"] == 0.25
    gt = synthetic_ground_truth("b", 1)
    observables = ["actraw_median", "weightabs_mean", "gradavgsq_id"]
    features = compute_grid_features(gt, unit_counts=[(3, 3, 3)], noise_sds=[0.4], checkpoint_indices=[0, 2, 5],
                                     rig_seeds=[7], synapse_fraction=0.25, noise_relative=True,
                                     observables=observables, noise_measures=settings["noise_measures"])
    rec = apply_preset(gt, "paper-gaussian", seed=derive_seed(7, gt.run_id), n_units=3, noise_sd=0.4,
                       n_checkpoints=3)
    np.testing.assert_array_equal(features[0, 0, 0], _per_layer(rec, observables))
    assert resolve_rig("2p-gcamp6s")["general"] and not settings.get("general")


# -- modality presets: the general path ------------------------------------------------------------------------------
def _general_plan(**kw):
    from virtual_lab.analysis.observables import _as_observables

    plan = {"preset": "2p-gcamp6s", "layers": ("fc1", "fc2"), "units": (3, 24), "noise": (0.0, 0.5),
            "sessions": (2, 4), "rig_seeds": (7, 8), "cap_units": True, "noise_param": "noise.sd",
            "has_checkpoints": True, "observables": _as_observables(["actraw_median", "actabs_mean"])}
    plan.update(kw)
    return plan


def test_modality_presets_are_observed_by_apply_preset_itself_at_every_grid_point():
    from virtual_lab.analysis.observables import compute_observables
    from virtual_lab.analysis.power import compute_preset_grid_features
    from virtual_lab.rig.presets import apply_preset

    gt = synthetic_ground_truth("a", 2)
    plan = _general_plan()
    blocks = compute_preset_grid_features(gt, plan)
    assert [b.shape for b in blocks] == [(2, 2, 2, 2, 2, 2), (2, 2, 2, 2, 4, 2)]
    # rig seed 8, 24 units (fc1 has 24: all; fc2 has 24), relative noise 0.5, 4 sessions
    rec = apply_preset(gt, "2p-gcamp6s", seed=derive_seed(8, gt.run_id), n_units=24, noise_sd=0.5,
                       noise_relative=True, n_checkpoints=4, units__cap=True, units__layers=("fc1", "fc2"))
    expected = compute_observables(rec, plan["observables"])
    for l_i, layer in enumerate(("fc1", "fc2")):
        np.testing.assert_array_equal(blocks[1][1, 1, 1, l_i], expected[layer].astype(np.float32))
    # 3 units of a calcium rig: the same units at every noise level, different from another rig seed's
    assert not np.array_equal(blocks[0][0, 0, 0], blocks[0][1, 0, 0])
    # the noise axis can set any numeric preset parameter instead
    louder = compute_preset_grid_features(gt, _general_plan(noise_param="calcium.noise_level", noise=(1.0, 50.0)))
    assert np.isfinite(louder[1]).all() and not np.allclose(louder[1][:, :, 0], louder[1][:, :, 1])


def test_a_layer_left_without_units_gives_undefined_features_not_an_error():
    from virtual_lab.analysis.power import compute_preset_grid_features

    gt = synthetic_ground_truth("b", 3)
    # chronic tracking that never finds a unit again: every activity statistic of the later sessions is undefined
    from virtual_lab.rig.presets import load_preset

    lost = load_preset("neuropixels-chronic").with_params({"tracking.found_probability": 0.0})
    blocks = compute_preset_grid_features(gt, _general_plan(preset=lost, noise=(0.0,), units=(5,),
                                                            rig_seeds=(1,), sessions=(3,)))
    assert np.isnan(blocks[0]).all()


def test_power_analysis_through_a_calcium_rig(population):
    # CASCADE noise level 1 is an excellent recording; at 1e3 %/sqrt(s) the mean dF/F of a presentation (30
    # frames) has an SD near 10 (frame SD nu * sqrt(30) / 95.4 = 57), several times the responses. Only the mean response is decoded: shot noise grows with
    # sqrt(dF/F + 1), so statistics of |dF/F| would still carry the rule through the noise's own size.
    result = power_analysis(population + CONFIRMERS, units=[2, 24], noise=[1.0, 1e3], sessions=[6], rig="2p-gcamp6s",
                            noise_param="calcium.noise_level", layers=["fc1", "fc2"], observables=["actraw_mean"],
                            decoder="logistic", n_splits=5, rig_seeds=1, seed=3, n_jobs=1, n_bootstrap=500,
                            confirm_networks=[g.run_id for g in CONFIRMERS])
    assert result.provenance["rig"]["general"] and result.provenance["noise_axis"] == "calcium.noise_level"
    assert result.provenance["observables"] == ["actraw_mean"]
    good, drowned = result.accuracy[1, 0, 0], result.accuracy[1, 1, 0]
    assert good > 0.9 and drowned < 0.75
    assert "using 2p-gcamp6s at calcium.noise_level = 1, record >= 24 neurons" in result.sentence


def test_general_path_inputs_are_checked_before_any_work(population):
    with pytest.raises(ValueError, match="observes one timepoint .* use sessions=\\[1\\]"):
        power_analysis(population, units=[4], noise=[0.0], sessions=[3], rig="em-snapshot", n_jobs=1)
    with pytest.raises(ValueError, match="needs a rig preset .* not the built-in rig 'paper'"):
        power_analysis(population, units=[4], noise=[1.0], sessions=[3], noise_param="calcium.noise_level")
    with pytest.raises(ValueError, match="unknown key calcium.noise_levl; did you mean 'calcium.noise_level'"):
        power_analysis(population, units=[4], noise=[1.0], sessions=[3], rig="2p-gcamp6s",
                       noise_param="calcium.noise_levl")
    with pytest.raises(ValueError, match="other than the units and checkpoints the grid sets"):
        power_analysis(population, units=[4], noise=[1.0], sessions=[3], rig="2p-gcamp6s",
                       noise_param="units.fraction")
    with pytest.raises(ValueError, match="measures weight, and none of the observables"):
        power_analysis(population, units=[4], noise=[0.0], sessions=[1], rig="em-snapshot", n_jobs=1,
                       observables=["actraw_mean"])


# -- the done-when checks --------------------------------------------------------------------------------------------
def test_curves_are_monotone_within_intervals_and_informative(population):
    result = _small(population)
    assert not np.isnan(result.accuracy).any()
    assert result.monotonicity_violations() == []
    # the grid spans poor to good: the richest protocol beats the poorest beyond its interval
    assert result.ci_low[-1, 0, -1] > result.accuracy[0, -1, 0]
    assert result.accuracy[-1, 0, -1] >= 0.9
    assert len(result.rows) == 3 * 2 * 2 * 5
    assert result.recommendation["reached"]
    sentence = result.sentence
    assert sentence.startswith("To tell a from b with >= 90% accuracy using paper-absolute")
    assert f"record >= {result.recommendation['units']} neurons" in sentence
    # the accuracy reported is the confirmed one: a decoder trained on the 24 selection networks, tested on the
    # 12 confirmation networks, which took no part in the choice
    rec = result.recommendation
    assert result.confirmation_networks == tuple(g.run_id for g in CONFIRMERS)
    assert rec["confirmed"]["n"] == 16 and rec["accuracy"] == result.confirmation["accuracy"]
    assert rec["ci"] == result.confirmation["wilson"] and rec["selected"]["n"] == 24
    assert rec["ci"][0] > 0.5 and "confirmed on 16 networks that took no part in choosing it" in sentence
    assert "certified" not in sentence and "animals" not in sentence
    table = result.animals["table"]
    assert [row["animals"] for row in table] == [1, 2, 3, 5, 10]
    assert table[-1]["p_correct"] >= table[0]["p_correct"] and all(r["ci"][0] <= r["ci"][1] for r in table)
    for entry in result.thresholds:
        if entry["units_conservative"] is not None:
            assert entry["units_point"] is not None and entry["units_point"] <= entry["units_conservative"]


def test_a_rig_that_destroys_all_information_sits_at_chance(population):
    result = _small(population, units=[2, 24], noise=[1e4], sessions=[2, 6])
    chance = result.chance
    assert chance["chance"] == 0.5
    assert np.all(result.accuracy >= chance["low"]) and np.all(result.accuracy <= chance["high"])
    assert np.all(result.ci_low <= 0.5 + 1e-9) or np.all(result.accuracy < chance["threshold"])
    assert not result.recommendation["reached"]
    assert result.sentence.startswith("No tested protocol reaches 90% accuracy to tell a from b")
    assert all(entry["units_point"] is None for entry in result.thresholds)


def test_same_seed_same_table_and_unsupported_values_are_skipped(population):
    first = _small(population, units=[2, 30], noise=[1.0], sessions=[3, 9])
    again = _small(population, units=[2, 30], noise=[1.0], sessions=[3, 9])
    assert first.rows == again.rows
    np.testing.assert_array_equal(first.bootstrap, again.bootstrap)
    skipped = {(e["parameter"], e["value"]): e["reason"] for e in first.skipped}
    assert "more units than recorded in layer 'fc1' (24 units)" in skipped[("units", 30)]
    assert skipped[("sessions", 9)] == "more sessions than the 6 checkpoints recorded"
    assert np.isnan(first.accuracy[1]).all() and np.isnan(first.accuracy[:, :, 1]).all()
    assert not np.isnan(first.accuracy[0, 0, 0])
    other = _small(population, units=[2, 30], noise=[1.0], sessions=[3, 9], seed=4)
    assert other.rows != first.rows
    capped = _small(population, units=[2, 24, 30], noise=[1.0], sessions=[3], cap_units=True)
    assert [e["value"] for e in capped.skipped] == [30]
    assert "same units as units=24" in capped.skipped[0]["reason"]


def test_pairwise_mode_and_rule_errors():
    population = [synthetic_ground_truth(rule, i) for rule in "abc" for i in range(4)]
    result = _small(population, rules=["a", "c"], units=[8], noise=[0.0], sessions=[6], n_splits=2)
    assert result.classes == ("a", "c") and result.n_networks == 8
    with pytest.raises(ValueError, match=r"rules: 'd' is not a rule of these recordings; recorded rules: a, b, c"):
        _small(population, rules=["a", "d"])
    with pytest.raises(ValueError, match="unknown rig preset 'papr'; available for power analysis: paper.*"
                                         "; did you mean 'paper'"):
        _small(population, rig="papr")
    with pytest.raises(ValueError, match="no grid point the recordings can support"):
        _small(population, units=[100])
    with pytest.raises(ValueError, match="units must hold integers >= 1, got 0"):
        _small(population, units=[0, 2])


def test_cli_writes_every_output_and_repeats_exactly(tmp_path, capsys):
    from virtual_lab.cli import main
    from virtual_lab.sessions import session_path, write_session

    root = tmp_path / "sessions"
    for rule in "ab":
        for i in range(3):
            gt = synthetic_ground_truth(rule, i, layer_sizes=(16, 8, 4), n_checkpoints=4, n_stimuli=6)
            write_session(gt, session_path(root, gt.run_id, "groundtruth"), protocol_name="synthetic")
    from virtual_lab.analysis.power import read_session_arrays
    from virtual_lab.sessions import read_session

    path = session_path(root, gt.run_id, "groundtruth")
    fast, full = read_session_arrays(path), read_session(path)
    assert fast.metadata == dict(full.metadata) and fast.layer_names == full.layer_names
    for layer in full.layer_names:
        for what in ("activations", "weights", "activity_change"):
            np.testing.assert_array_equal(getattr(fast, what)[layer], getattr(full, what)[layer])
    args = ["power", str(root), "--rig", "paper-absolute", "--units", "2,4,50", "--noise", "0,5",
            "--sessions", "2,4,8", "--splits", "2", "--rig-seeds", "1", "--decoder", "logistic", "--jobs", "1", "-q"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    printed = capsys.readouterr().out
    assert "skipped units=50: more units than recorded" in printed
    assert "skipped sessions=8: more sessions than the 4 checkpoints recorded" in printed
    assert main(args + ["--out", str(tmp_path / "two")]) == 0
    one, two = tmp_path / "one", tmp_path / "two"
    assert (one / "power_table.csv").read_bytes() == (two / "power_table.csv").read_bytes()
    lines = (one / "power_table.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 2 * 2  # header + units x noise x sessions x splits (1 repeat)
    summary = json.loads((one / "power_summary.json").read_text())
    assert summary["grid"]["units"] == [2, 4, 50] and len(summary["skipped"]) == 2
    assert summary["provenance"]["seed"] == 0
    page = (one / "power_report.html").read_text()
    assert summary["recommendation"]["sentence"].split(";")[0].replace(">", "&gt;") in page
    assert page.count("<figcaption>") == 5 and "white line" not in page  # every figure says what it draws
    for name in ("power_heatmap.png", "power_units.png", "power_sessions.png", "power_confusion.png",
                 "power_animals.png"):
        assert (one / name).stat().st_size > 1000
    assert main(["power", str(root), "--rig", "nope", "--units", "2", "--noise", "0", "--sessions", "2"]) == 2
    assert "unknown rig preset 'nope'" in capsys.readouterr().err


# -- small statistics, known values (rig_facts.md) -------------------------------------------------------------------
def test_wilson_binomial_and_animals_known_values():
    # virtual_lab.stats' interval (re-exported here) takes counts: 0.9 of 40 networks is 36 successes
    assert [round(x, 3) for x in wilson_interval(0.9 * 40, 40)] == [0.769, 0.96]
    assert [round(x, 3) for x in wilson_interval(0.9 * 100, 100)] == [0.826, 0.945]
    for n, threshold in ((20, 0.45), (40, 0.40), (80, 0.3375), (160, 0.3125)):
        assert binomial_chance(n, 4)["threshold"] == pytest.approx(threshold)
    assert animals_to_certify(0.9, 0.9) is None
    m = animals_to_certify(0.95, 0.9)
    assert wilson_interval(0.95 * m, m)[0] >= 0.9 > wilson_interval(0.95 * (m - 1), m - 1)[0]
