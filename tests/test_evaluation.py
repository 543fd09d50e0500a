"""Grouped cross-validation, decoders and network-level accuracy on synthetic feature tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from virtual_lab.analysis.decoders import DECODERS, make_decoder
from virtual_lab.analysis.evaluation import EvaluationResult, dprime, evaluate
from virtual_lab.analysis.fitting import class_scores, network_predictions
from virtual_lab.analysis.permutation import permutation_test
from virtual_lab.analysis.splits import grouped_splits, layer_splits
from virtual_lab.analysis.observables import FeatureTable, feature_names_for
from virtual_lab.stats import sem, wilson_interval


def _table(n_rules=4, networks_per_rule=8, n_layers=3, n_timepoints=6, signal=0.0, seed=0, X=None) -> FeatureTable:
    """Synthetic table (no training): Gaussian noise features, plus ``signal`` times a rule one-hot."""
    rng = np.random.default_rng(seed)
    rules = [f"rule{r}" for r in range(n_rules)]
    rule, network, layer, depth = [], [], [], []
    for r, name in enumerate(rules):
        for k in range(networks_per_rule):
            for layer_index in range(n_layers):
                rule.append(name)
                network.append(f"net-{name}-{k}")
                layer.append(f"fc{layer_index + 1}")
                depth.append(("early", "middle", "deep")[min(layer_index, 2)])
    n = len(rule)
    names = feature_names_for(["weightraw_mean"], n_timepoints)
    if X is None:
        X = rng.normal(size=(n, len(names)))
        codes = np.array([rules.index(r) for r in rule])
        X[np.arange(n), codes] += signal
    return FeatureTable(X=np.asarray(X, dtype=np.float64), rule=np.array(rule), network_id=np.array(network),
                        layer=np.array(layer), depth_position=np.array(depth),
                        metadata=tuple({"rule": r} for r in rule), feature_names=names)


# -- grouped splits ----------------------------------------------------------------------------------
def test_grouped_splits_never_split_a_network_and_are_stratified():
    table = _table(n_rules=3, networks_per_rule=8)
    splits = grouped_splits(table.network_id, table.rule, n_splits=10, test_fraction=0.25, seed=3)
    assert len(splits) == 10
    for train, test in splits:
        assert np.intersect1d(train, test).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(table.n_examples))
        assert not set(table.network_id[train]) & set(table.network_id[test])
        for rule in table.classes:
            test_networks = set(table.network_id[test][table.rule[test] == rule])
            train_networks = set(table.network_id[train][table.rule[train] == rule])
            assert len(test_networks) == 2 and len(train_networks) == 6  # 25% of 8 networks
    assert len({tuple(test) for _, test in splits}) > 1
    again = grouped_splits(table.network_id, table.rule, n_splits=10, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_grouped_splits_do_not_depend_on_example_order():
    table = _table(n_rules=2, networks_per_rule=6)
    order = np.random.default_rng(0).permutation(table.n_examples)
    first = grouped_splits(table.network_id, table.rule, n_splits=3, seed=1)
    shuffled = grouped_splits(table.network_id[order], table.rule[order], n_splits=3, seed=1)
    for (_, a), (_, b) in zip(first, shuffled):
        assert set(table.network_id[a]) == set(table.network_id[order][b])


def test_grouped_splits_errors_are_clear():
    one_rule = _table(n_rules=1)
    with pytest.raises(ValueError, match="at least 2 rules"):
        grouped_splits(one_rule.network_id, one_rule.rule)
    table = _table(n_rules=2, networks_per_rule=3)
    keep = ~np.isin(table.network_id, ["net-rule1-0", "net-rule1-1"])
    with pytest.raises(ValueError, match=r"at least 2 networks.*'rule1' \(1\)"):
        grouped_splits(table.network_id[keep], table.rule[keep])
    labels = table.rule.copy()
    labels[0] = "rule1"
    with pytest.raises(ValueError, match="net-rule0-0.*different rules"):
        grouped_splits(table.network_id, labels)
    with pytest.raises(ValueError, match=r"^test_fraction=1.0 is out of range \(allowed: > 0 and < 1\)$"):
        grouped_splits(table.network_id, table.rule, test_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2 rules"):
        evaluate(one_rule, decoder="logistic")


# -- decoders ----------------------------------------------------------------------------------------
def test_decoder_names_and_did_you_mean():
    assert set(DECODERS) == {"random_forest", "linear_svm", "logistic", "conv1d"}
    assert make_decoder("random_forest", seed=5)[-1].random_state == 5
    assert make_decoder("random_forest")[-1].n_jobs == 1
    with pytest.raises(ValueError, match=r"^decoder='random_forrest' is not available; did you mean 'random_forest'\? "
                                         r"\(available: random_forest, linear_svm, logistic, conv1d\)$"):
        make_decoder("random_forrest", seed=0)
    with pytest.raises(ValueError, match=r"decoder='linear_svn' is not available; did you mean 'linear_svm'\?"):
        evaluate(_table(), decoder="linear_svn")


# -- evaluate ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder, combination", [
    ("random_forest", "mean_proba"), ("linear_svm", "mean_softmax_decision"), ("logistic", "mean_proba"),
])
def test_perfectly_encoded_rule_is_decoded(decoder, combination):
    table = _table(n_rules=4, networks_per_rule=6, signal=8.0)
    result = evaluate(table, decoder=decoder, n_splits=3, seed=0)
    assert isinstance(result, EvaluationResult) and result.combination == combination
    np.testing.assert_array_equal(result.layer_accuracy, 1.0)
    np.testing.assert_array_equal(result.network_accuracy, 1.0)
    np.testing.assert_array_equal(result.network_balanced_accuracy, 1.0)
    np.testing.assert_array_equal(result.layer_confusion, np.eye(4))
    np.testing.assert_array_equal(result.network_confusion, np.eye(4))


def test_noise_features_decode_at_chance():
    table = _table(n_rules=4, networks_per_rule=40, signal=0.0, seed=1)
    result = evaluate(table, decoder="logistic", n_splits=5, seed=0)
    summary = result.summary()
    assert abs(summary["network_accuracy_mean"] - 0.25) < 0.15
    assert abs(summary["layer_accuracy_mean"] - 0.25) < 0.15
    assert summary["chance"] == 0.25


class _ColumnsAreProbabilities(ClassifierMixin, BaseEstimator):
    """Ignores training; its class probabilities are the first n_classes feature columns."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.asarray(X)[:, : len(self.classes_)]

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def test_network_level_accuracy_on_hand_made_case():
    # 2 rules x 4 networks x 3 layers. Networks "...-0" of each rule are misleading: two layers lean
    # weakly to the right rule (0.55) and one strongly to the wrong one (1.0): the layer majority is right,
    # the mean probability is wrong. The other networks are right in every layer.
    table = _table(n_rules=2, networks_per_rule=4)
    X = np.zeros_like(table.X)
    for i, (rule, network, layer) in enumerate(zip(table.rule, table.network_id, table.layer)):
        right = int(rule[-1])
        if network.endswith("-0"):
            p_right = 0.0 if layer == "fc3" else 0.55
        else:
            p_right = 0.9
        X[i, right], X[i, 1 - right] = p_right, 1 - p_right
    table = _table(n_rules=2, networks_per_rule=4, X=X)
    result = evaluate(table, decoder=_ColumnsAreProbabilities(), n_splits=6, seed=2)
    splits = grouped_splits(table.network_id, table.rule, n_splits=6, seed=2)
    for index, (_, test) in enumerate(splits):
        networks = sorted(set(table.network_id[test].tolist()))
        misleading = [n.endswith("-0") for n in networks]
        assert result.network_accuracy[index] == pytest.approx(1 - np.mean(misleading))
        layer_right = [not (table.network_id[i].endswith("-0") and table.layer[i] == "fc3") for i in test]
        assert result.layer_accuracy[index] == pytest.approx(np.mean(layer_right))
    assert result.combination == "mean_proba" and result.decoder == "_ColumnsAreProbabilities"
    rows = [r for r in result.predictions if r["network_id"] == "net-rule0-0"]
    assert all(r["predicted_rule"] == "rule1" and not r["correct"] and r["n_layers"] == 3 for r in rows)
    assert len(result.predictions) == 6 * 2  # one row per split x test network (1 per rule per split)
    assert len(result.layer_predictions) == 6 * 2 * 3


