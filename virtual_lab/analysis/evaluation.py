"""Cross-validated decoding of the learning rule, grouped by network.

Every split is drawn at the level of *networks*: all layers (examples) of one network fall on the same
side, so a decoder can never recognise a network it has already seen instead of its learning rule. Splits
are stratified by rule (each rule's networks are split ~75/25), as the paper's category-balanced splits
were, but over networks rather than layers.

Two accuracies are reported per split: **layer level** (each test example, i.e. one layer of one network,
predicted on its own) and **network level** (the layer predictions of one network combined into one
prediction; see :func:`network_predictions`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from virtual_lab.analysis.decoders import make_decoder
from virtual_lab.analysis.observables import FeatureTable

__all__ = ["EvaluationResult", "class_scores", "evaluate", "grouped_splits", "network_predictions", "sem"]

COMBINATIONS = ("mean_proba", "mean_softmax_decision", "vote")


def sem(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)``; NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan")
    return float(values.std(ddof=1) / math.sqrt(values.size))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def grouped_splits(groups: Sequence[str] | np.ndarray, labels: Sequence[str] | np.ndarray, n_splits: int = 10,
                   test_fraction: float = 0.25, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random train/test splits at the network level, stratified by rule.

    In every split, each rule's networks are shuffled and ``round(test_fraction * n_networks_of_rule)``
    of them (at least 1, at most all but 1) go to the test side; every example (layer) of a network goes
    where its network goes.

    Parameters
    ----------
    groups : array-like of str, shape (n_examples,)
        Network id of each example.
    labels : array-like of str, shape (n_examples,)
        Rule of each example; must be constant within a network.
    n_splits : int, default=10
    test_fraction : float, default=0.25
        Fraction of each rule's networks held out, in (0, 1).
    seed : int, default=0
        Seed of ``np.random.default_rng``; the splits depend only on the set of (network, rule) pairs and
        the seed, not on the order of the examples.

    Returns
    -------
    list of (ndarray of int64, ndarray of int64), length n_splits
        ``(train_indices, test_indices)``: sorted example positions.

    Raises
    ------
    ValueError
        Mismatched lengths, a network with two rules, fewer than two rules, or a rule with fewer than two
        networks (one is needed on each side).
    """
    groups = np.asarray(groups).astype(str)
    labels = np.asarray(labels).astype(str)
    if groups.ndim != 1 or groups.shape != labels.shape:
        raise ValueError(f"groups and labels must be 1-D of equal length, got shapes {groups.shape} and "
                         f"{labels.shape}")
    if groups.size == 0:
        raise ValueError("cannot split an empty table")
    n_splits = _check_int("n_splits", n_splits, 1)
    test_fraction = _check_fraction("test_fraction", test_fraction)

    network_ids, network_of_example = np.unique(groups, return_inverse=True)
    network_rule = np.empty(len(network_ids), dtype=labels.dtype)
    network_rule[network_of_example] = labels
    conflicting = np.flatnonzero(network_rule[network_of_example] != labels)
    if conflicting.size:
        bad = groups[conflicting[0]]
        rules = sorted(set(labels[groups == bad].tolist()))
        raise ValueError(f"network {bad!r} has examples labelled with different rules {rules}; each network "
                         f"must have a single rule")
    rules, networks_per_rule = np.unique(network_rule, return_counts=True)
    if len(rules) < 2:
        raise ValueError(f"need at least 2 rules to decode, got only {rules.tolist()}")
    too_few = [f"{rule!r} ({count})" for rule, count in zip(rules.tolist(), networks_per_rule.tolist()) if count < 2]
    if too_few:
        raise ValueError(f"every rule needs at least 2 networks (one for training, one for testing); too "
                         f"few networks for: {', '.join(too_few)}")

    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(network_rule == rule) for rule in rules]
    splits = []
    for _ in range(n_splits):
        test_networks = []
        for member in members:
            n_test = min(max(int(math.floor(test_fraction * len(member) + 0.5)), 1), len(member) - 1)
            test_networks.append(rng.permutation(member)[:n_test])
        is_test = np.zeros(len(network_ids), dtype=bool)
        is_test[np.concatenate(test_networks)] = True
        test_example = is_test[network_of_example]
        splits.append((np.flatnonzero(~test_example).astype(np.int64), np.flatnonzero(test_example).astype(np.int64)))
    return splits


