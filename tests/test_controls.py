"""Controls, generalization, clustering and the `decode` command, on synthetic tables and mock sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from virtual_lab.analysis import controls as C
from virtual_lab.analysis import generalization as G
from virtual_lab.analysis import session_tables as S
from virtual_lab.analysis import tables as T
from virtual_lab.analysis.clustering import cluster_runs, network_vectors, plot_embedding
from virtual_lab.analysis.evaluation import evaluate
from virtual_lab.analysis.observables import FeatureTable, build_feature_table, feature_names_for
from virtual_lab.rig import Recording, keep_checkpoints
from virtual_lab.testing import mock_ground_truth


def _table(n_rules=2, networks_per_rule=6, n_layers=3, n_timepoints=4, observables=("weightraw_mean", "actraw_mean"),
           seed=0, metadata=None):
    rng = np.random.default_rng(seed)
    names = feature_names_for(list(observables), n_timepoints)
    rows, rules, ids, layers, depths, metas = [], [], [], [], [], []
    for r in range(n_rules):
        for k in range(networks_per_rule):
            for layer in range(n_layers):
                rows.append(rng.normal(size=len(names)))
                rules.append(f"rule{r}")
                ids.append(f"net{r}-{k}")
                layers.append(f"fc{layer + 1}")
                depths.append(("early", "middle", "deep")[min(layer, 2)])
                meta = {"rule": f"rule{r}", "family": "exact" if r % 2 == 0 else "approximate",
                        "learning_rate": [0.01, 0.02][k % 2], "architecture": "mlp", "task": "digits"}
                if metadata:
                    meta.update(metadata(r, k))
                metas.append(meta)
    return FeatureTable(X=np.array(rows), rule=np.array(rules), network_id=np.array(ids), layer=np.array(layers),
                        depth_position=np.array(depths), metadata=tuple(metas), feature_names=names)


# -- observable class and temporal controls -------------------------------------------------------------
def test_observable_class_keeps_one_measure_and_depth():
    table = _table()
    weights = C.observable_class(table, "weights")
    assert set(weights.feature_names["measure"]) == {"weight", "depth"}
    assert weights.n_features == 4 + 3
    np.testing.assert_array_equal(weights.X[:, :1], table.X[:, :1])
    with pytest.raises(ValueError, match="no 'gradavg' features"):
        C.observable_class(table, "activity_change")
    with pytest.raises(ValueError, match="did you mean 'act'"):
        C.observable_class(table, "acts")


def test_temporal_controls_known_values():
    table = _table(n_timepoints=3)
    series = table.X[:, :6].reshape(-1, 3, 2)
    average = C.temporal_features(table, "time_average")
    np.testing.assert_allclose(average.X[:, :2], series.mean(axis=1))
    np.testing.assert_array_equal(average.X[:, 2:], table.X[:, 6:])
    assert average.n_timepoints == 1 and average.as_sequence().shape == (table.n_examples, 1, 5)
    last = C.temporal_features(table, "last_timepoint")
    np.testing.assert_array_equal(last.X[:, :2], series[:, -1])
    shuffled = C.temporal_features(table, "time_shuffled", seed=1)
    np.testing.assert_allclose(np.sort(shuffled.X[:, :6].reshape(-1, 3, 2), axis=1), np.sort(series, axis=1))
    assert not np.array_equal(shuffled.X, table.X)
    np.testing.assert_array_equal(shuffled.X, C.temporal_features(table, "time_shuffled", seed=1).X)
    assert C.temporal_features(table, "trajectory") is table


def test_time_shuffling_destroys_a_temporal_code_that_the_average_cannot_see():
    # rule 1 rises over time, rule 0 falls: same time average, opposite order
    table = _table(n_rules=2, networks_per_rule=10, n_timepoints=5, observables=("weightraw_mean",))
    X = table.X.copy()
    ramp = np.linspace(-2, 2, 5)
    X[:, :5] = 0.2 * X[:, :5] + np.where(table.rule == "rule1", 1, -1)[:, None] * ramp
    table = T._replace(table, X=X)
    kwargs = dict(n_splits=3, seed=0)
    assert np.mean(evaluate(table, "logistic", **kwargs).network_accuracy) == 1.0
    for kind in ("time_average", "time_shuffled"):
        assert np.mean(evaluate(C.temporal_features(table, kind), "logistic", **kwargs).network_accuracy) < 0.8


# -- performance controls -------------------------------------------------------------------------------
def _recordings(n_per_rule=4, rules=("sgdm", "adam"), n_checkpoints=5):
    out = []
    for r, rule in enumerate(rules):
        for k in range(n_per_rule):
            gt = mock_ground_truth(rule=rule, seed=10 * r + k, n_checkpoints=n_checkpoints)
            acc = np.linspace(0.1, 0.5 + 0.1 * k, n_checkpoints).astype(np.float32)
            import dataclasses

            out.append(Recording.from_ground_truth(dataclasses.replace(gt, test_accuracy=acc)))
    return out


def test_performance_table_uses_the_observed_checkpoints():
    recordings = _recordings()
    sparse = [keep_checkpoints(r, steps=[int(r.checkpoint_steps[0]), int(r.checkpoint_steps[-1])]) for r in recordings]
    table = C.performance_table(sparse)
    assert table.n_examples == 8 and table.n_features == 4
    first = recordings[0].source
    np.testing.assert_allclose(table.X[0], [np.log10(first.train_loss[0]), first.test_accuracy[0],
                                            np.log10(first.train_loss[-1]), first.test_accuracy[-1]], rtol=1e-6)
    assert list(table.feature_names["statistic"][:2]) == ["log_loss", "accuracy"]


def test_performance_matching_equalizes_final_accuracy():
    table = _table(n_rules=2, networks_per_rule=6)
    # rule0 networks: 0.50 ... 0.75, rule1: 0.65 ... 0.90 -> common range 0.65-0.75
    accuracy = {f"net0-{k}": 0.50 + 0.05 * k for k in range(6)}
    accuracy.update({f"net1-{k}": 0.65 + 0.05 * k for k in range(6)})
    matched = C.performance_matched(table, accuracy, n_bins=1, seed=0)
    kept = sorted(set(matched.network_id.tolist()))
    assert kept == ["net0-3", "net0-4", "net0-5", "net1-0", "net1-1", "net1-2"]
    assert matched.metadata[0]["performance_range"] == pytest.approx((0.65, 0.75))
    with pytest.raises(ValueError, match="do not overlap"):
        C.performance_matched(table, {**accuracy, **{f"net1-{k}": 0.95 for k in range(6)}})
    with pytest.raises(ValueError, match="too few networks per rule"):
        C.performance_matched(table, accuracy, n_bins=3, min_networks_per_rule=4)


def test_relabel_family_and_run_control_by_name():
    table = _table(n_rules=4, networks_per_rule=4)
    family = C.relabel(table, "family")
    assert family.classes == ("approximate", "exact")
    [(label, result)] = C.run_control("family", table, "logistic", n_splits=2)
    assert label == "rule family" and result.classes == ("approximate", "exact")
    with pytest.raises(ValueError, match="did you mean 'family'"):
        C.relabel(table, "familly")
    with pytest.raises(ValueError, match="needs the recordings"):
        C.run_control("performance_only", table)
    with pytest.raises(ValueError, match="did you mean 'time_average'"):
        C.run_control("time_averge", table)


# -- filters and generalization --------------------------------------------------------------------------
def test_filters_parse_and_select():
    table = _table()
    assert T.filter_mask(table, "learning_rate=0.01").sum() == table.n_examples // 2
    assert T.filter_mask(table, ["learning_rate!=0.01", "rule=rule1"]).sum() == table.n_examples // 4
    assert T.filter_mask(table, "learning_rate>0.015").sum() == table.n_examples // 2
    with pytest.raises(ValueError, match="did you mean 'learning_rate'"):
        T.filter_mask(table, "learning_rat=0.01")
    with pytest.raises(ValueError, match="matches no example; values of 'task' present: digits"):
        T.filter_mask(table, "task=mnist")
    with pytest.raises(ValueError, match="cannot parse filter"):
        T.parse_filter("learning_rate")


def test_generalization_never_puts_a_network_on_both_sides():
    lr = _table(n_rules=2, networks_per_rule=8)
    result = G.generalize(lr, "learning_rate=0.01", "learning_rate=0.02", "logistic", n_splits=3)
    tested = {row["network_id"] for row in result.predictions}
    assert tested == {n for n, m in zip(lr.network_id, lr.metadata) if m["learning_rate"] == 0.02}
    assert result.split_kind == "generalization" and "learning_rate=0.01" in result.notes[0]
    # two rigs observing the same networks: a network is never trained on one rig and tested on the other
    full = T.with_metadata(lr, rig="full")
    noisy = T.with_metadata(T._replace(lr, X=lr.X + 1.0), rig="noisy")
    both = T.concat_tables([full, noisy])
    splits = G._generalization_splits(both, T.filter_mask(both, "rig=full"), T.filter_mask(both, "rig=noisy"),
                                      5, 0.25, 0)
    for train, test in splits:
        assert not set(both.network_id[train]) & set(both.network_id[test])
        assert set(both.metadata_column("rig")[train]) == {"full"} and set(both.metadata_column("rig")[test]) == {"noisy"}
    result = G.generalize(both, "rig=full", "rig=noisy", "logistic", n_splits=2)
    assert result.n_splits == 2


def test_held_out_generalization_leaves_each_value_out_once():
    arch = ("mlp", "cnn", "resnet")
    table = _table(n_rules=2, networks_per_rule=9, metadata=lambda r, k: {"architecture": arch[k % 3]})
    # a feature that codes the rule the same way in every architecture: held-out decoding must find it
    table = T._replace(table, X=table.X + 3.0 * (table.rule == "rule1")[:, None])
    results = G.held_out_generalization(table, "architecture", "logistic", n_splits=2)
    assert [label for label, _ in results] == ["held-out architecture: cnn", "held-out architecture: mlp",
                                               "held-out architecture: resnet"]
    for label, result in results:
        held = label.rsplit(" ", 1)[1]
        tested = {row["network_id"] for row in result.predictions}
        assert tested == {n for n, m in zip(table.network_id, table.metadata) if m["architecture"] == held}
        assert np.mean(result.network_accuracy) == 1.0
    with pytest.raises(ValueError, match="single task"):
        G.held_out_generalization(table, "task", "logistic")
    entries, extras = C.standard_controls(table, None, "logistic", n_splits=2, n_permutations=0,
                                          held_out=("architecture", "task"))
    assert sum(e["control"].startswith("held-out architecture") for e in entries) == 3
    assert not any(e["control"].startswith("held-out task") for e in entries)
    from virtual_lab.analysis.report import _table_rows

    rows = {row[2]: row for row in _table_rows(entries)}
    assert rows["held-out architecture: cnn"][6] == "6 of 18"  # the report counts the held-out networks


def test_too_little_data_gives_clear_errors():
    table = _table(n_rules=2, networks_per_rule=6)
    one_rule = table.subset(table.rule == "rule0")
    with pytest.raises(ValueError, match="at least 2 rules"):
        evaluate(one_rule, "logistic")
    lonely = table.subset(~np.isin(table.network_id, [f"net1-{k}" for k in range(1, 6)]))
    with pytest.raises(ValueError, match=r"at least 2 networks.*'rule1' \(1\)"):
        evaluate(lonely, "random_forest")
    few = table.subset(~np.isin(table.network_id, [f"net1-{k}" for k in range(2, 6)]))
    with pytest.raises(ValueError, match="nested model selection.*param_grid=None"):
        evaluate(few, "logistic", param_grid="small")
    with pytest.raises(ValueError, match="matches no example"):
        G.generalize(table, "learning_rate=0.01", "learning_rate=0.5", "logistic")
    with pytest.raises(ValueError, match="never saw"):
        G.generalize(table, ["rule=rule0"], "rule=rule1", "logistic")
    tiny = table.subset(np.isin(table.network_id, ["net0-0", "net0-1", "net1-0", "net1-1"]))
    with pytest.raises(ValueError, match="clustering into 2 clusters needs more than 2 networks"):
        cluster_runs(tiny.subset(np.isin(tiny.network_id, ["net0-0", "net1-0"])))


# -- alignment across rigs -----------------------------------------------------------------------------------
def test_align_tables_reduces_to_shared_checkpoints():
    gts = [mock_ground_truth(rule=r, seed=s, n_checkpoints=5) for r in ("sgdm", "adam") for s in range(3)]
    full = build_feature_table([Recording.from_ground_truth(g) for g in gts], ["weightraw_mean"])
    sparse = build_feature_table([keep_checkpoints(Recording.from_ground_truth(g), 3) for g in gts], ["weightraw_mean"])
    steps_full = tuple(int(s) for s in gts[0].checkpoint_steps)
    steps_sparse = tuple(steps_full[i] for i in (0, 2, 4))
    full = T._replace(full, metadata=tuple({**m, "checkpoint_steps": steps_full} for m in full.metadata))
    sparse = T._replace(sparse, metadata=tuple({**m, "checkpoint_steps": steps_sparse} for m in sparse.metadata))
    aligned, note = S.align_tables({"full": full, "sparse": sparse})
    assert "3 shared steps" in note
    np.testing.assert_array_equal(aligned["full"].X, sparse.X)  # no noise: the same values at the same steps


# -- clustering -----------------------------------------------------------------------------------------------
def test_clustering_recovers_separated_rules(tmp_path):
    table = _table(n_rules=3, networks_per_rule=6)
    X = table.X + 6.0 * (np.array([int(r[-1]) for r in table.rule])[:, None] == np.arange(table.n_features) % 3)
    table = T._replace(table, X=X)
    networks, vectors = network_vectors(table)
    assert vectors.shape == (18, 3 * table.n_features)
    for method in ("kmeans", "gmm"):
        result = cluster_runs(table, method=method, seed=0)
        assert result.scores["rule"]["ari"] == pytest.approx(1.0) and result.scores["rule"]["nmi"] == pytest.approx(1.0)
        assert result.scores["architecture"]["ari"] is None  # one value: nothing to recover
    assert plot_embedding(result, tmp_path / "embedding.png").stat().st_size > 0
    json.dumps(result.summary())


# -- the decode command ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mock_sessions(tmp_path_factory):
    from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, session_path, write_session

    root = tmp_path_factory.mktemp("sessions")
    for r, rule in enumerate(("sgdm", "adam")):
        for k in range(3):
            gt = mock_ground_truth(rule=rule, seed=10 * r + k, run_id=f"m{r}x{k}", n_checkpoints=9)
            write_session(gt, session_path(root, gt.run_id, GROUND_TRUTH_SESSION_ID), protocol_name="mock")
    return root


def test_decode_command_writes_tidy_table_summary_and_figures(mock_sessions, tmp_path, capsys):
    import csv

    from virtual_lab.cli import main

    out = tmp_path / "out"
    code = main(["decode", str(mock_sessions), "--decoder", "logistic", "--n-splits", "2", "--control",
                 "time_average", "--control", "clustering", "--control", "permutation", "--n-permutations", "3",
                 "--jobs", "1", "--output-dir", str(out)])
    assert code == 0
    rows = list(csv.DictReader(open(out / "decode.csv")))
    main_rows = [r for r in rows if r["analysis"] == "main"]
    assert len(main_rows) == 2 * 2  # 2 splits x (1 test network per rule x 2 rules)
    assert {"split", "network_id", "rule", "predicted_rule", "correct", "architecture"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    controls = {a["control"] for a in summary["analyses"]}
    assert {"time average", "permutation test"} <= controls and "full" in summary["clustering"]
    for name in ("accuracy.png", "confusion.png", "importance.png", "permutation.png", "embedding_full.png"):
        assert (out / name).is_file(), name
    assert "network acc" in capsys.readouterr().out


def test_decode_command_trains_on_one_rig_and_tests_on_another(mock_sessions, tmp_path, capsys):
    from virtual_lab.cli import main

    out = tmp_path / "rigs"
    code = main(["decode", str(mock_sessions), "--decoder", "logistic", "--n-splits", "2", "--rig", "full",
                 "--rig", "paper-gaussian", "--train-filter", "rig=full", "--test-filter", "rig=paper-gaussian",
                 "--jobs", "1", "--output-dir", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    [analysis] = summary["analyses"]
    assert analysis["analysis"] == "generalization" and analysis["rig"] == "full+paper-gaussian"
    assert any("shared steps" in note or "time average" in note for note in analysis["summary"]["notes"])


def test_decode_command_errors_are_one_line(mock_sessions, tmp_path, capsys):
    from virtual_lab.cli import main

    assert main(["decode", str(mock_sessions), "--decoder", "random_forrest"]) == 2
    assert "decoder='random_forrest' is not available; did you mean 'random_forest'? (available: random_forest, " \
        in capsys.readouterr().err
    assert main(["decode", str(mock_sessions), "--test-filter", "task=mnist", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err  # progress lines of the observing that found it, then one error line
    errors = [line for line in err.splitlines() if line.startswith("virtual-lab: error:")]
    assert len(errors) == 1 and "matches no example" in errors[0] and "Traceback" not in err
    assert err.splitlines()[-1] == errors[0]
    assert main(["decode", str(tmp_path / "nothing")]) == 2


def test_fast_session_reader_equals_read_session(mock_sessions):
    from virtual_lab.sessions import read_session

    path = sorted(mock_sessions.rglob("*.nwb"))[0]
    fast, slow = S.read_session_arrays(str(path)), read_session(path)
    assert fast.layer_names == slow.layer_names and fast.depth_positions == slow.depth_positions
    assert fast.metadata == slow.metadata
    for name in ("checkpoint_steps", "train_loss", "test_accuracy", "probe_stimuli", "probe_labels"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
    for layer in slow.layer_names:
        for name in ("activations", "weights", "activity_change"):
            np.testing.assert_array_equal(getattr(fast, name)[layer], getattr(slow, name)[layer])
