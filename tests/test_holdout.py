"""Held-out levels and bins, the multiplier filter, feature variants, and what the recording adds over behaviour."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from virtual_lab.analysis import behaviour as B
from virtual_lab.analysis import feature_variants as V
from virtual_lab.analysis import holdout as H
from virtual_lab.analysis import tables as T
from virtual_lab.analysis.controls import performance_table, temporal_features
from virtual_lab.analysis.observables import FeatureTable, feature_names_for

RULES = ("adam", "sgdm")


def _table(scales=(0.5, 1.0, 2.0), per_level=4, n_layers=2, n_timepoints=3, signal=3.0, seed=0, meta=None,
           network_feature=False):
    """Two rules x len(scales) levels x per_level networks; the rule is in feature 0 (``signal`` apart).

    ``network_feature``: the last observable column holds the network's index (for the spy decoder)."""
    rng = np.random.default_rng(seed)
    names = feature_names_for(["weightabs_mean", "actabs_mean"], n_timepoints)
    rows, rules, ids, layers, depths, metas = [], [], [], [], [], []
    n = 0
    for r, rule in enumerate(RULES):
        for level, scale in enumerate(scales):
            for k in range(per_level):
                network = f"{rule}-{level}-{k}"
                for layer in range(n_layers):
                    x = rng.normal(size=len(names))
                    x[0] += signal * r
                    if network_feature:
                        x[1] = n
                    rows.append(x)
                    rules.append(rule)
                    ids.append(network)
                    layers.append(f"fc{layer + 1}")
                    depths.append(("early", "deep")[layer])
                    base = {"adam": 0.001, "sgdm": 0.02}[rule]
                    m = {"rule": rule, "learning_rate": base * scale, "layer_sizes": "16,12,12,4", "task": "digits"}
                    if meta:
                        m.update(meta(r, level, k))
                    metas.append(m)
                n += 1
    return FeatureTable(X=np.array(rows), rule=np.array(rules), network_id=np.array(ids), layer=np.array(layers),
                        depth_position=np.array(depths), metadata=tuple(metas), feature_names=names)


# -- derived metadata and the multiplier filter ----------------------------------------------------------------
def test_multiplier_width_and_depth_are_derived_and_a_stored_value_wins():
    assert T.derived_value({"rule": "adam", "learning_rate": 0.0005}, "learning_rate_scale") == 0.5
    assert T.derived_value({"rule": "feedback_alignment", "learning_rate": 0.04}, "learning_rate_scale") == 2.0
    assert T.derived_value({"rule": "adam", "learning_rate": 0.002, "learning_rate_scale": 3.0},
                           "learning_rate_scale") == 3.0
    assert T.derived_value({"rule": "no_such_rule", "learning_rate": 0.1}, "learning_rate_scale") is None
    mlp = {"architecture": "mlp", "layer_sizes": "64,256,256,256,10"}
    assert (T.derived_value(mlp, "width"), T.derived_value(mlp, "depth")) == (256, 3)
    assert T.derived_value({"layer_sizes": "64,10"}, "width") is None
    conv = {"architecture": "cnn", "layer_sizes": "64,10", "channels": "16,32"}
    assert (T.derived_value(conv, "width"), T.derived_value(conv, "depth")) == (32, 2)


def test_filters_accept_the_multiplier_alongside_the_absolute_rate():
    table = _table()
    half = T.filter_mask(table, "learning_rate_scale=0.5")
    assert half.sum() == 2 * 4 * 2  # two rules (different absolute rates), 4 networks, 2 layers
    assert sorted({m["learning_rate"] for m, h in zip(table.metadata, half) if h}) == pytest.approx([0.0005, 0.01])
    np.testing.assert_array_equal(T.filter_mask(table, "learning_rate_scale>1"),
                                  T.filter_mask(table, "learning_rate_scale=2"))
    assert T.filter_mask(table, ["learning_rate=0.01"]).sum() == 4 * 2  # sgdm at 0.5x only
    with pytest.raises(ValueError, match="values of 'learning_rate_scale' present: 0.5, 1.0, 2.0"):
        T.filter_mask(table, "learning_rate_scale=4")