def test_network_predictions_and_class_scores():
    scores = np.array([[0.55, 0.45], [0.55, 0.45], [0.0, 1.0], [0.9, 0.1]])
    networks, predicted = network_predictions(scores, ["b", "b", "b", "a"], ["fa", "sgd"])
    assert networks.tolist() == ["a", "b"] and predicted.tolist() == ["fa", "sgd"]
    _, tie = network_predictions(np.array([[0.5, 0.5]]), ["x"], ["fa", "sgd"])
    assert tie.tolist() == ["fa"]

    svm = make_decoder("linear_svm", seed=0).fit(np.array([[0.0], [1.0], [2.0], [3.0]]), ["a", "a", "b", "b"])
    values, method = class_scores(svm, np.array([[0.0], [3.0]]), ["a", "b", "c"])
    assert method == "mean_softmax_decision" and values.shape == (2, 3)
    np.testing.assert_allclose(values.sum(axis=1), 1.0)
    assert values[0, 0] > 0.5 > values[1, 0] and np.all(values[:, 2] == 0)


def test_summary_is_json_serializable_and_consistent():
    table = _table(n_rules=3, networks_per_rule=4, signal=1.0)
    result = evaluate(table, decoder="random_forest", n_splits=3, seed=0, return_estimators=True)
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    assert summary["n_splits"] == 3 and summary["n_networks"] == 12 and summary["classes"] == list(table.classes)
    assert summary["network_accuracy_mean"] == pytest.approx(np.mean(result.network_accuracy))
    assert summary["network_accuracy_sem"] == pytest.approx(np.std(result.network_accuracy, ddof=1) / math.sqrt(3))
    np.testing.assert_allclose(np.sum(summary["network_confusion"], axis=1), 1.0)
    assert result.network_confusion_counts.sum() == 3 * 3  # 1 test network per rule per split
    assert len(result.estimators) == 3
    again = evaluate(table, decoder="random_forest", n_splits=3, seed=0)
    np.testing.assert_array_equal(again.layer_accuracy, result.layer_accuracy)


