"""An honest power analysis: chosen on some networks and confirmed on others, the answer for a held-out
condition, the pairs of rules, and the probability that the verdict over M animals is right."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm
from test_power import synthetic_ground_truth

from virtual_lab.analysis.power import (
    animals_table, count_vectors, power_analysis, smoothed_confusion, split_networks, verdict_accuracy,
)
from virtual_lab.types import GroundTruth

OBS = ["actraw_mean", "actabs_mean", "weightraw_mean"]


# -- selection vs confirmation ---------------------------------------------------------------------------------------
def _flat_grid_analysis(seed: int, n_per_rule: int = 24, separation: float = 2 * 0.6745):
    """The power analysis' stages 2 and 3 on a synthetic feature table in which every grid point has the same
    true accuracy: one feature, the rule's mean (+-separation/2) plus fresh standard-normal noise per network
    and grid point, whatever the units and noise. A decoder can do no better than Phi(separation / 2) = 0.75
    (the Bayes accuracy of two equal-variance Gaussians) at any point, and a trained 1-D threshold is close."""
    from virtual_lab.analysis.observables import _as_observables
    from virtual_lab.analysis.power.analysis import _analyse, _Networks, _Settings
    from virtual_lab.analysis.power.grid import _supported_grid

    units, noise = (1, 2, 3), (0.0, 1.0, 2.0)
    layout = {"layer_names": ("fc1",), "depth_positions": ("early",), "layer_sizes_all": (8,), "n_checkpoints": 1}
    grid = _supported_grid(units, noise, (1,), layout, ("fc1",), cap_units=False)
    rng = np.random.default_rng(seed)
    rules = np.repeat(["a", "b"], n_per_rule)
    sign = np.where(rules == "a", 0.5, -0.5) * separation
    n = len(rules)
    features = (sign[:, None, None, None, None, None, None]
                + rng.standard_normal((n, 1, len(units), len(noise), 1, 1, 1))).astype(np.float32)
    networks = _Networks(rules=rules, ids=np.array([f"n{seed}-{i}" for i in range(n)]), classes=("a", "b"),
                         diverged=[], metadata=tuple({} for _ in range(n)))
    settings = _Settings(target=0.99, confidence=0.95, n_splits=4, test_fraction=0.25, decoder="logistic", seed=seed,
                         rig_seeds=(1,), n_bootstrap=200, n_workers=1, progress=False, confirm_fraction=0.5,
                         confirm_networks=None, holdout=None, holdout_bins=None, pairs=False, animals=(1,),
                         rig={"name": "synthetic", "description": "", "noise_relative": True,
                              "synapse_fraction": None}, cap_units=False, n_sources=n)
    plan = {"observables": tuple(_as_observables(["actraw_mean"]))}
    return _analyse(features, networks, grid, plan, settings)


def test_the_confirmed_accuracy_is_not_biased_upwards_where_the_selected_one_is():
    true_accuracy = float(norm.cdf(0.6745))  # 0.75, the best any decoder can do at any grid point
    selected, confirmed = [], []
    for seed in range(12):
        result = _flat_grid_analysis(seed)
        rec = result.recommendation
        # the 99% target is out of reach: the best of the 9 grid points is chosen (or one reaching 99% by luck)
        assert rec["selected"]["accuracy"] >= np.nanmax(result.accuracy) - 0.01
        assert rec["confirmed"]["n"] == 24 and len(result.selection_networks) == 24
        assert not set(result.selection_networks) & set(result.confirmation_networks)
        selected.append(rec["selected"]["accuracy"])
        confirmed.append(rec["confirmed"]["accuracy"])
    selected, confirmed = np.array(selected), np.array(confirmed)
    se_confirmed = confirmed.std(ddof=1) / math.sqrt(len(confirmed))
    se_selected = selected.std(ddof=1) / math.sqrt(len(selected))
    # the selected estimate (the max over the grid of cross-validated accuracies) is biased upwards...
    assert selected.mean() - true_accuracy > max(0.08, 3 * se_selected)
    # ...the confirmed one is not: within noise of the true accuracy (a trained threshold loses a little)
    assert confirmed.mean() <= true_accuracy + 2.5 * se_confirmed
    assert confirmed.mean() >= true_accuracy - 2.5 * se_confirmed - 0.03
    assert np.mean(selected > confirmed) > 0.75


def test_split_networks_is_seeded_stratified_and_checked():
    rules = np.repeat(["a", "b", "c"], [6, 7, 3])
    levels = np.tile([0.5, 1.0, 2.0], 6)[:16]
    confirm = split_networks(rules, 0.5, seed=4, strata=levels)
    np.testing.assert_array_equal(confirm, split_networks(rules, 0.5, seed=4, strata=levels))
    assert not np.array_equal(confirm, split_networks(rules, 0.5, seed=5, strata=levels))
    assert [int(confirm[rules == r].sum()) for r in "abc"] == [3, 4, 1]  # round(n/2), leaving 2 to select
    a = rules == "a"  # 6 networks of rule a, 2 per level: one of each level confirms
    assert sorted(levels[a & confirm].tolist()) == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="rule 'b' has 2 network"):
        split_networks(["a"] * 4 + ["b"] * 2, 0.5, seed=0)
    with pytest.raises(ValueError, match="confirm_fraction must be a number strictly between 0 and 1"):
        split_networks(["a"] * 4, 1.0, seed=0)


# -- M animals -------------------------------------------------------------------------------------------------------
def test_verdict_probability_known_values():
    for m in (1, 2, 3, 5, 10):
        assert verdict_accuracy(np.eye(4), m) == 1.0  # a perfect decoder: every verdict right
    for a in (0.6, 0.8, 0.95):
        c = [[a, 1 - a], [1 - a, a]]
        assert verdict_accuracy(c, 1) == pytest.approx(a)
        assert verdict_accuracy(c, 2) == pytest.approx(a)  # one vote each way: a tie, a fair coin
        assert verdict_accuracy(c, 3) == pytest.approx(a ** 3 + 3 * a ** 2 * (1 - a))  # majority vote
        assert verdict_accuracy(c, 5) > verdict_accuracy(c, 3)
    chance = np.full((3, 3), 1 / 3)
    assert verdict_accuracy(chance, 4) == pytest.approx(1 / 3)  # no information: every verdict a guess
    # an asymmetric decoder: exact enumeration and the seeded Monte Carlo agree
    c = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
    exact = verdict_accuracy(c, 5, per_rule=True)
    assert exact.shape == (3,) and verdict_accuracy(c, 5) == pytest.approx(exact.mean())
    from virtual_lab.analysis.power import verdict

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verdict, "MAX_ENUMERATED", 1)
        sampled = verdict_accuracy(c, 5, n_draws=200_000, seed=1, per_rule=True)
    np.testing.assert_allclose(sampled, exact, atol=0.005)
    assert count_vectors(3, 3).sum(axis=1).tolist() == [3] * math.comb(5, 2)
    with pytest.raises(ValueError, match="rows that sum to 1"):
        verdict_accuracy([[0.5, 0.4], [0.5, 0.5]], 1)
    with pytest.raises(ValueError, match="n_animals must be an integer >= 1"):
        verdict_accuracy(np.eye(2), 0)


def test_the_animals_table_smooths_the_confusion_and_bootstraps_networks():
    classes = ["a", "b", "c"]
    rules = np.repeat(classes, 8)
    per_network = np.eye(3)[np.repeat(np.arange(3), 8)]
    per_network[0] = [0.5, 0.5, 0.0]  # one network of rule a half the time read as b
    counts = np.zeros((3, 3))
    np.add.at(counts, np.repeat(np.arange(3), 8), per_network)
    smoothed = smoothed_confusion(counts)
    assert np.all(smoothed > 0) and np.allclose(smoothed.sum(axis=1), 1)  # no cell is zero
    assert smoothed[1, 1] == pytest.approx((8 + 1 / 3) / 9)  # 1/k pseudo-count: a perfect row of 8 networks
    assert smoothed_confusion(counts, pseudo_count=1)[1, 1] == pytest.approx(9 / 11)  # add-one
    table = animals_table(per_network, rules, classes, n_bootstrap=300, seed=2)
    assert [row["animals"] for row in table] == [1, 2, 3, 5, 10]
    assert table[0]["p_correct"] == pytest.approx(verdict_accuracy(smoothed, 1))
    assert table[0]["p_correct"] < 1 and table[-1]["p_correct"] > table[0]["p_correct"]
    for row in table:
        low, high = row["ci"]
        assert 0 <= low < high <= 1 and set(row["per_rule"]) == set(classes)
    assert table == animals_table(per_network, rules, classes, n_bootstrap=300, seed=2)


# -- pairs of rules --------------------------------------------------------------------------------------------------
def test_the_pairwise_table_equals_a_two_rule_analysis_of_each_pair():
    # a and b move apart twice as far as either moves from c: a-b is the easiest pair
    population = [synthetic_ground_truth(rule, i, effect=0.3) for rule in "abc" for i in range(10)]
    options = dict(units=[2, 8, 24], noise=[0.0, 3.0], sessions=[2, 6], rig="paper-absolute", layers=["fc1", "fc2"],
                   observables=OBS, decoder="logistic", n_splits=4, rig_seeds=1, seed=5, n_jobs=1, n_bootstrap=200,
                   animals=[1, 3])
    result = power_analysis(population, **options)
    assert [p["label"] for p in result.pairs if p["label"] == "a-b"] == ["a-b"] and len(result.pairs) == 3
    confirming = set(result.confirmation_networks)
    costs = {p["label"]: p["units"] * p["sessions"] for p in result.pairs}
    assert costs["a-b"] <= min(costs["a-c"], costs["b-c"])
    for p in result.pairs:
        # the same question asked alone ("a or b?") on the same networks gives the same answer
        in_pair = sorted(g.run_id for g in population if g.run_id in confirming and g.rule in p["rules"])
        alone = power_analysis(population, rules=p["rules"], confirm_networks=in_pair, **options)
        rec = alone.recommendation
        point = (rec["units"], rec["noise"], rec["sessions"]) if rec["reached"] else (
            rec["best"]["units"], rec["best"]["noise"], rec["best"]["sessions"])
        assert (p["units"], p["noise"], p["sessions"]) == point
        assert p["selected"]["accuracy"] == pytest.approx(rec["selected"]["accuracy"])
        assert p["confirmed"]["accuracy"] == pytest.approx(alone.confirmation["accuracy"])
        assert p["confirmed"]["n"] == sum(1 for g in population if g.run_id in confirming and g.rule in p["rules"])
        assert set(p["confirmed"]["per_rule"]) == set(p["rules"])
        assert p["category"] in ("easy", "separable", "not confirmed", "not separated")
    assert result.answers["pairs"].startswith("Each pair of rules decoded by a decoder trained on those two rules")


# -- a held-out condition --------------------------------------------------------------------------------------------
def _level_population(n_per_cell: int = 6) -> list[GroundTruth]:
    """Rules a and b at three learning-rate multipliers; at 2x every unit's activity and every weight rise by 1
    by the end of learning, whatever the rule: a decoder that saw the 2x networks can subtract the weights'
    rise from the activity's (both are features), one that did not reads every 2x network as rule a."""
    out = []
    for rule in "ab":
        for i in range(3 * n_per_cell):
            scale = (0.5, 1.0, 2.0)[i % 3]
            gt = synthetic_ground_truth(rule, i, extra={"learning_rate_scale": scale})
            if scale == 2.0:
                t = np.linspace(0, 1, gt.n_checkpoints)
                gt = GroundTruth(**{**gt.__dict__,
                                    "activations": {k: v + t[:, None, None] for k, v in gt.activations.items()},
                                    "weights": {k: v + t[:, None, None] for k, v in gt.weights.items()}})
            out.append(gt)
    return out