# -- levels and bins -------------------------------------------------------------------------------------------
def test_discrete_levels_mark_the_extremes_as_extrapolation():
    levels = H.holdout_levels(_table(), "learning_rate_scale")
    assert levels.labels == ("0.5", "1", "2") and levels.scale == "levels"
    assert levels.positions == ("extrapolation", "interpolation", "extrapolation")
    depth = H.holdout_levels(_table(meta=lambda r, level, k: {"layer_sizes": "16" + ",8" * (level + 1) + ",4"}),
                             "depth")
    assert depth.labels == ("1", "2", "3")
    task = H.holdout_levels(_table(meta=lambda r, level, k: {"task": ["digits", "shapes", "mock"][level]}), "task")
    assert task.labels == ("digits", "mock", "shapes") and set(task.positions) == {"new value"}
    with pytest.raises(ValueError, match="did you mean 'learning_rate_scale'"):
        H.holdout_levels(_table(), "learning_rate_scal")


def test_a_continuous_axis_is_binned_in_log_space_with_both_extremes_held_out():
    rng = np.random.default_rng(3)
    scales = np.exp(rng.uniform(np.log(0.25), np.log(4.0), size=2 * 20))  # a log-uniform prior
    table = _table(meta=lambda r, level, k: {"learning_rate_scale": float(scales[20 * r + k])}, scales=(1.0,),
                   per_level=20)
    levels = H.holdout_levels(table, "learning_rate_scale")
    assert levels.scale == "log bins" and len(levels.edges) == H.DEFAULT_BINS + 1
    assert levels.edges[0] == pytest.approx(scales.min()) and levels.edges[-1] == pytest.approx(scales.max())
    np.testing.assert_allclose(np.diff(np.log(levels.edges)), np.log(scales.max() / scales.min()) / H.DEFAULT_BINS)
    values = np.array([m["learning_rate_scale"] for m in table.metadata])
    # the smallest and the largest value are each in a held-out level, the first and the last
    assert levels.index[np.argmin(values)] == 0 and levels.index[np.argmax(values)] == len(levels.labels) - 1
    assert levels.positions[0] == levels.positions[-1] == "extrapolation"
    assert set(levels.positions[1:-1]) <= {"interpolation"}
    for i, (low, high) in enumerate(levels.ranges):  # every value in its bin
        inside = values[levels.index == i]
        assert np.all(inside >= low * (1 - 1e-9)) and np.all(inside <= high * (1 + 1e-9))
    linear = H.holdout_levels(table, "learning_rate_scale", bins=4, log=False)
    assert linear.scale == "linear bins" and len(linear.labels) <= 4
    np.testing.assert_allclose(np.diff(linear.edges), (scales.max() - scales.min()) / 4)
    assert linear.labels[-1].endswith("]") and linear.labels[0].endswith(")")


class _Spy(ClassifierMixin, BaseEstimator):
    """Remembers the network index (feature column 1) of every training and test row."""

    seen: list = []

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.majority_ = self.classes_[0]
        self.train_ids_ = set(np.asarray(X)[:, 1].round().astype(int).tolist())
        return self

    def predict(self, X):
        _Spy.seen.append((self.train_ids_, set(np.asarray(X)[:, 1].round().astype(int).tolist())))
        return np.full(len(X), self.majority_)