def test_sem():
    assert sem([1.0, 2.0, 3.0]) == pytest.approx(1.0 / math.sqrt(3))
    assert math.isnan(sem([1.0]))


# -- layer-level splits leak network identity -----------------------------------------------------------
def test_planted_network_identity_helps_layer_splits_but_not_grouped_splits():
    from sklearn.ensemble import RandomForestClassifier

    # no rule signal at all; 6 columns hold a random code per network, shared by all its layers
    table = _table(n_rules=2, networks_per_rule=16, n_layers=4, signal=0.0, seed=3)
    rng = np.random.default_rng(4)
    networks, inverse = np.unique(table.network_id, return_inverse=True)
    code = rng.normal(size=(len(networks), 6))
    X = table.X.copy()
    X[:, :6] = code[inverse] + rng.normal(0, 0.01, (table.n_examples, 6))
    planted = _table(n_rules=2, networks_per_rule=16, n_layers=4, X=X)
    forest = RandomForestClassifier(n_estimators=40, random_state=0, n_jobs=1)
    kwargs = dict(n_splits=6, seed=0)
    layer = evaluate(planted, forest, split="layer", **kwargs)
    grouped = evaluate(planted, forest, split="grouped", **kwargs)
    layer_without = evaluate(table, forest, split="layer", **kwargs)
    assert layer.split_kind == "layer" and grouped.split_kind == "grouped"
    assert np.mean(layer.layer_accuracy) > 0.85          # recognises the network, not the rule
    assert np.mean(layer.layer_accuracy) - np.mean(grouped.layer_accuracy) > 0.25
    assert np.mean(layer_without.layer_accuracy) < 0.7
    assert np.mean(grouped.layer_accuracy) < 0.7         # nothing to recognise on unseen networks
    assert np.mean(grouped.network_accuracy) < 0.75


def test_layer_splits_are_category_balanced_over_examples():
    labels = np.repeat(["a", "b"], [8, 12])
    for train, test in layer_splits(labels, n_splits=4, seed=1):
        assert np.sum(labels[test] == "a") == 2 and np.sum(labels[test] == "b") == 3
        assert np.intersect1d(train, test).size == 0
    with pytest.raises(ValueError, match="at least 2 rules"):
        layer_splits(["a", "a"])


