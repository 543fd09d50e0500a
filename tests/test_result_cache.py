"""The evaluation cache: a cached cross-validation equals a fresh one, a changed table is recomputed, and
nothing is cached outside the context or for what cannot be keyed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from virtual_lab.analysis import evaluation, result_cache
from virtual_lab.analysis.evaluation import evaluate
from virtual_lab.analysis.observables import FeatureTable, feature_names_for


def _table(signal=1.5, seed=0) -> FeatureTable:
    rng = np.random.default_rng(seed)
    rule, network, layer, depth = [], [], [], []
    for name in ("a", "b", "c"):
        for k in range(6):
            for index in range(2):
                rule.append(name)
                network.append(f"net-{name}-{k}")
                layer.append(f"fc{index + 1}")
                depth.append(("early", "deep")[index])
    names = feature_names_for(["weightraw_mean"], 4)
    X = rng.normal(size=(len(rule), len(names)))
    X[np.arange(len(rule)), [("a", "b", "c").index(r) for r in rule]] += signal
    return FeatureTable(X=X, rule=np.array(rule), network_id=np.array(network), layer=np.array(layer),
                        depth_position=np.array(depth), metadata=tuple({"lr": 0.01 * (i % 3)} for i in range(len(rule))),
                        feature_names=names)


@pytest.fixture()
def counted(monkeypatch):
    """Counts the cross-validations actually run."""
    calls = []
    real = evaluation.cross_validate

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "cross_validate", counting)
    return calls


def _same(a, b):
    assert a.summary() == b.summary()
    assert a.predictions == b.predictions and a.layer_predictions == b.layer_predictions
    np.testing.assert_array_equal(a.feature_importances, b.feature_importances)
    np.testing.assert_array_equal(a.feature_names, b.feature_names)


@pytest.mark.parametrize("decoder", ["random_forest", "linear_svm"])
def test_a_cached_evaluation_equals_a_fresh_one_and_runs_nothing(tmp_path, counted, decoder):
    table = _table()
    fresh = evaluate(table, decoder, n_splits=3, seed=2)
    with result_cache.cached_evaluations(tmp_path):
        first = evaluate(table, decoder, n_splits=3, seed=2)
        second = evaluate(table, decoder, n_splits=3, seed=2, n_jobs=2)  # n_jobs does not change the result
    assert len(counted) == 2  # the fresh one and the first cached one
    assert len(list(tmp_path.glob("*.npz"))) == 1 and not list(tmp_path.glob("*.tmp"))
    _same(fresh, first)
    _same(fresh, second)


def test_another_table_setting_or_decoder_is_computed_again(tmp_path, counted):
    table = _table()
    changed = dataclasses.replace(table, X=table.X.copy())
    changed.X[0, 0] += 1e-9  # one session's observables moved
    with result_cache.cached_evaluations(tmp_path):
        evaluate(table, "logistic", n_splits=2)
        evaluate(changed, "logistic", n_splits=2)
        evaluate(table, "logistic", n_splits=2, seed=1)
        evaluate(table, "linear_svm", n_splits=2)
        relabelled = dataclasses.replace(table, metadata=tuple({"lr": 1.0} for _ in table.metadata))
        evaluate(relabelled, "logistic", n_splits=2)
    assert len(counted) == 5 and len(list(tmp_path.glob("*.npz"))) == 5


def test_nothing_is_cached_outside_the_context_or_when_estimators_are_kept(tmp_path, counted):
    table = _table()
    evaluate(table, "logistic", n_splits=2)
    with result_cache.cached_evaluations(tmp_path):
        kept = evaluate(table, "logistic", n_splits=2, return_estimators=True)
        assert len(kept.estimators) == 2
    with result_cache.cached_evaluations(None):
        evaluate(table, "logistic", n_splits=2)
    assert len(counted) == 3 and not list(tmp_path.glob("*.npz"))
    assert result_cache.active_folder() is None


def test_an_unreadable_entry_is_recomputed_and_rewritten(tmp_path, counted, caplog):
    table = _table()
    with result_cache.cached_evaluations(tmp_path):
        first = evaluate(table, "logistic", n_splits=2)
        [entry] = tmp_path.glob("*.npz")
        entry.write_bytes(b"not an npz")
        again = evaluate(table, "logistic", n_splits=2)
        third = evaluate(table, "logistic", n_splits=2)
    assert len(counted) == 2 and "unreadable" in caplog.text
    _same(first, again)
    _same(first, third)
