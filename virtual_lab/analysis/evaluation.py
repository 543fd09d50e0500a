"""Cross-validated decoding of the learning rule, grouped by network.

:func:`evaluate` draws the splits (over networks by default; see :mod:`virtual_lab.analysis.splits`) and
:func:`cross_validate` fits and scores a decoder on them. Two accuracies are reported per split: **layer
level** (each test example, i.e. one layer of one network, predicted on its own) and **network level**
(the layer predictions of one network combined into one prediction; see
:func:`~virtual_lab.analysis.fitting.network_predictions`). Beyond accuracy, an :class:`EvaluationResult`
gives balanced accuracy, row-normalized confusion, per-class d' (:func:`dprime`), a Wilson interval on the
network-level accuracy (:func:`virtual_lab.stats.wilson_interval`) and feature importances aggregated by observable and by
measure. :func:`virtual_lab.analysis.permutation.permutation_test` re-runs the whole cross-validation with
rule labels shuffled across networks.

References
----------
Hautus, M. J. (1995). Corrections for extreme proportions and their biasing effects on estimated values
of d'. Behavior Research Methods, Instruments, & Computers 27, 46-51. doi:10.3758/BF03203619
Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference. JASA 22,
209-212. doi:10.1080/01621459.1927.10502953
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis import result_cache
from virtual_lab.analysis.decoders import resolve_param_grid
from virtual_lab.analysis.fitting import (_check_n_jobs, _decoder_name, _decoder_seed, _fit_splits,
                                          network_predictions)
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.analysis.splits import SPLIT_KINDS, grouped_splits, layer_splits
from virtual_lab.stats import sem, wilson_interval
from virtual_lab.validation import check_choice, check_int

logger = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "cross_validate", "dprime", "evaluate"]


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
        ``"mean_softmax_decision"`` or ``"vote"`` (see :func:`~virtual_lab.analysis.fitting.class_scores`).
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
        How the splits were drawn (see :data:`~virtual_lab.analysis.splits.SPLIT_KINDS`; ``"generalization"`` for
        :func:`virtual_lab.analysis.generalization.generalize`).
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


def _checked_splits(splits: Sequence[tuple[np.ndarray, np.ndarray]], y: np.ndarray
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``splits`` as int64 arrays; raises on none, an empty side, or a training side with a single rule."""
    splits = [(np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)) for train, test in splits]
    if not splits:
        raise ValueError("no splits to evaluate")
    for index, (train, test) in enumerate(splits):
        if train.size == 0 or test.size == 0:
            raise ValueError(f"split {index} has an empty {'training' if train.size == 0 else 'test'} side")
        if len(np.unique(y[train])) < 2:
            raise ValueError(f"split {index}: the training side has a single rule {sorted(set(y[train]))}; "
                             f"need at least 2 rules to train a decoder")
    return splits