# -- permutation test ---------------------------------------------------------------------------------------
def test_permutation_null_is_centred_on_chance():
    table = _table(n_rules=4, networks_per_rule=8, signal=0.0, seed=5)
    result = permutation_test(table, "logistic", n_permutations=30, n_splits=3, seed=0)
    assert result.null.shape == (30,)
    assert abs(result.null_mean - 0.25) < 0.06
    b = int(np.sum(result.null >= result.observed))
    assert result.p_value == pytest.approx((b + 1) / 31)


def test_permutation_test_rejects_when_rule_is_encoded_and_shuffles_across_networks():
    table = _table(n_rules=2, networks_per_rule=6, signal=6.0)
    result = permutation_test(table, "logistic", n_permutations=9, n_splits=2, seed=1)
    assert result.observed == 1.0 and result.p_value == pytest.approx(0.1)
    from virtual_lab.analysis.permutation import _permuted_rules

    shuffled = _permuted_rules(table, 0, 0)
    for network in np.unique(table.network_id):  # one label per network, counts per rule preserved
        assert len(set(shuffled[table.network_id == network])) == 1
    assert sorted(shuffled.tolist()) == sorted(table.rule.tolist())
    with pytest.raises(ValueError, match=r"^metric='network_acuracy' is not available; did you mean 'network_accuracy'\? "
                                         r"\(available: network_accuracy, layer_accuracy, "):
        permutation_test(table, "logistic", 2, metric="network_acuracy")


# -- statistics with known values -----------------------------------------------------------------------------
def test_wilson_interval_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_total"):
        wilson_interval(1, 0)


def test_dprime_known_values():
    counts = np.array([[8, 2], [2, 8]])
    assert dprime(counts, correction=None) == pytest.approx([1.6832, 1.6832], abs=1e-4)
    # log-linear: H = 8.5/11, F = 2.5/11
    from scipy.stats import norm

    expected = norm.ppf(8.5 / 11) - norm.ppf(2.5 / 11)
    assert dprime(counts)[0] == pytest.approx(expected)
    assert np.isfinite(dprime(np.eye(3, dtype=int) * 5)).all()
    assert np.isnan(dprime(np.array([[0, 0], [1, 3]]))[0])


def test_result_reports_dprime_wilson_and_importances_by_observable_and_measure():
    # signal only in timepoint-0 "weightraw_mean" columns: importances must point at the weight measure
    table = _table(n_rules=2, networks_per_rule=8, signal=3.0, seed=2)
    result = evaluate(table, "random_forest", n_splits=3, seed=0)
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    low, high = summary["network_accuracy_wilson95"]
    assert low <= summary["network_accuracy_pooled"] <= high
    assert summary["n_test_networks"] == result.n_test_networks <= 16
    assert set(summary["network_dprime"]) == set(table.classes)
    by_measure = result.importance_by_measure()
    assert sum(by_measure.values()) == pytest.approx(1.0)
    assert next(iter(by_measure)) == "weight"
    assert "weightraw_mean" in result.importance_by_observable()
    assert result.feature_importances.shape == (3, table.n_features)
    # linear decoders give importances too; the Conv1D MLP does not
    assert evaluate(table, "logistic", n_splits=2).importance_by_measure()


def test_nested_model_selection_picks_from_the_grid():
    table = _table(n_rules=2, networks_per_rule=8, signal=2.0)
    result = evaluate(table, "logistic", n_splits=2, param_grid={"classifier__C": [0.01, 1.0]}, inner_splits=2)
    assert result.param_grid == "custom" and len(result.best_params) == 2
    assert all(p["classifier__C"] in (0.01, 1.0) for p in result.best_params)
    assert result.summary()["best_params"][0]["classifier__C"] in (0.01, 1.0)


def test_conv1d_decoder_reads_the_table_layout():
    table = _table(n_rules=2, networks_per_rule=12)
    X = table.X.copy()
    X[:, :6] += np.where(table.rule == "rule1", 3.0, -3.0)[:, None]  # the rule shifts every timepoint
    table = _table(n_rules=2, networks_per_rule=12, X=X)
    result = evaluate(table, "conv1d", n_splits=2, return_estimators=True)
    assert result.estimators[0][-1].layout_ == (6, 1, 3)
    assert np.mean(result.network_accuracy) > 0.7