def class_scores(estimator: Any, X: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, str]:
    """Per-example class scores used to combine the layers of one network.

    Parameters
    ----------
    estimator : fitted classifier
        Must have ``classes_`` and ``predict``.
    X : ndarray, shape (n_examples, n_features)
    classes : sequence of str, length n_classes
        Column order of the result (classes the estimator never saw get score 0).

    Returns
    -------
    scores : ndarray of float64, shape (n_examples, n_classes)
        Non-negative, each row sums to 1.
    method : {"mean_proba", "mean_softmax_decision", "vote"}
        ``predict_proba`` when the estimator has it; otherwise the softmax over classes of
        ``decision_function`` (binary: ``[0, d]``, i.e. a logistic of the margin); otherwise the one-hot
        of ``predict``.
    """
    estimator_classes = np.asarray(estimator.classes_).astype(str)
    if hasattr(estimator, "predict_proba"):
        raw, method = np.asarray(estimator.predict_proba(X), dtype=np.float64), "mean_proba"
    elif hasattr(estimator, "decision_function"):
        decision = np.asarray(estimator.decision_function(X), dtype=np.float64)
        if decision.ndim == 1:
            decision = np.column_stack([np.zeros_like(decision), decision])
        decision = decision - decision.max(axis=1, keepdims=True)
        raw = np.exp(decision)
        raw /= raw.sum(axis=1, keepdims=True)
        method = "mean_softmax_decision"
    else:
        predicted = np.asarray(estimator.predict(X)).astype(str)
        raw, method = (predicted[:, None] == estimator_classes[None, :]).astype(np.float64), "vote"
    classes = np.asarray(classes).astype(str)
    scores = np.zeros((raw.shape[0], len(classes)))
    position = {c: i for i, c in enumerate(classes.tolist())}
    for column, name in enumerate(estimator_classes.tolist()):
        if name in position:
            scores[:, position[name]] = raw[:, column]
    return scores, method


