"""Power analysis: exact reuse of the rig, monotone curves, chance under a destroying rig, reproducibility,
skipped grid values, and the small statistics (known values from rig_facts.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from virtual_lab.analysis.observables import build_feature_table
from virtual_lab.analysis.power import (
    animals_to_certify, binomial_chance, compute_grid_features, power_analysis, wilson_interval,
)
from virtual_lab.types import GroundTruth, depth_positions
from virtual_lab.rig import observe
from virtual_lab.seeding import derive_seed

OBS = ["actraw_mean", "actabs_mean", "weightraw_mean"]


def synthetic_ground_truth(rule: str, index: int, effect: float = 0.5, layer_sizes=(16, 24, 24, 4),
                           n_checkpoints: int = 6, n_stimuli: int = 12) -> GroundTruth:
    """Rule-dependent sessions without training: each rule shifts every unit's activity over learning
    (``a`` up, ``b`` down, ``c`` not at all) on top of per-unit offsets and per-stimulus noise, so the rule
    shows in the activity trajectory, more clearly with more units; weights carry no rule information."""
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
                "diverged": False, "diverged_step": -1}
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


def _small(population, **kw):
    options = dict(units=[2, 8, 24], noise=[0.0, 3.0], sessions=[2, 6], rig="paper-absolute", layers=["fc1", "fc2"],
                   observables=OBS, decoder="logistic", n_splits=5, rig_seeds=1, seed=3, n_jobs=1, n_bootstrap=500)
    options.update(kw)
    return power_analysis(population, **options)


# -- the reduction equals the rig ------------------------------------------------------------------------------------
@pytest.mark.parametrize("relative, synapse_fraction", [(True, None), (False, 0.3)])
def test_grid_features_equal_observe_then_observables(relative, synapse_fraction):
    gt = synthetic_ground_truth("a", 0)
    gt = GroundTruth(**{**gt.__dict__, "activations": {k: np.maximum(v, 0) for k, v in gt.activations.items()}})
    observables = ["actraw_mean", "actsq_median", "actabs_thirdquartile", "weightabs_var", "gradavgraw_id",
                   "weightraw_skew"]
    units = [(3, 3, 2), (10, 10, 4), None]
    noise = [0.0, 0.7]
    checkpoints = np.array([0, 2, 3, 5])
    features = compute_grid_features(gt, unit_counts=units, noise_sds=noise, checkpoint_indices=checkpoints,
                                     rig_seeds=[11, 12], noise_relative=relative, synapse_fraction=synapse_fraction,
                                     observables=observables)
    assert features.shape == (2, 3, 2, 3, 4, len(observables))
    for r, rig_seed in enumerate([11, 12]):
        for u_i, counts in enumerate(units):
            for n_i, sd in enumerate(noise):
                kw = {} if counts is None else {"n_units": counts[0]}
                if counts is not None and counts[2] != counts[0]:
                    continue  # observe() keeps the same count in every layer; checked through the first two
                rec = observe(gt, noise_sd=sd, noise_relative=relative, synapse_fraction=synapse_fraction,
                              n_checkpoints=6, seed=derive_seed(rig_seed, gt.run_id), **kw)
                rec = rec.with_(checkpoint_indices=checkpoints)
                table = build_feature_table([rec], observables)
                expected = table.X[:, :-3].reshape(3, 4, len(observables))
                np.testing.assert_allclose(features[r, u_i, n_i], expected, rtol=2e-5, atol=1e-6)
    # the layer with 4 units at counts (3, 3, 2): check layer-wise against keep_units on that layer only
    from virtual_lab.rig import add_noise, keep_units
    from virtual_lab.rig.recording import Recording
    from virtual_lab.rig.transforms import keep_synapses
    from virtual_lab.analysis.power import observe_seeds

    unit_seed, syn_seed, noise_seed, _ = observe_seeds(derive_seed(11, gt.run_id))
    rec = Recording.from_ground_truth(gt)
    for layer, n in zip(gt.layer_names, units[0]):
        rec = keep_units(rec, n_units=n, seed=unit_seed, layers=[layer])
    if synapse_fraction is not None:
        rec = keep_synapses(rec, synapse_fraction, seed=syn_seed)
    rec = add_noise(rec, 0.7, relative=relative, seed=noise_seed).with_(checkpoint_indices=checkpoints)
    expected = build_feature_table([rec], observables).X[:, :-3].reshape(3, 4, len(observables))
    np.testing.assert_allclose(features[0, 0, 1], expected, rtol=2e-5, atol=1e-6)


def test_paper_like_rig_presets_are_reproduced_exactly():
    from virtual_lab.analysis.power import resolve_rig
    from virtual_lab.rig.presets import apply_preset

    settings = resolve_rig("paper-gaussian")
    assert settings["seeding"] == "preset" and settings["synapse_fraction"] == 0.25
    gt = synthetic_ground_truth("b", 1)
    observables = ["actraw_median", "weightabs_mean", "gradavgsq_id"]
    features = compute_grid_features(gt, unit_counts=[(5, 5, 3)], noise_sds=[0.4], checkpoint_indices=[0, 2, 5],
                                     rig_seeds=[7], synapse_fraction=0.25, noise_relative=True,
                                     observables=observables, noise_measures=settings["noise_measures"],
                                     seeding="preset")
    rec = apply_preset(gt, "paper-gaussian", seed=derive_seed(7, gt.run_id), n_units=3, noise_sd=0.4,
                       n_checkpoints=3)
    expected = build_feature_table([rec], observables).X[:, :-3].reshape(3, 3, len(observables))
    # layers fc1, fc2 keep 5 units in the grid and 3 in apply_preset: compare the readout (3 of 4 units) only
    np.testing.assert_allclose(features[0, 0, 0, 2], expected[2], rtol=2e-5, atol=1e-6)
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
    # CASCADE noise level 1 is an excellent recording; at 1e5 %/sqrt(s) the mean dF/F of a presentation has an
    # SD near 10, several times the responses. Only the mean response is decoded: shot noise grows with
    # sqrt(dF/F + 1), so statistics of |dF/F| would still carry the rule through the noise's own size.
    result = power_analysis(population, units=[2, 24], noise=[1.0, 1e5], sessions=[6], rig="2p-gcamp6s",
                            noise_param="calcium.noise_level", layers=["fc1", "fc2"], observables=["actraw_mean"],
                            decoder="logistic", n_splits=5, rig_seeds=1, seed=3, n_jobs=1, n_bootstrap=500)
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
    assert result.recommendation["animals"] == animals_to_certify(result.recommendation["accuracy"], 0.9)
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
                                         "Did you mean 'paper'"):
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
    assert page.count("<figcaption>") == 4 and "white line" not in page  # every figure says what it draws
    for name in ("power_heatmap.png", "power_units.png", "power_sessions.png", "power_confusion.png"):
        assert (one / name).stat().st_size > 1000
    assert main(["power", str(root), "--rig", "nope", "--units", "2", "--noise", "0", "--sessions", "2"]) == 2
    assert "unknown rig preset 'nope'" in capsys.readouterr().err


# -- small statistics, known values (rig_facts.md) -------------------------------------------------------------------
def test_wilson_binomial_and_animals_known_values():
    assert [round(x, 3) for x in wilson_interval(0.9, 40)] == [0.769, 0.96]
    assert [round(x, 3) for x in wilson_interval(0.9, 100)] == [0.826, 0.945]
    for n, threshold in ((20, 0.45), (40, 0.40), (80, 0.3375), (160, 0.3125)):
        assert binomial_chance(n, 4)["threshold"] == pytest.approx(threshold)
    assert animals_to_certify(0.9, 0.9) is None
    m = animals_to_certify(0.95, 0.9)
    assert wilson_interval(0.95, m)[0] >= 0.9 > wilson_interval(0.95, m - 1)[0]
