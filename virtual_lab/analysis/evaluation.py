"""Cross-validated decoding of the learning rule, grouped by network.

Every split is drawn at the level of *networks*: all layers (examples) of one network fall on the same
side, so a decoder can never recognise a network it has already seen instead of its learning rule. Splits
are stratified by rule (each rule's networks are split ~75/25), as the paper's category-balanced splits
were, but over networks rather than layers. The paper's own splits, drawn per *layer*
(:func:`layer_splits`), are available with ``evaluate(..., split="layer")`` for comparison: they let
layers of one network sit on both sides, so a decoder can profit from recognising the network.

Two accuracies are reported per split: **layer level** (each test example, i.e. one layer of one network,
predicted on its own) and **network level** (the layer predictions of one network combined into one
prediction; see :func:`network_predictions`). Beyond accuracy, an :class:`EvaluationResult` gives
balanced accuracy, row-normalized confusion, per-class d' (:func:`dprime`), a Wilson interval on the
network-level accuracy (:func:`wilson_interval`) and feature importances aggregated by observable and by
measure. :func:`permutation_test` re-runs the whole cross-validation with rule labels shuffled across
networks.

References
----------
Hautus, M. J. (1995). Corrections for extreme proportions and their biasing effects on estimated values
of d'. Behavior Research Methods, Instruments, & Computers 27, 46-51. doi:10.3758/BF03203619
Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference. JASA 22,
209-212. doi:10.1080/01621459.1927.10502953
Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Stat. Appl. Genet. Mol.
Biol. 9(1). doi:10.2202/1544-6115.1585
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.decoders import make_decoder, resolve_param_grid
from virtual_lab.analysis.observables import FeatureTable

logger = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "PermutationResult", "SPLIT_KINDS", "class_scores", "cross_validate", "dprime",
           "evaluate", "grouped_splits", "layer_splits", "network_predictions", "permutation_test", "sem",
           "wilson_interval"]

COMBINATIONS = ("mean_proba", "mean_softmax_decision", "vote")
SPLIT_KINDS = ("grouped", "layer")
"""``"grouped"``: splits over networks (the default, leak-free); ``"layer"``: the paper's category-balanced
splits over layers (examples), where one network's layers can sit on both sides."""


def sem(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)``; NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan")
    return float(values.std(ddof=1) / math.sqrt(values.size))


def _check_rule_counts(labels: np.ndarray, what: str) -> np.ndarray:
    """The distinct rules of ``labels``; raises unless there are 2+ rules with 2+ items each.

    ``what`` completes "every rule needs at least 2 ..." and names the items, e.g. ``"examples for
    layer-level splits; too few"``.
    """
    rules, counts = np.unique(labels, return_counts=True)
    if len(rules) < 2:
        raise ValueError(f"need at least 2 rules to decode, got only {rules.tolist()}")
    too_few = [f"{rule!r} ({count})" for rule, count in zip(rules.tolist(), counts.tolist()) if count < 2]
    if too_few:
        raise ValueError(f"every rule needs at least 2 {what} for: {', '.join(too_few)}")
    return rules


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _n_test(test_fraction: float, n: int) -> int:
    return min(max(int(math.floor(test_fraction * n + 0.5)), 1), n - 1)

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
    rules = _check_rule_counts(network_rule, "networks (one for training, one for testing); too few networks")

    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(network_rule == rule) for rule in rules]
    splits = []
    for _ in range(n_splits):
        test_networks = []
        for member in members:
            n_test = _n_test(test_fraction, len(member))
            test_networks.append(rng.permutation(member)[:n_test])
        is_test = np.zeros(len(network_ids), dtype=bool)
        is_test[np.concatenate(test_networks)] = True
        test_example = is_test[network_of_example]
        splits.append((np.flatnonzero(~test_example).astype(np.int64), np.flatnonzero(test_example).astype(np.int64)))
    return splits