def network_predictions(scores: np.ndarray, network_ids: Sequence[str] | np.ndarray,
                        classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Combine layer-level class scores into one prediction per network.

    The scores of a network's layers are averaged and the class with the highest mean wins (ties go to
    the earliest class in ``classes``).

    Parameters
    ----------
    scores : ndarray, shape (n_examples, n_classes)
        E.g. from :func:`class_scores`.
    network_ids : array-like of str, shape (n_examples,)
    classes : sequence of str, length n_classes

    Returns
    -------
    networks : ndarray of str, shape (n_networks,)
        Sorted distinct network ids.
    predicted : ndarray of str, shape (n_networks,)
        Predicted class of each network.

    Examples
    --------
    >>> scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    >>> network_predictions(scores, ["a", "a", "b"], ["fa", "sgd"])[1].tolist()
    ['fa', 'sgd']
    """
    scores = np.asarray(scores, dtype=np.float64)
    networks, inverse = np.unique(np.asarray(network_ids).astype(str), return_inverse=True)
    totals = np.zeros((len(networks), scores.shape[1]))
    np.add.at(totals, inverse, scores)
    means = totals / np.bincount(inverse, minlength=len(networks))[:, None]
    return networks, np.asarray(classes).astype(str)[np.argmax(means, axis=1)]


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Outcome of :func:`evaluate`.

    Attributes
    ----------
    decoder : str
        Decoder name (or estimator class name).
    combination : str
        How layers were combined into a network prediction: ``"mean_proba"``,
        ``"mean_softmax_decision"`` or ``"vote"`` (see :func:`class_scores`).
    classes : tuple of str
        Class order of the confusion matrices.
    layer_accuracy, layer_balanced_accuracy : ndarray of float64, shape (n_splits,)
        Per split, over test examples (layers).
    network_accuracy, network_balanced_accuracy : ndarray of float64, shape (n_splits,)
        Per split, over test networks.
    layer_confusion_counts, network_confusion_counts : ndarray of int64, shape (n_classes, n_classes)
        Summed over splits; rows are the true rule, columns the predicted rule.
    predictions : tuple of dict
        One row per split x test network: ``split``, ``network_id``, ``rule``, ``predicted_rule``,
        ``n_layers``, ``correct``.
    layer_predictions : tuple of dict
        One row per split x test example: ``split``, ``network_id``, ``layer``, ``depth_position``,
        ``rule``, ``predicted_rule``, ``correct``.
    n_examples, n_networks : int
        Size of the evaluated table.
    test_fraction : float
    seed : int
    estimators : tuple
        The fitted decoder of each split (empty unless ``return_estimators=True``).
    """

    decoder: str
    combination: str
    classes: tuple[str, ...]
    layer_accuracy: np.ndarray
    layer_balanced_accuracy: np.ndarray
    network_accuracy: np.ndarray
    network_balanced_accuracy: np.ndarray
    layer_confusion_counts: np.ndarray
    network_confusion_counts: np.ndarray
    predictions: tuple[dict[str, Any], ...] = field(repr=False)
    layer_predictions: tuple[dict[str, Any], ...] = field(repr=False)
    n_examples: int = 0
    n_networks: int = 0
    test_fraction: float = 0.25
    seed: int = 0
    estimators: tuple = field(default=(), repr=False)

    @property
    def n_splits(self) -> int:
        return len(self.layer_accuracy)

    @staticmethod
    def _row_normalize(counts: np.ndarray) -> np.ndarray:
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

    @property
    def layer_confusion(self) -> np.ndarray:
        """Row-normalized layer-level confusion, shape (n_classes, n_classes); empty rows are 0."""
        return self._row_normalize(self.layer_confusion_counts)

    @property
    def network_confusion(self) -> np.ndarray:
        """Row-normalized network-level confusion, shape (n_classes, n_classes); empty rows are 0."""
        return self._row_normalize(self.network_confusion_counts)

    @property
    def chance(self) -> float:
        """``1 / n_classes`` (balanced-accuracy chance; the permutation null is the better reference)."""
        return 1.0 / len(self.classes)

    def summary(self) -> dict[str, Any]:
        """Plain, JSON-serializable summary (floats, ints, str and lists; a NaN s.e.m. becomes None).

        Returns
        -------
        dict
            ``decoder``, ``combination``, ``classes``, ``n_splits``, ``n_examples``, ``n_networks``,
            ``test_fraction``, ``seed``, ``chance``; for each of ``layer_accuracy``,
            ``layer_balanced_accuracy``, ``network_accuracy``, ``network_balanced_accuracy``: ``<name>_mean``,
            ``<name>_sem`` and ``<name>_per_split``; ``layer_confusion`` and ``network_confusion``
            (row-normalized, nested lists in ``classes`` order).
        """
        def plain(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        out: dict[str, Any] = {
            "decoder": self.decoder, "combination": self.combination, "classes": list(self.classes),
            "n_splits": self.n_splits, "n_examples": int(self.n_examples), "n_networks": int(self.n_networks),
            "test_fraction": float(self.test_fraction), "seed": int(self.seed), "chance": self.chance,
        }
        for name in ("layer_accuracy", "layer_balanced_accuracy", "network_accuracy", "network_balanced_accuracy"):
            values = getattr(self, name)
            out[f"{name}_mean"] = float(np.mean(values))
            out[f"{name}_sem"] = plain(sem(values))
            out[f"{name}_per_split"] = [float(v) for v in values]
        out["layer_confusion"] = self.layer_confusion.tolist()
        out["network_confusion"] = self.network_confusion.tolist()
        return out


def _decoder_seed(seed: int, split: int) -> int:
    return int(np.random.SeedSequence((seed, split)).generate_state(1)[0])


def _run_split(decoder: Any, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
               classes: tuple[str, ...], seed: int) -> dict[str, Any]:
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    estimator = make_decoder(decoder, seed=seed) if isinstance(decoder, str) else clone(decoder)
    # one BLAS thread per fit: parallelism is across splits (n_jobs); on these small matrices threaded BLAS
    # was up to 10x slower than one thread when another process shared the cores
    with threadpool_limits(limits=1):
        estimator.fit(X[train], y[train])
        predicted = np.asarray(estimator.predict(X[test])).astype(str)
        scores, method = class_scores(estimator, X[test], classes)
    return {"estimator": estimator, "predicted": predicted, "scores": scores, "method": method}


def evaluate(table: FeatureTable, decoder: str | Any = "random_forest", n_splits: int = 10,
             test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
             return_estimators: bool = False) -> EvaluationResult:
    """Cross-validate a decoder of the learning rule with splits grouped by network.

    For each of ``n_splits`` splits from :func:`grouped_splits`, the decoder is fitted on the training
    networks' layers and predicts every test layer. Network-level predictions combine a network's test
    layers with :func:`network_predictions`: the mean of ``predict_proba`` for decoders that have it
    (random forest, logistic), the mean of the softmax of ``decision_function`` for those that do not
    (linear SVM), and one-hot votes for estimators with neither (ties: earliest class).

    Parameters
    ----------
    table : FeatureTable
    decoder : str or estimator, default="random_forest"
        A name from :data:`virtual_lab.analysis.decoders.DECODERS` (built with a per-split seed derived from
        ``seed``), or an unfitted scikit-learn classifier (cloned for each split).
    n_splits : int, default=10
    test_fraction : float, default=0.25
        Fraction of each rule's networks held out per split.
    seed : int, default=0
        Seed of the splits (as in :func:`grouped_splits`) and of the decoders.
    n_jobs : int, default=1
        Splits fitted in parallel with joblib (each decoder itself uses one core).
    return_estimators : bool, default=False
        Keep each split's fitted decoder in the result (e.g. for feature importances).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        Fewer than two rules, a rule with fewer than two networks, an unknown decoder name, or invalid
        ``n_splits`` / ``test_fraction``.
    """
    from joblib import Parallel, delayed
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    if not isinstance(table, FeatureTable):
        raise TypeError(f"table must be a FeatureTable, got {type(table).__name__}")
    if isinstance(decoder, str):
        make_decoder(decoder)  # fail early with a did-you-mean message
        decoder_name = decoder
    elif hasattr(decoder, "fit") and hasattr(decoder, "predict"):
        decoder_name = type(decoder).__name__
    else:
        raise TypeError(f"decoder must be a decoder name or a scikit-learn classifier, got {type(decoder).__name__}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: all cores), got {n_jobs!r}")
    seed = _check_int("seed", seed, 0)

    splits = grouped_splits(table.network_id, table.rule, n_splits=n_splits, test_fraction=test_fraction, seed=seed)
    classes = table.classes
    X = np.asarray(table.X, dtype=np.float64)
    y = np.asarray(table.rule).astype(str)
    groups = np.asarray(table.network_id).astype(str)

    outputs = Parallel(n_jobs=n_jobs)(
        delayed(_run_split)(decoder, X, y, train, test, classes, _decoder_seed(seed, index))
        for index, (train, test) in enumerate(splits))

    n_classes = len(classes)
    layer_counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    network_counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    metrics = {name: [] for name in ("layer", "layer_bal", "network", "network_bal")}
    rows, layer_rows, estimators, methods = [], [], [], set()
    for index, ((_, test), output) in enumerate(zip(splits, outputs)):
        true, predicted = y[test], output["predicted"]
        metrics["layer"].append(float(np.mean(true == predicted)))
        metrics["layer_bal"].append(float(balanced_accuracy_score(true, predicted)))
        layer_counts += confusion_matrix(true, predicted, labels=list(classes))
        networks, network_predicted = network_predictions(output["scores"], groups[test], classes)
        first = {}
        for position, network in zip(test.tolist(), groups[test].tolist()):
            first.setdefault(network, position)
        network_true = np.array([y[first[n]] for n in networks.tolist()], dtype=str)
        metrics["network"].append(float(np.mean(network_true == network_predicted)))
        metrics["network_bal"].append(float(balanced_accuracy_score(network_true, network_predicted)))
        network_counts += confusion_matrix(network_true, network_predicted, labels=list(classes))
        n_layers = dict(zip(*np.unique(groups[test], return_counts=True)))
        for network, rule, guess in zip(networks.tolist(), network_true.tolist(), network_predicted.tolist()):
            rows.append({"split": index, "network_id": network, "rule": rule, "predicted_rule": guess,
                         "n_layers": int(n_layers[network]), "correct": rule == guess})
        for position, guess in zip(test.tolist(), predicted.tolist()):
            layer_rows.append({"split": index, "network_id": str(groups[position]),
                               "layer": str(table.layer[position]),
                               "depth_position": str(table.depth_position[position]),
                               "rule": str(y[position]), "predicted_rule": guess,
                               "correct": bool(y[position] == guess)})
        methods.add(output["method"])
        if return_estimators:
            estimators.append(output["estimator"])

    return EvaluationResult(
        decoder=decoder_name,
        combination="+".join(sorted(methods)),
        classes=classes,
        layer_accuracy=np.array(metrics["layer"]),
        layer_balanced_accuracy=np.array(metrics["layer_bal"]),
        network_accuracy=np.array(metrics["network"]),
        network_balanced_accuracy=np.array(metrics["network_bal"]),
        layer_confusion_counts=layer_counts,
        network_confusion_counts=network_counts,
        predictions=tuple(rows),
        layer_predictions=tuple(layer_rows),
        n_examples=table.n_examples,
        n_networks=len(np.unique(groups)),
        test_fraction=float(test_fraction),
        seed=seed,
        estimators=tuple(estimators),
    )