def test_no_network_sits_on_both_sides_of_any_held_out_split():
    _Spy.seen = []
    table = _table(network_feature=True)
    result = H.holdout_table(table, "learning_rate_scale", _Spy(), n_splits=3, n_bootstrap=0)
    assert [lv.label for lv in result.levels] == ["0.5", "1", "2"]
    held = [pair for pair in _Spy.seen if pair[1] and len(pair[1]) == 8]  # held-out splits test 8 networks
    assert len(held) >= 3 * 3
    level_of = {n: (n % 12) // 4 for n in range(24)}  # network n: rule n // 12, level (n % 12) // 4
    for train, test in _Spy.seen:
        assert not train & test
    for train, test in held:
        assert len({level_of[n] for n in test}) == 1 and level_of[next(iter(test))] not in {level_of[n] for n in train}
    for level in result.levels:
        assert level.n_test_networks == 8 and level.n_train_networks == 16
        assert {r["network_id"] for r in level.held_out.predictions} == {
            f"{rule}-{['0.5', '1', '2'].index(level.label)}-{k}" for rule in RULES for k in range(4)}


def test_a_rule_code_that_ignores_the_axis_transfers_to_every_level():
    result = H.holdout_table(_table(signal=8.0), "learning_rate_scale", "logistic", n_splits=3, n_bootstrap=200)
    assert result.scale == "levels" and result.chance == 0.5
    for level in result.levels:
        assert level.held_out_accuracy == 1.0 and level.in_distribution_accuracy == 1.0
        low, high = level.bootstrap95
        assert low == high == 1.0
    rows = result.rows()
    assert [r["position"] for r in rows] == ["extrapolation", "interpolation", "extrapolation"]
    assert all(r["wilson_low"] < 1.0 == r["wilson_high"] for r in rows)  # 8 networks: Wilson is not [1, 1]
    json.dumps(result.summary())
    lines = H.holdout_markdown([result])
    assert lines[0].startswith("| decoder | features | held-out level") and len(lines) == 2 + 3 + 1


def test_noise_features_give_chance_held_out_and_a_level_with_an_unseen_rule_is_skipped():
    result = H.holdout_table(_table(signal=0.0, per_level=6), "learning_rate_scale", "logistic", n_splits=2,
                             n_bootstrap=0)
    pooled = np.mean([r["correct"] for lv in result.levels for r in lv.held_out.predictions])
    assert 0.2 < pooled < 0.8
    # adam networks only at 1x: holding 1x out leaves no adam network to train on
    table = _table()
    keep = ~((table.rule == "adam") & ~T.filter_mask(table, "learning_rate_scale=1"))
    result = H.holdout_table(table.subset(keep), "learning_rate_scale", "logistic", n_splits=2, n_bootstrap=0)
    skipped = {lv.label: lv.skipped for lv in result.levels}
    assert "never saw" in skipped["1"] and skipped["0.5"] == ""
    with pytest.raises(ValueError, match="single task"):
        H.holdout_table(table, "task", "logistic")


def test_rig_holdout_trains_on_one_preset_and_tests_on_the_other(tmp_path):
    base = _table(signal=8.0)
    noisy = dataclasses.replace(base, X=base.X + np.random.default_rng(1).normal(scale=0.1, size=base.X.shape))
    both = T.concat_tables([T.with_metadata(base, rig="full"), T.with_metadata(noisy, rig="noisy")])
    result = H.holdout_table(both, "rig", "logistic", n_splits=2, n_bootstrap=50)
    assert [(lv.label, lv.position) for lv in result.levels] == [("full", "new value"), ("noisy", "new value")]
    for level in result.levels:
        assert level.held_out_accuracy == 1.0 and level.in_distribution_accuracy == 1.0
    assert H.plot_holdout([result], tmp_path / "rig.png").stat().st_size > 0


# -- feature variants ------------------------------------------------------------------------------------------
def test_ratio_and_layer_share_known_values_and_layout():
    names = feature_names_for(["weightabs_mean", "actraw_mean"], 2)
    X = np.array([[2.0, 0.0, 4.0, 5.0, 1, 0, 0],     # weight 2 -> 4; act 0 -> 5 (starts at zero: floored)
                  [6.0, -1.0, 6.0, -3.0, 0, 0, 1]])
    table = FeatureTable(X=X, rule=np.array(["a", "a"]), network_id=np.array(["n", "n"]),
                         layer=np.array(["fc1", "fc2"]), depth_position=np.array(["early", "deep"]),
                         metadata=({}, {}), feature_names=names)
    ratio = V.ratio_to_initial(table)
    np.testing.assert_allclose(ratio.X[0, :4], [1.0, 0.0, 2.0, 1000.0])
    np.testing.assert_allclose(ratio.X[1, :4], [1.0, -1.0, 1.0, -3.0])
    np.testing.assert_array_equal(ratio.X[:, 4:], X[:, 4:])
    share = V.layer_share(table)  # divided by the mean |value| of the two layers at that timepoint
    np.testing.assert_allclose(share.X[:, :4], [[0.5, 0.0, 0.8, 1.25], [1.5, -2.0, 1.2, -0.75]])
    both = V.feature_set(table, "paper+ratio")
    assert both.n_features == 2 * 4 + 3 and both.n_timepoints == 2
    assert list(both.feature_names["function"][:4]) == ["abs", "raw", "abs/t0", "raw/t0"]
    np.testing.assert_allclose(both.X[0, :8], [2.0, 0.0, 1.0, 0.0, 4.0, 5.0, 2.0, 1000.0])
    assert temporal_features(both, "last_timepoint").n_features == 4 + 3
    assert V.feature_set(table, "paper") is table
    with pytest.raises(ValueError, match="did you mean 'ratio'"):
        V.feature_set(table, "ratios")


def test_layer_share_keeps_rigs_apart():
    table = _table(per_level=1, scales=(1.0,))
    doubled = dataclasses.replace(table, X=table.X * 2)
    both = T.concat_tables([T.with_metadata(table, rig="a"), T.with_metadata(doubled, rig="b")])
    share = V.layer_share(both).X
    n = table.n_examples
    np.testing.assert_allclose(share[:n, :-3], share[n:, :-3])  # each rig is its own reference


# -- what the recording adds over behaviour -----------------------------------------------------------------------
def _curve_records(table, rule_in_curves, n_t):
    """One curve record per network; the rule shows in the loss curve when ``rule_in_curves``."""
    rng = np.random.default_rng(5)
    records = []
    for network in dict.fromkeys(table.network_id.tolist()):
        rule = str(table.rule[table.network_id == network][0])
        loss = np.exp(-np.linspace(0, 1, n_t) * (3.0 if rule_in_curves and rule == "adam" else 1.0))
        loss = loss * np.exp(rng.normal(scale=0.05, size=n_t))
        accuracy = 0.5 + 0.1 * rng.random() + np.zeros(n_t)
        records.append(SimpleNamespace(run_id=network, rule=rule, metadata={"rule": rule},
                                       source=SimpleNamespace(train_loss=loss, test_accuracy=accuracy),
                                       checkpoint_indices=np.arange(n_t)))
    return records


def test_curves_with_observables_puts_each_networks_curves_in_every_timepoint_block():
    table = _table(per_level=2, scales=(1.0,), n_timepoints=3)
    records = _curve_records(table, True, 3)
    curves = performance_table(records)
    combined = B.curves_with_observables(table, curves)
    assert combined.n_features == 3 * (2 + 2) + 3 and combined.n_timepoints == 3
    assert list(combined.feature_names["measure"][:4]) == ["weight", "act", "perf", "perf"]
    row = list(curves.network_id).index(table.network_id[0])
    np.testing.assert_allclose(combined.X[0, 2:4], curves.X[row, :2])
    np.testing.assert_allclose(combined.X[0, 4:6], table.X[0, 2:4])
    np.testing.assert_array_equal(combined.X[:, -3:], table.X[:, -3:])
    with pytest.raises(ValueError, match="timepoints"):
        B.curves_with_observables(table, performance_table(_curve_records(table, True, 4)))


def test_a_rule_encoded_only_in_the_curves_decodes_from_the_curves_alone():
    table = _table(signal=0.0, per_level=8, scales=(1.0,))  # observables: noise
    result = B.beyond_behaviour(table, _curve_records(table, True, 3), "logistic", n_splits=4, n_bootstrap=200)
    rows = {r["what"]: r for r in result.rows()}
    assert list(rows) == list(B.BEHAVIOUR_ROWS)
    assert rows[B.CURVES]["network_accuracy_mean"] == 1.0
    assert rows[B.BOTH]["network_accuracy_mean"] >= 0.75
    assert rows[B.OBSERVABLES]["network_accuracy_mean"] <= 0.75  # chance is 0.5
    assert rows[B.CURVES]["n_networks"] == rows[B.OBSERVABLES]["n_networks"] == 16
    d = result.differences["observables - curves"]
    assert d["paired"] and d["difference"] < 0 and d["bootstrap95"][0] <= d["difference"] <= d["bootstrap95"][1]
    # the final accuracies of both rules overlap: the matched rows ran, on fewer or as many networks
    assert rows[B.MATCHED_OBSERVABLES]["n_networks"] <= 16 and "networks, final accuracy" in result.matched_note
    summary = result.summary()
    json.dumps(summary)
    lines = B.behaviour_markdown([summary])
    assert lines[0] == "## What the recording adds over behaviour"
    assert sum(line.startswith("| logistic | full |") for line in lines) == len(B.BEHAVIOUR_ROWS)


def test_a_rule_encoded_only_in_the_observables_and_matching_that_cannot_run():
    table = _table(signal=8.0, per_level=6, scales=(1.0,))
    records = _curve_records(table, False, 3)
    for record in records:  # adam reaches 0.9, sgdm 0.5: no overlap in final accuracy
        record.source.test_accuracy = np.full(3, 0.9 if record.rule == "adam" else 0.5)
    result = B.beyond_behaviour(table, records, "logistic", n_splits=3, n_bootstrap=0)
    rows = {r["what"]: r for r in result.rows()}
    assert rows[B.OBSERVABLES]["network_accuracy_mean"] == 1.0
    assert "do not overlap" in rows[B.MATCHED_OBSERVABLES]["skipped"]
    assert "do not overlap" in rows[B.MATCHED_CURVES]["skipped"]
    lines = B.behaviour_markdown([result.summary()])
    assert sum("skipped (below)" in line for line in lines) == 2
    [reason] = [line for line in lines if line.startswith(f"- *{B.MATCHED_OBSERVABLES}* skipped:")]
    assert "do not overlap" in reason
    assert set(result.differences) == {"observables - curves", "curves + observables - curves"}
    assert result.differences["observables - curves"]["bootstrap95"] is None  # n_bootstrap=0


# -- the decode command ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lr_sessions(tmp_path_factory):
    from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, session_path, write_session
    from virtual_lab.testing import mock_ground_truth

    root = tmp_path_factory.mktemp("lr_sessions")
    for r, rule in enumerate(RULES):
        for level, scale in enumerate((0.5, 1.0, 2.0)):
            for k in range(2):
                gt = mock_ground_truth(rule=rule, seed=100 * r + 10 * level + k, run_id=f"m{r}{level}{k}",
                                       n_checkpoints=4)
                rate = {"adam": 0.001, "sgdm": 0.02}[rule] * scale
                gt = dataclasses.replace(gt, metadata={**gt.metadata, "learning_rate": rate})
                write_session(gt, session_path(root, gt.run_id, GROUND_TRUTH_SESSION_ID), protocol_name="mock")
    return root


def test_decode_holdout_writes_the_generalization_table_figure_and_behaviour(lr_sessions, tmp_path, capsys):
    import csv

    from virtual_lab.cli import main

    out = tmp_path / "holdout"
    code = main(["decode", str(lr_sessions), "--holdout", "learning_rate_scale", "--decoder", "logistic",
                 "--features", "paper", "--features", "paper+ratio", "--n-splits", "2", "--jobs", "1",
                 "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    rows = list(csv.DictReader(open(out / "holdout_learning_rate_scale.csv")))
    assert [(r["features"], r["level"], r["position"]) for r in rows] == [
        (f, level, position) for f in ("paper", "paper+ratio")
        for level, position in (("0.5", "extrapolation"), ("1", "interpolation"), ("2", "extrapolation"))]
    assert all(r["n_test_networks"] == "4" and r["n_train_networks"] == "8" for r in rows)
    assert rows[0]["curves_held_out_accuracy"] != "" and rows[3]["curves_held_out_accuracy"] == ""
    assert (out / "holdout_learning_rate_scale.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["holdout"] == ["learning_rate_scale"] and len(summary["holdout_results"]) == 2
    assert {a["analysis"] for a in summary["analyses"]} == {"main", "holdout"}
    [behaviour] = summary["beyond_behaviour"]
    assert [r["what"] for r in behaviour["rows"]] == list(B.BEHAVIOUR_ROWS)
    decoded = list(csv.DictReader(open(out / "decode.csv")))
    assert {r["learning_rate_scale"] for r in decoded} == {"0.5", "1.0", "2.0"}
    assert "held-out learning_rate_scale (rig full; levels)" in printed
    assert "what the recording adds over behaviour" in printed


def test_decode_holdout_errors(lr_sessions, tmp_path, capsys):
    from virtual_lab.cli import main

    assert main(["decode", str(lr_sessions), "--holdout", "rig", "--output-dir", str(tmp_path)]) == 2
    assert "at least two --rig" in capsys.readouterr().err
    assert main(["decode", str(lr_sessions), "--holdout", "task", "--test-filter", "task=mock",
                 "--output-dir", str(tmp_path)]) == 2
    assert "use one of them" in capsys.readouterr().err
    assert main(["decode", str(lr_sessions), "--features", "ratios", "--output-dir", str(tmp_path)]) == 2
    assert "did you mean 'ratio'" in capsys.readouterr().err


def test_decode_skips_an_axis_the_sessions_do_not_vary_in_among_several(lr_sessions, tmp_path, capsys):
    from virtual_lab.cli import main

    out = tmp_path / "two"
    assert main(["decode", str(lr_sessions), "--holdout", "task", "--holdout", "learning_rate", "--decoder",
                 "logistic", "--n-splits", "2", "--jobs", "1", "--no-behaviour", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out task skipped: held-out task: the sessions have a single task (mock)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert "beyond_behaviour" not in summary and summary["holdout_results"][0]["skipped"]
    rows = [r for r in summary["holdout_results"][1:] if r["axis"] == "learning_rate"]
    assert [row["level"] for row in rows[0]["levels"]] == ["0.0005", "0.001", "0.002", "0.01", "0.02", "0.04"]
    assert main(["decode", str(lr_sessions), "--holdout", "task", "--output-dir", str(out)]) == 2
    assert "single task" in capsys.readouterr().err