def layer_splits(labels: Sequence[str] | np.ndarray, n_splits: int = 10, test_fraction: float = 0.25,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The paper's category-balanced splits, drawn over examples (layers), not networks.

    In every split each rule's examples are shuffled and ``round(test_fraction * n_examples_of_rule)`` of
    them (at least 1, at most all but 1) go to the test side, whatever network they come from. Offered to
    compare with :func:`grouped_splits`: layers of one network can fall on both sides, so a decoder may
    recognise the network rather than its rule.

    Parameters
    ----------
    labels : array-like of str, shape (n_examples,)
    n_splits : int, default=10
    test_fraction : float, default=0.25
    seed : int, default=0

    Returns
    -------
    list of (ndarray of int64, ndarray of int64), length n_splits
        ``(train_indices, test_indices)``, sorted.

    Raises
    ------
    ValueError
        Fewer than two rules, or a rule with fewer than two examples.
    """
    labels = np.asarray(labels).astype(str)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    n_splits = _check_int("n_splits", n_splits, 1)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    rules = _check_rule_counts(labels, "examples for layer-level splits; too few")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == rule) for rule in rules]
    splits = []
    for _ in range(n_splits):
        is_test = np.zeros(labels.size, dtype=bool)
        for member in members:
            is_test[rng.permutation(member)[:_n_test(test_fraction, len(member))]] = True
        splits.append((np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)))
    return splits


def wilson_interval(n_correct: float, n_total: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    n_correct : float
        Successes (may be fractional, e.g. ``accuracy * n``).
    n_total : float
        Trials, > 0.
    confidence : float, default=0.95

    Returns
    -------
    (float, float)
        Lower and upper bound.

    Examples
    --------
    >>> low, high = wilson_interval(8, 10)
    >>> round(low, 4), round(high, 4)
    (0.4902, 0.9433)
    """
    from scipy.stats import norm

    if not n_total > 0:
        raise ValueError(f"n_total must be > 0, got {n_total!r}")
    if not 0 <= n_correct <= n_total:
        raise ValueError(f"n_correct must lie in [0, n_total={n_total}], got {n_correct!r}")
    confidence = _check_fraction("confidence", confidence)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = n_correct / n_total
    denominator = 1 + z * z / n_total
    centre = (p + z * z / (2 * n_total)) / denominator
    half = z * math.sqrt(p * (1 - p) / n_total + z * z / (4 * n_total * n_total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def dprime(confusion_counts: np.ndarray, correction: str | None = "loglinear") -> np.ndarray:
    """Per-class sensitivity d' = Z(hit rate) - Z(false-alarm rate) from a confusion matrix.

    For class ``c``: hits are examples of ``c`` predicted ``c``; false alarms are examples of other classes
    predicted ``c``.

    Parameters
    ----------
    confusion_counts : ndarray of int, shape (n_classes, n_classes)
        Rows: true class; columns: predicted class (raw counts, not normalized).
    correction : {"loglinear", None}, default="loglinear"
        ``"loglinear"`` (Hautus 1995): add 0.5 to hit and false-alarm counts and 1 to their totals, so
        that perfect rates give a finite d'. ``None``: the raw rates (infinite d' at rates 0 or 1).

    Returns
    -------
    ndarray of float64, shape (n_classes,)
        NaN for a class with no examples (or, without correction, with no examples of other classes).

    Examples
    --------
    >>> float(np.round(dprime(np.array([[8, 2], [2, 8]]), correction=None)[0], 4))
    1.6832
    """
    from scipy.stats import norm

    counts = np.asarray(confusion_counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion_counts must be square, got shape {counts.shape}")
    if correction not in ("loglinear", None):
        raise ValueError(f"The 'correction' parameter must be one of {{'loglinear', None}}. Got {correction!r} instead.")
    hits = np.diag(counts)
    positives = counts.sum(axis=1)
    false_alarms = counts.sum(axis=0) - hits
    negatives = counts.sum() - positives
    if correction == "loglinear":
        hits, positives = hits + 0.5, positives + 1.0
        false_alarms, negatives = false_alarms + 0.5, negatives + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        hit_rate = hits / positives
        false_alarm_rate = false_alarms / negatives
        out = norm.ppf(hit_rate) - norm.ppf(false_alarm_rate)
    empty = np.asarray(confusion_counts).sum(axis=1) == 0
    out = np.where(empty, np.nan, out)
    return out.astype(np.float64)


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


def _plain(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


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
    split_kind : {"grouped", "layer", "generalization"}
        How the splits were drawn (see :data:`SPLIT_KINDS`; ``"generalization"`` for
        :func:`virtual_lab.analysis.controls.generalize`).
    feature_names : ndarray of FEATURE_NAME_DTYPE, shape (n_features,), or None
    feature_importances : ndarray of float64, shape (n_splits, n_features), or None
        Per split, normalized to sum 1: ``feature_importances_`` (random forest) or the mean absolute
        coefficient over classes (linear models, on standardized features); None when the decoder has
        neither (e.g. the Conv1D MLP) or reduces dimension first (PCA).
    best_params : tuple of dict
        Per split, the hyperparameters chosen by nested model selection (empty without a grid).
    param_grid : str
        ``"none"``, ``"small"``, ``"paper"`` or ``"custom"``.
    notes : tuple of str
        Anything the reader must know (e.g. features reduced to common checkpoints).
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
    split_kind: str = "grouped"
    feature_names: np.ndarray | None = field(default=None, repr=False)
    feature_importances: np.ndarray | None = field(default=None, repr=False)
    best_params: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    param_grid: str = "none"
    notes: tuple[str, ...] = ()

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

    @property
    def network_dprime(self) -> np.ndarray:
        """Per-class d' of the network-level predictions (pooled over splits), shape (n_classes,)."""
        return dprime(self.network_confusion_counts)

    @property
    def layer_dprime(self) -> np.ndarray:
        """Per-class d' of the layer-level predictions (pooled over splits), shape (n_classes,)."""
        return dprime(self.layer_confusion_counts)

    @property
    def n_test_networks(self) -> int:
        """Distinct networks that were ever on a test side."""
        return len({row["network_id"] for row in self.predictions})

    def network_accuracy_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Wilson interval on the network-level accuracy.

        The accuracy is pooled over every (split, test network) prediction; the number of trials is the
        number of *distinct* test networks (:attr:`n_test_networks`), not the number of predictions,
        because repeated splits re-test the same networks and add no independent evidence.

        Returns
        -------
        (float, float)
        """
        if not self.predictions:
            return float("nan"), float("nan")
        pooled = float(np.mean([row["correct"] for row in self.predictions]))
        n = self.n_test_networks
        return wilson_interval(pooled * n, n, confidence)

    def _aggregate_importance(self, keys: Sequence[str]) -> dict[str, float]:
        if self.feature_importances is None or self.feature_names is None:
            return {}
        mean = np.nanmean(self.feature_importances, axis=0)
        out: dict[str, float] = {}
        for value, record in zip(mean.tolist(), self.feature_names):
            name = "".join(str(record[k]) if k != "statistic" else "_" + str(record[k]) for k in keys)
            out[name] = out.get(name, 0.0) + float(value)
        return dict(sorted(out.items(), key=lambda item: -item[1]))

    def importance_by_observable(self) -> dict[str, float]:
        """Mean importance (over splits) summed over timepoints for each observable, largest first.

        Keys are observable names (``"weightabs_mean"``; the depth one-hot as ``"depthonehot_early"``...);
        the values sum to 1. Empty when the decoder gives no importances.
        """
        return self._aggregate_importance(("measure", "function", "statistic"))

    def importance_by_measure(self) -> dict[str, float]:
        """Mean importance summed over every feature of each measure (``weight``, ``act``, ``gradavg``,
        ``depth``), largest first; sums to 1. Empty when the decoder gives no importances."""
        return self._aggregate_importance(("measure",))

    def summary(self) -> dict[str, Any]:
        """Plain, JSON-serializable summary (floats, ints, str and lists; a NaN s.e.m. becomes None).

        Returns
        -------
        dict
            ``decoder``, ``combination``, ``classes``, ``n_splits``, ``n_examples``, ``n_networks``,
            ``test_fraction``, ``seed``, ``chance``; for each of ``layer_accuracy``,
            ``layer_balanced_accuracy``, ``network_accuracy``, ``network_balanced_accuracy``: ``<name>_mean``,
            ``<name>_sem`` and ``<name>_per_split``; ``layer_confusion`` and ``network_confusion``
            (row-normalized, nested lists in ``classes`` order). Also ``split`` (split kind),
            ``param_grid``, ``n_test_networks``, ``network_accuracy_pooled`` and
            ``network_accuracy_wilson95`` ([low, high]), ``network_dprime`` and ``layer_dprime`` (class ->
            d'), ``importance_by_measure`` and ``importance_by_observable`` (name -> share), ``best_params``
            (one dict per split) and ``notes``.
        """
        out: dict[str, Any] = {
            "decoder": self.decoder, "combination": self.combination, "classes": list(self.classes),
            "n_splits": self.n_splits, "n_examples": int(self.n_examples), "n_networks": int(self.n_networks),
            "test_fraction": float(self.test_fraction), "seed": int(self.seed), "chance": self.chance,
        }
        for name in ("layer_accuracy", "layer_balanced_accuracy", "network_accuracy", "network_balanced_accuracy"):
            values = getattr(self, name)
            out[f"{name}_mean"] = float(np.mean(values))
            out[f"{name}_sem"] = _plain(sem(values))
            out[f"{name}_per_split"] = [float(v) for v in values]
        out["layer_confusion"] = self.layer_confusion.tolist()
        out["network_confusion"] = self.network_confusion.tolist()
        out["split"] = self.split_kind
        out["param_grid"] = self.param_grid
        out["n_test_networks"] = self.n_test_networks
        out["network_accuracy_pooled"] = (float(np.mean([r["correct"] for r in self.predictions]))
                                          if self.predictions else None)
        out["network_accuracy_wilson95"] = [_plain(v) for v in self.network_accuracy_interval()]
        out["network_dprime"] = {c: _plain(v) for c, v in zip(self.classes, self.network_dprime)}
        out["layer_dprime"] = {c: _plain(v) for c, v in zip(self.classes, self.layer_dprime)}
        out["importance_by_measure"] = self.importance_by_measure()
        out["importance_by_observable"] = self.importance_by_observable()
        out["best_params"] = [{k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                               for k, v in params.items()} for params in self.best_params]
        out["notes"] = list(self.notes)
        return out


def _decoder_seed(seed: int, split: int) -> int:
    return int(np.random.SeedSequence((seed, split)).generate_state(1)[0])


def _table_layout(table: FeatureTable) -> dict[str, int]:
    """``n_timepoints`` and ``n_static`` of a table whose time-varying columns are timepoint-major."""
    names = table.feature_names
    n_static = int(np.sum(names["timepoint"] < 0))
    n_varying = table.n_features - n_static
    n_t = table.n_timepoints
    if n_t < 1 or n_varying % n_t or not np.all(names["timepoint"][:n_varying] >= 0):
        return {}
    return {"n_timepoints": n_t, "n_static": n_static}


def _configure(estimator: Any, layout: Mapping[str, int]) -> Any:
    """Tell time-series decoders (parameters ``*n_timepoints`` / ``*n_static`` left at None) the layout."""
    if not layout or not hasattr(estimator, "get_params"):
        return estimator
    params = estimator.get_params(deep=True)
    updates = {}
    for key, value in params.items():
        for name in ("n_timepoints", "n_static"):
            if (key == name or key.endswith("__" + name)) and value is None:
                updates[key] = layout[name]
    return estimator.set_params(**updates) if updates else estimator


def _importances(estimator: Any, n_features: int) -> np.ndarray | None:
    est = getattr(estimator, "best_estimator_", estimator)
    final = est[-1] if hasattr(est, "steps") else est
    if hasattr(est, "steps"):
        for _, step in est.steps[:-1]:
            if step not in (None, "passthrough") and type(step).__name__ not in ("StandardScaler", "RobustScaler",
                                                                                 "MinMaxScaler"):
                return None  # a step that changes the feature space (e.g. PCA)
    if hasattr(final, "feature_importances_"):
        values = np.asarray(final.feature_importances_, dtype=np.float64)
    elif hasattr(final, "coef_"):
        coef = np.asarray(final.coef_, dtype=np.float64)
        values = np.abs(coef.reshape(-1, coef.shape[-1])).mean(axis=0)
    else:
        return None
    if values.shape != (n_features,):
        return None
    total = values.sum()
    return values / total if total > 0 else values


def _run_split(decoder: Any, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
               classes: tuple[str, ...], seed: int, layout: Mapping[str, int] | None = None,
               grid: list | None = None, inner: list | None = None) -> dict[str, Any]:
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    estimator = make_decoder(decoder, seed=seed) if isinstance(decoder, str) else clone(decoder)
    estimator = _configure(estimator, layout or {})
    best_params: dict[str, Any] = {}
    # one BLAS thread per fit: parallelism is across splits (n_jobs); on these small matrices threaded BLAS
    # was up to 10x slower than one thread when another process shared the cores
    with threadpool_limits(limits=1):
        if grid:
            from sklearn.model_selection import GridSearchCV

            search = GridSearchCV(estimator, grid, cv=inner, scoring="accuracy", n_jobs=1, refit=True,
                                  error_score="raise")
            search.fit(X[train], y[train])
            best_params = dict(search.best_params_)
            estimator = search.best_estimator_
        else:
            estimator.fit(X[train], y[train])
        predicted = np.asarray(estimator.predict(X[test])).astype(str)
        scores, method = class_scores(estimator, X[test], classes)
    return {"estimator": estimator, "predicted": predicted, "scores": scores, "method": method,
            "importances": _importances(estimator, X.shape[1]), "best_params": best_params}


def _decoder_name(decoder: Any) -> str:
    if isinstance(decoder, str):
        make_decoder(decoder)  # fail early with a did-you-mean message
        return decoder
    if hasattr(decoder, "fit") and hasattr(decoder, "predict"):
        return type(decoder).__name__
    raise TypeError(f"decoder must be a decoder name or a scikit-learn classifier, got {type(decoder).__name__}")


def _check_n_jobs(n_jobs: object) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: all cores), got {n_jobs!r}")
    return int(n_jobs)


def _inner_splits(kind: str, groups: np.ndarray, labels: np.ndarray, n_splits: int, test_fraction: float,
                  seed: int, outer: int) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        if kind == "layer":
            return layer_splits(labels, n_splits=n_splits, test_fraction=test_fraction, seed=seed)
        return grouped_splits(groups, labels, n_splits=n_splits, test_fraction=test_fraction, seed=seed)
    except ValueError as error:
        raise ValueError(f"nested model selection needs its own train/test split inside the training part of "
                         f"split {outer}, and it cannot: {error}. Add networks per rule or pass "
                         f"param_grid=None") from None


def cross_validate(table: FeatureTable, decoder: str | Any, splits: Sequence[tuple[np.ndarray, np.ndarray]], *,
                   seed: int = 0, n_jobs: int = 1, return_estimators: bool = False,
                   param_grid: str | Mapping | Sequence | None = None, inner_splits: int = 3,
                   test_fraction: float = 0.25, split_kind: str = "grouped",
                   notes: Sequence[str] = ()) -> EvaluationResult:
    """Fit and score a decoder on given splits (the engine of :func:`evaluate`).

    Parameters
    ----------
    table : FeatureTable
    decoder : str or estimator
        As in :func:`evaluate`.
    splits : sequence of (ndarray of int, ndarray of int)
        ``(train_indices, test_indices)`` into the table's examples; each side non-empty.
    seed : int, default=0
        Seed of the decoders (split ``i`` gets a seed derived from ``(seed, i)``) and inner splits.
    n_jobs : int, default=1
    return_estimators : bool, default=False
    param_grid : {"small", "paper"}, dict, list of dict or None, default=None
        Nested model selection: a grid searched inside every training part with
        :class:`~sklearn.model_selection.GridSearchCV` over ``inner_splits`` inner splits of the same kind
        as ``split_kind`` (grouped by network unless ``"layer"``). ``"small"`` / ``"paper"`` look up
        :data:`~virtual_lab.analysis.decoders.SMALL_PARAM_GRIDS` / ``PAPER_PARAM_GRIDS`` for a named
        decoder. None: the decoder's defaults, no selection.
    inner_splits : int, default=3
    test_fraction : float, default=0.25
        Held-out fraction of the inner splits (and stored in the result).
    split_kind : str, default="grouped"
        Stored in the result; also the kind of the inner splits.
    notes : sequence of str
        Stored in the result.

    Returns
    -------
    EvaluationResult
    """
    from joblib import Parallel, delayed
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    if not isinstance(table, FeatureTable):
        raise TypeError(f"table must be a FeatureTable, got {type(table).__name__}")
    decoder_name = _decoder_name(decoder)
    n_jobs = _check_n_jobs(n_jobs)
    seed = _check_int("seed", seed, 0)
    inner_splits = _check_int("inner_splits", inner_splits, 2)
    grid, grid_name = resolve_param_grid(param_grid, decoder_name if isinstance(decoder, str) else None)
    classes = tuple(sorted(set(np.asarray(table.rule).astype(str).tolist())))
    X = np.asarray(table.X, dtype=np.float64)
    y = np.asarray(table.rule).astype(str)
    groups = np.asarray(table.network_id).astype(str)
    splits = [(np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)) for train, test in splits]
    if not splits:
        raise ValueError("no splits to evaluate")
    for index, (train, test) in enumerate(splits):
        if train.size == 0 or test.size == 0:
            raise ValueError(f"split {index} has an empty {'training' if train.size == 0 else 'test'} side")
        if len(np.unique(y[train])) < 2:
            raise ValueError(f"split {index}: the training side has a single rule {sorted(set(y[train]))}; "
                             f"need at least 2 rules to train a decoder")
    inner = [None] * len(splits)
    if grid:
        inner = [_inner_splits(split_kind, groups[train], y[train], inner_splits, test_fraction,
                               _decoder_seed(seed + 1, index), index) for index, (train, _) in enumerate(splits)]
    layout = _table_layout(table)
    from virtual_lab.progress import progress_bar

    outputs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_run_split)(decoder, X, y, train, test, classes, _decoder_seed(seed, index), layout, grid,
                            inner[index])
        for index, (train, test) in enumerate(splits))
    outputs = list(progress_bar(outputs, total=len(splits), desc=f"decoding ({decoder_name})", unit="splits"))

    n_classes = len(classes)
    layer_counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    network_counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    metrics = {name: [] for name in ("layer", "layer_bal", "network", "network_bal")}
    rows, layer_rows, estimators, methods, importances, best = [], [], [], set(), [], []
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
        importances.append(output["importances"])
        best.append(output["best_params"])
        if return_estimators:
            estimators.append(output["estimator"])

    stacked = None
    if all(value is not None for value in importances):
        stacked = np.vstack(importances)
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
        split_kind=split_kind,
        feature_names=table.feature_names,
        feature_importances=stacked,
        best_params=tuple(best) if grid else (),
        param_grid=grid_name,
        notes=tuple(notes),
    )


def evaluate(table: FeatureTable, decoder: str | Any = "random_forest", n_splits: int = 10,
             test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
             return_estimators: bool = False, *, split: str = "grouped",
             param_grid: str | Mapping | Sequence | None = None, inner_splits: int = 3) -> EvaluationResult:
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
        Fraction of each rule's networks (layers, with ``split="layer"``) held out per split.
    seed : int, default=0
        Seed of the splits (as in :func:`grouped_splits`) and of the decoders.
    n_jobs : int, default=1
        Splits fitted in parallel with joblib (each decoder itself uses one core).
    return_estimators : bool, default=False
        Keep each split's fitted decoder in the result.
    split : {"grouped", "layer"}, default="grouped"
        ``"layer"``: the paper's category-balanced splits over layers (:func:`layer_splits`), which can
        leak a network's identity; for comparison only.
    param_grid : {"small", "paper"}, dict, list of dict or None, default=None
        Nested model selection inside every training part (see :func:`cross_validate`).
    inner_splits : int, default=3
        Inner splits of the nested model selection.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        Fewer than two rules, a rule with fewer than two networks (or, with a grid, too few networks for
        the inner splits), an unknown decoder name, split kind or grid, or invalid ``n_splits`` /
        ``test_fraction``.
    """
    if not isinstance(table, FeatureTable):
        raise TypeError(f"table must be a FeatureTable, got {type(table).__name__}")
    _decoder_name(decoder)
    _check_n_jobs(n_jobs)
    seed = _check_int("seed", seed, 0)
    if split not in SPLIT_KINDS:
        from virtual_lab.analysis.observables import _did_you_mean

        raise ValueError(f"The 'split' parameter must be one of {{{', '.join(map(repr, SPLIT_KINDS))}}}. "
                         f"Got {split!r} instead.{_did_you_mean(split, SPLIT_KINDS)}")
    if split == "layer":
        splits = layer_splits(table.rule, n_splits=n_splits, test_fraction=test_fraction, seed=seed)
    else:
        splits = grouped_splits(table.network_id, table.rule, n_splits=n_splits, test_fraction=test_fraction,
                                seed=seed)
    return cross_validate(table, decoder, splits, seed=seed, n_jobs=n_jobs, return_estimators=return_estimators,
                          param_grid=param_grid, inner_splits=inner_splits, test_fraction=test_fraction,
                          split_kind=split)


# -- permutation test --------------------------------------------------------------------------------
PERMUTATION_METRICS = ("network_accuracy", "layer_accuracy", "network_balanced_accuracy",
                       "layer_balanced_accuracy")


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`permutation_test`.

    Attributes
    ----------
    metric : str
        Which accuracy (mean over splits) was compared.
    observed : float
        The metric with the true labels.
    null : ndarray of float64, shape (n_permutations,)
        The metric with rule labels shuffled across networks, whole cross-validation re-run each time.
    p_value : float
        ``(b + 1) / (m + 1)``, ``b`` = permutations scoring >= observed, ``m`` = permutations.
    seed : int
    """

    metric: str
    observed: float
    null: np.ndarray = field(repr=False)
    p_value: float
    seed: int

    @property
    def n_permutations(self) -> int:
        return len(self.null)

    @property
    def null_mean(self) -> float:
        """Empirical chance level."""
        return float(np.mean(self.null))

    def summary(self) -> dict[str, Any]:
        """JSON-serializable: ``metric``, ``observed``, ``p_value``, ``n_permutations``, ``null_mean``,
        ``null_sd``, ``null_95th_percentile``, ``seed``, ``null`` (list)."""
        return {"metric": self.metric, "observed": self.observed, "p_value": self.p_value,
                "n_permutations": self.n_permutations, "null_mean": self.null_mean,
                "null_sd": float(np.std(self.null, ddof=1)) if self.n_permutations > 1 else None,
                "null_95th_percentile": float(np.percentile(self.null, 95)), "seed": self.seed,
                "null": [float(v) for v in self.null]}


def _permuted_rules(table: FeatureTable, seed: int, index: int) -> np.ndarray:
    networks, inverse = np.unique(np.asarray(table.network_id).astype(str), return_inverse=True)
    labels = np.empty(len(networks), dtype=object)
    labels[inverse] = np.asarray(table.rule).astype(str)
    rng = np.random.default_rng(np.random.SeedSequence((seed, 7919, index)))
    return labels[rng.permutation(len(networks))][inverse].astype(str)


def _null_score(table: FeatureTable, decoder: Any, seed: int, index: int, metric: str, kwargs: dict) -> float:
    import dataclasses

    from virtual_lab.progress import quiet

    shuffled = dataclasses.replace(table, rule=_permuted_rules(table, seed, index))
    with quiet():  # one bar over the shuffles, not one per shuffle
        result = evaluate(shuffled, decoder, seed=seed, n_jobs=1, **kwargs)
    return float(np.mean(getattr(result, metric)))


def permutation_test(table: FeatureTable, decoder: str | Any = "random_forest", n_permutations: int = 100, *,
                     metric: str = "network_accuracy", seed: int = 0, n_jobs: int = 1,
                     observed: EvaluationResult | None = None, **evaluate_kwargs: Any) -> PermutationResult:
    """Network-level permutation test of decoding accuracy.

    Rule labels are shuffled *across networks* (every layer of a network keeps one label; the number of
    networks per rule is preserved) and the whole cross-validation of :func:`evaluate` is re-run for each
    shuffle. (:func:`sklearn.model_selection.permutation_test_score` with ``groups`` permutes labels
    *within* groups, which is a no-op when a network has a single label.)

    Parameters
    ----------
    table : FeatureTable
    decoder : str or estimator, default="random_forest"
    n_permutations : int, default=100
    metric : {"network_accuracy", "layer_accuracy", "network_balanced_accuracy", "layer_balanced_accuracy"}
        Mean over splits.
    seed : int, default=0
        Seed of the splits and decoders (as in :func:`evaluate`) and of the shuffles.
    n_jobs : int, default=1
        Permutations run in parallel.
    observed : EvaluationResult, optional
        The unpermuted result, if already computed with the same arguments.
    **evaluate_kwargs
        ``n_splits``, ``test_fraction``, ``split``, ``param_grid``, ``inner_splits`` for :func:`evaluate`.

    Returns
    -------
    PermutationResult
        ``p_value = (b + 1) / (m + 1)`` (Phipson & Smyth 2010).
    """
    from joblib import Parallel, delayed

    n_permutations = _check_int("n_permutations", n_permutations, 1)
    if metric not in PERMUTATION_METRICS:
        from virtual_lab.analysis.observables import _did_you_mean

        raise ValueError(f"The 'metric' parameter must be one of {{{', '.join(map(repr, PERMUTATION_METRICS))}}}. "
                         f"Got {metric!r} instead.{_did_you_mean(metric, PERMUTATION_METRICS)}")
    n_jobs = _check_n_jobs(n_jobs)
    seed = _check_int("seed", seed, 0)
    if observed is None:
        observed = evaluate(table, decoder, seed=seed, n_jobs=n_jobs, **evaluate_kwargs)
    value = float(np.mean(getattr(observed, metric)))
    from virtual_lab.progress import progress_bar

    null = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_null_score)(table, decoder, seed, index, metric, evaluate_kwargs) for index in range(n_permutations))
    null = list(progress_bar(null, total=n_permutations, desc="permutation test", unit="shuffles"))
    null = np.asarray(null, dtype=np.float64)
    b = int(np.sum(null >= value))
    return PermutationResult(metric=metric, observed=value, null=null, p_value=(b + 1) / (n_permutations + 1),
                             seed=seed)