def test_holding_out_a_condition_answers_for_an_animal_whose_condition_was_not_simulated():
    population = _level_population()
    result = power_analysis(population, units=[24], noise=[0.0], sessions=[6], rig="paper-absolute",
                            layers=["fc1", "fc2"], observables=["actraw_mean", "weightraw_mean"], decoder="logistic",
                            n_splits=4, rig_seeds=1, seed=1, n_jobs=1, n_bootstrap=200, holdout="learning_rate_scale",
                            animals=[1, 3])
    holdout = result.holdout
    assert [row["level"] for row in holdout["levels"]] == ["0.5", "1", "2"]
    assert [row["position"] for row in holdout["levels"]] == ["extrapolation", "interpolation", "extrapolation"]
    # the split is stratified by rule and level: every level has confirmation networks of both rules
    scale = {g.run_id: g.metadata["learning_rate_scale"] for g in population}
    rule = {g.run_id: g.rule for g in population}
    cells = {(rule[n], scale[n]) for n in result.confirmation_networks}
    assert len(cells) == 6 and len(result.confirmation_networks) == 18
    for row in holdout["levels"]:
        assert row["n_test_networks"] == 6 and row["n_train_networks"] == 12
    worst = holdout["worst"]
    assert worst["level"] == "2" and worst["accuracy"] <= 0.6  # never saw the rise: reads 2x networks as a
    assert worst["in_distribution"]["accuracy"] >= 0.9  # the same networks, their level simulated
    assert holdout["pooled"]["n"] == 18 and holdout["pooled"]["accuracy"] < result.confirmation["accuracy"]
    text = result.answers["holdout"]
    assert text.startswith("If the animal's learning_rate_scale was not simulated (each of its 3 levels 0.5, 1, 2")
    assert "at the worst level, 2 (extrapolation)" in text
    assert holdout["animals"]["table"][0]["p_correct"] < result.animals["table"][0]["p_correct"]
    assert "held out: learning_rate_scale" in result.answers["assumptions"][0]
    with pytest.raises(ValueError, match="no session has metadata 'learning_rate_scal'.*learning_rate_scale"):
        power_analysis(population, units=[24], noise=[0.0], sessions=[6], layers=["fc1", "fc2"], n_jobs=1,
                       holdout="learning_rate_scal")