def _score_split(table: FeatureTable, classes: tuple[str, ...], index: int, test: np.ndarray,
                 output: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracies, confusion counts and prediction rows of split ``index``'s test side."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    y = np.asarray(table.rule).astype(str)
    groups = np.asarray(table.network_id).astype(str)
    true, predicted = y[test], output["predicted"]
    networks, network_predicted = network_predictions(output["scores"], groups[test], classes)
    first = {}
    for position, network in zip(test.tolist(), groups[test].tolist()):
        first.setdefault(network, position)
    network_true = np.array([y[first[n]] for n in networks.tolist()], dtype=str)
    n_layers = dict(zip(*np.unique(groups[test], return_counts=True)))
    rows = [{"split": index, "network_id": network, "rule": rule, "predicted_rule": guess,
             "n_layers": int(n_layers[network]), "correct": rule == guess}
            for network, rule, guess in zip(networks.tolist(), network_true.tolist(), network_predicted.tolist())]
    layer_rows = [{"split": index, "network_id": str(groups[position]), "layer": str(table.layer[position]),
                   "depth_position": str(table.depth_position[position]), "rule": str(y[position]),
                   "predicted_rule": guess, "correct": bool(y[position] == guess)}
                  for position, guess in zip(test.tolist(), predicted.tolist())]
    return {"layer": float(np.mean(true == predicted)), "layer_bal": float(balanced_accuracy_score(true, predicted)),
            "network": float(np.mean(network_true == network_predicted)),
            "network_bal": float(balanced_accuracy_score(network_true, network_predicted)),
            "layer_counts": confusion_matrix(true, predicted, labels=list(classes)),
            "network_counts": confusion_matrix(network_true, network_predicted, labels=list(classes)),
            "rows": rows, "layer_rows": layer_rows}


def _collect(table: FeatureTable, decoder_name: str, classes: tuple[str, ...],
             splits: Sequence[tuple[np.ndarray, np.ndarray]], outputs: Sequence[Mapping[str, Any]], *,
             return_estimators: bool, with_best_params: bool, **stored: Any) -> EvaluationResult:
    """The result of the fitted splits: per-split metrics, pooled confusion counts, every prediction.

    ``stored``: the fields of :class:`EvaluationResult` that describe the run (``seed``, ``notes``...).
    """
    scored = [_score_split(table, classes, index, test, output)
              for index, ((_, test), output) in enumerate(zip(splits, outputs))]
    n_classes = len(classes)
    layer_counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    network_counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    for split in scored:
        layer_counts += split["layer_counts"]
        network_counts += split["network_counts"]
    importances = [output["importances"] for output in outputs]
    stacked = None
    if all(value is not None for value in importances):
        stacked = np.vstack(importances)
    return EvaluationResult(
        decoder=decoder_name,
        combination="+".join(sorted({output["method"] for output in outputs})),
        classes=classes,
        layer_accuracy=np.array([split["layer"] for split in scored]),
        layer_balanced_accuracy=np.array([split["layer_bal"] for split in scored]),
        network_accuracy=np.array([split["network"] for split in scored]),
        network_balanced_accuracy=np.array([split["network_bal"] for split in scored]),
        layer_confusion_counts=layer_counts,
        network_confusion_counts=network_counts,
        predictions=tuple(row for split in scored for row in split["rows"]),
        layer_predictions=tuple(row for split in scored for row in split["layer_rows"]),
        n_examples=table.n_examples,
        n_networks=len(np.unique(np.asarray(table.network_id).astype(str))),
        estimators=tuple(output["estimator"] for output in outputs) if return_estimators else (),
        feature_names=table.feature_names,
        feature_importances=stacked,
        best_params=tuple(output["best_params"] for output in outputs) if with_best_params else (),
        **stored,
    )


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
    if not isinstance(table, FeatureTable):
        raise TypeError(f"table must be a FeatureTable, got {type(table).__name__}")
    decoder_name = _decoder_name(decoder)
    n_jobs = _check_n_jobs(n_jobs)
    seed = check_int("seed", seed, low=0)
    inner_splits = check_int("inner_splits", inner_splits, low=2)
    grid, grid_name = resolve_param_grid(param_grid, decoder_name if isinstance(decoder, str) else None)
    classes = tuple(sorted(set(np.asarray(table.rule).astype(str).tolist())))
    y = np.asarray(table.rule).astype(str)
    groups = np.asarray(table.network_id).astype(str)
    splits = _checked_splits(splits, y)
    inner = [None] * len(splits)
    if grid:
        inner = [_inner_splits(split_kind, groups[train], y[train], inner_splits, test_fraction,
                               _decoder_seed(seed + 1, index), index) for index, (train, _) in enumerate(splits)]
    outputs = _fit_splits(table, decoder, decoder_name, y, splits, classes, seed, n_jobs, grid, inner)
    return _collect(table, decoder_name, classes, splits, outputs, return_estimators=return_estimators,
                    with_best_params=bool(grid), test_fraction=float(test_fraction), seed=seed,
                    split_kind=split_kind, param_grid=grid_name, notes=tuple(notes))


def evaluate(table: FeatureTable, decoder: str | Any = "random_forest", n_splits: int = 10,
             test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
             return_estimators: bool = False, *, split: str = "grouped",
             param_grid: str | Mapping | Sequence | None = None, inner_splits: int = 3) -> EvaluationResult:
    """Cross-validate a decoder of the learning rule with splits grouped by network.

    For each of ``n_splits`` splits from :func:`~virtual_lab.analysis.splits.grouped_splits`, the decoder
    is fitted on the training networks' layers and predicts every test layer. Network-level predictions
    combine a network's test layers with :func:`~virtual_lab.analysis.fitting.network_predictions`: the
    mean of ``predict_proba`` for decoders that have it (random forest, logistic), the mean of the softmax
    of ``decision_function`` for those that do not (linear SVM), and one-hot votes for estimators with
    neither (ties: earliest class).

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
        Seed of the splits (as in :func:`~virtual_lab.analysis.splits.grouped_splits`) and of the decoders.
    n_jobs : int, default=1
        Splits fitted in parallel with joblib (each decoder itself uses one core).
    return_estimators : bool, default=False
        Keep each split's fitted decoder in the result.
    split : {"grouped", "layer"}, default="grouped"
        ``"layer"``: the paper's category-balanced splits over layers
        (:func:`~virtual_lab.analysis.splits.layer_splits`), which can leak a network's identity; for
        comparison only.
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
    seed = check_int("seed", seed, low=0)
    if split not in SPLIT_KINDS:
        check_choice("split", split, SPLIT_KINDS)
    key = None
    if (result_cache.active_folder() is not None and isinstance(decoder, str) and not return_estimators
            and (param_grid is None or isinstance(param_grid, str))):
        key = result_cache.evaluation_key(table, decoder=decoder, n_splits=n_splits, test_fraction=test_fraction,
                                          seed=seed, split=split, param_grid=param_grid, inner_splits=inner_splits)
        cached = result_cache.load(key)
        if cached is not None:
            return cached
    if split == "layer":
        splits = layer_splits(table.rule, n_splits=n_splits, test_fraction=test_fraction, seed=seed)
    else:
        splits = grouped_splits(table.network_id, table.rule, n_splits=n_splits, test_fraction=test_fraction,
                                seed=seed)
    result = cross_validate(table, decoder, splits, seed=seed, n_jobs=n_jobs, return_estimators=return_estimators,
                            param_grid=param_grid, inner_splits=inner_splits, test_fraction=test_fraction,
                            split_kind=split)
    if key is not None:
        result_cache.store(key, result)
    return result