# -- the command -----------------------------------------------------------------------------------------------------
def test_cli_prints_every_answer_and_skips_a_damaged_file(tmp_path, capsys, caplog):
    from virtual_lab.cli import main
    from virtual_lab.sessions import session_path, write_session

    root = tmp_path / "sessions"
    for rule in "abc":
        for i in range(6):
            gt = synthetic_ground_truth(rule, i, layer_sizes=(16, 8, 4), n_checkpoints=4, n_stimuli=6,
                                        extra={"learning_rate_scale": (1.0, 2.0)[i % 2]})
            write_session(gt, session_path(root, gt.run_id, "groundtruth"), protocol_name="synthetic")
    damaged = root / "sub-broken" / "sub-broken_ses-groundtruth.nwb"
    damaged.parent.mkdir()
    damaged.write_bytes(session_path(root, gt.run_id, "groundtruth").read_bytes()[:5000])  # truncated copy
    out = tmp_path / "report"
    args = ["power", str(root), "--rig", "paper-absolute", "--units", "2,4", "--noise", "0,5", "--sessions", "2,4",
            "--splits", "2", "--rig-seeds", "1", "--decoder", "logistic", "--jobs", "1", "-q",
            "--holdout", "learning_rate_scale", "--animals", "1,3", "--out", str(out)]
    assert main(args) == 1  # the analysis runs on the readable sessions; exit 1 says an input was skipped
    printed = capsys.readouterr().out
    assert f"skipping {damaged}" in caplog.text
    for text in ("confirmed on 9 networks that took no part in choosing it",
                 "If the animal's learning_rate_scale was not simulated (each of its 2 levels 1, 2",
                 "Each pair of rules decoded by a decoder trained on those two rules only",
                 "If M recorded animals share one rule, the posterior verdict", "Assumptions:",
                 "Simulated conditions: task synthetic; architecture mlp; width 8; depth 1; learning_rate_scale 1, 2"):
        assert text in printed, text
    assert "certified" not in printed
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["pair", "units"])
    assert sorted(line.split()[0] for line in lines[header + 1:header + 4]) == ["a-b", "a-c", "b-c"]
    summary = json.loads((out / "power_summary.json").read_text())
    assert summary["confirmation"]["n_networks"] == 9 and summary["selection"]["n_networks"] == 9
    assert str(damaged) in json.dumps(summary["provenance"]["skipped_inputs"])
    assert not set(summary["confirmation"]["networks"]) & set(summary["selection"]["networks"])
    assert summary["holdout"]["axis"] == "learning_rate_scale" and len(summary["pairs"]) == 3
    assert [row["animals"] for row in summary["animals"]["table"]] == [1, 3]
    assert summary["answers"]["recommendation"] == summary["recommendation"]["sentence"]
    markdown = (out / "power_report.md").read_text()
    page = (out / "power_report.html").read_text()
    for key in ("recommendation", "holdout", "pairs", "animals"):
        assert summary["answers"][key] in markdown
    assert page.count("<figcaption>") == 7  # heatmap, units, sessions, confusion, animals, pairs, held out
    for name in ("power_animals.png", "power_pairs.png", "power_holdout.png"):
        assert (out / name).stat().st_size > 1000 and f"]({name})" in markdown
