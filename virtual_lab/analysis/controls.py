"""Ablations, controls and generalization tests of rule decoding (what the paper's reviewers asked for).

Each control is one function that turns a feature table (and, where needed, the recordings it came from)
into the table the decoder should see, plus :func:`run_control`, which runs any of them by name and
returns evaluations ready for a report:

- **observable class alone**: :func:`observable_class` keeps the features of one measure (``weight``,
  ``act`` or ``gradavg``) and the depth one-hot;
- **temporal**: :func:`temporal_features` gives the full trajectory, its time average, the last timepoint,
  or the trajectory with its timepoints shuffled (the same values, the order destroyed);
- **performance only**: :func:`performance_table` decodes from the task loss and probe accuracy curves
  alone, one example per network;
- **performance matched**: :func:`performance_matched` keeps networks whose final accuracy lies where
  every rule has networks, balanced per accuracy bin;
- **rule family**: :func:`relabel` decodes a metadata value (``family``, ``architecture``...) instead of
  the rule;
- **generalization**: :func:`generalize` trains on examples matching one metadata filter and tests on
  examples matching another (held-out architecture, task, hyperparameter value, rig preset), never letting
  one network sit on both sides;
- **grouped vs layer-level splits**: :func:`compare_splits`.

Metadata filters are strings ``"key=value"``, ``"key=v1,v2"`` (any of), ``"key!=value"``,
``"key>value"``, ``"key<value"`` (numbers); several filters are combined with AND.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.evaluation import (EvaluationResult, _check_int, _n_test, cross_validate, evaluate,
                                             permutation_test)
from virtual_lab.analysis.observables import (FEATURE_NAME_DTYPE, MEASURES, FeatureTable, _check_choice,
                                              _did_you_mean)

logger = logging.getLogger(__name__)

__all__ = ["CONTROLS", "OBSERVABLE_CLASSES", "TEMPORAL_CONTROLS", "Filter", "compare_splits", "concat_tables",
           "filter_mask", "generalize", "observable_class", "parse_filter", "performance_matched",
           "performance_table", "relabel", "run_control", "temporal_features", "with_metadata"]

OBSERVABLE_CLASSES = {"weights": "weight", "activations": "act", "activity_change": "gradavg"}
"""Control name -> measure kept by :func:`observable_class`."""

TEMPORAL_CONTROLS = ("trajectory", "time_average", "last_timepoint", "time_shuffled")

CONTROLS = (*OBSERVABLE_CLASSES, "time_average", "last_timepoint", "time_shuffled", "performance_only",
            "performance_matched", "family", "layer_splits", "permutation")
"""Names accepted by :func:`run_control` (and ``virtual-lab decode --control``)."""


# -- table helpers -----------------------------------------------------------------------------------
def _replace(table: FeatureTable, **changes: Any) -> FeatureTable:
    return dataclasses.replace(table, **changes)


def with_metadata(table: FeatureTable, **values: Any) -> FeatureTable:
    """A copy of ``table`` whose every example's metadata also holds ``values`` (e.g. ``rig="full"``)."""
    return _replace(table, metadata=tuple({**meta, **values} for meta in table.metadata))


def concat_tables(tables: Sequence[FeatureTable]) -> FeatureTable:
    """Stack the examples of tables with the same features (e.g. one table per rig preset).

    Parameters
    ----------
    tables : sequence of FeatureTable
        Identical ``feature_names``.

    Returns
    -------
    FeatureTable
        Examples of ``tables[0]``, then ``tables[1]``...; network ids are kept (the same network seen by
        two rigs keeps one id, so grouped splits keep it on one side).
    """
    tables = list(tables)
    if not tables:
        raise ValueError("concat_tables needs at least one table")
    names = tables[0].feature_names
    for index, table in enumerate(tables[1:], start=1):
        if table.feature_names.shape != names.shape or not np.array_equal(table.feature_names, names):
            raise ValueError(f"table {index} has different features ({table.n_features}) from table 0 "
                             f"({len(names)}); align them first (e.g. temporal_features(..., 'time_average'))")
    return FeatureTable(
        X=np.vstack([t.X for t in tables]), rule=np.concatenate([t.rule for t in tables]),
        network_id=np.concatenate([t.network_id for t in tables]), layer=np.concatenate([t.layer for t in tables]),
        depth_position=np.concatenate([t.depth_position for t in tables]),
        metadata=tuple(m for t in tables for m in t.metadata), feature_names=names)


def _columns(table: FeatureTable, keep: np.ndarray) -> FeatureTable:
    return _replace(table, X=table.X[:, keep], feature_names=table.feature_names[keep])


# -- observable class --------------------------------------------------------------------------------
def observable_class(table: FeatureTable, measure: str) -> FeatureTable:
    """Keep only the features of one measure (and the depth one-hot).

    Parameters
    ----------
    table : FeatureTable
    measure : {"weight", "act", "gradavg"}
        Also accepted: the control names ``"weights"``, ``"activations"``, ``"activity_change"``.

    Returns
    -------
    FeatureTable
    """
    measure = OBSERVABLE_CLASSES.get(measure, measure)
    _check_choice("measure", measure, MEASURES)
    measures = table.feature_names["measure"]
    keep = (measures == measure) | (measures == "depth")
    if not np.any(measures == measure):
        raise ValueError(f"the table has no {measure!r} features; it has: "
                         f"{sorted(set(measures.tolist()) - {'depth'})}")
    return _columns(table, keep)


# -- temporal ----------------------------------------------------------------------------------------
def _time_blocks(table: FeatureTable) -> tuple[np.ndarray, np.ndarray, int]:
    names = table.feature_names
    varying = names["timepoint"] >= 0
    n_t = table.n_timepoints
    n_varying = int(varying.sum())
    if n_t < 1 or n_varying % n_t or not np.all(varying[:n_varying]) or np.any(varying[n_varying:]):
        raise ValueError("temporal controls need the timepoint-major layout of build_feature_table "
                         "(T blocks of observables, then static features)")
    return names[:n_varying], names[n_varying:], n_varying // n_t


def temporal_features(table: FeatureTable, kind: str, seed: int = 0) -> FeatureTable:
    """The trajectory, its time average, its last timepoint, or its timepoints shuffled.

    Parameters
    ----------
    table : FeatureTable
        Timepoint-major layout (as from :func:`~virtual_lab.analysis.observables.build_feature_table`).
    kind : {"trajectory", "time_average", "last_timepoint", "time_shuffled"}
        ``"time_shuffled"`` permutes the T timepoint blocks of each example independently (a seeded
        permutation per example), keeping every value and destroying the order.
    seed : int, default=0
        Seed of the shuffles.

    Returns
    -------
    FeatureTable
        ``time_average`` and ``last_timepoint`` have one timepoint (``n_observables + n_static``
        features); the others keep the layout.
    """
    _check_choice("kind", kind, TEMPORAL_CONTROLS)
    varying_names, static_names, n_obs = _time_blocks(table)
    n_t = table.n_timepoints
    n = table.n_examples
    series = table.X[:, : n_t * n_obs].reshape(n, n_t, n_obs)
    static = table.X[:, n_t * n_obs:]
    if kind == "trajectory":
        return table
    if kind == "time_shuffled":
        rng = np.random.default_rng(seed)
        order = np.argsort(rng.random((n, n_t)), axis=1)
        shuffled = np.take_along_axis(series, order[:, :, None], axis=1)
        return _replace(table, X=np.concatenate([shuffled.reshape(n, -1), static], axis=1))
    values = series.mean(axis=1) if kind == "time_average" else series[:, -1, :]
    names = np.concatenate([varying_names[:n_obs], static_names]).astype(FEATURE_NAME_DTYPE)
    names["timepoint"][:n_obs] = 0
    return _replace(table, X=np.concatenate([values, static], axis=1), feature_names=names)


# -- performance -------------------------------------------------------------------------------------
def _curves(recording: Any) -> tuple[np.ndarray, np.ndarray]:
    """(train_loss, test_accuracy) at the checkpoints a recording observes, shape (T,) each."""
    source = getattr(recording, "source", recording)
    indices = getattr(recording, "checkpoint_indices", np.arange(len(source.train_loss)))
    return (np.asarray(source.train_loss, dtype=np.float64)[indices],
            np.asarray(source.test_accuracy, dtype=np.float64)[indices])


def performance_table(recordings: Iterable[Any]) -> FeatureTable:
    """Decoder input from the task-performance curves alone: one example per network.

    Parameters
    ----------
    recordings : iterable of Recording or GroundTruth
        For a Recording, the curves at its kept checkpoints (``Recording.source.train_loss`` and
        ``test_accuracy``); diverged networks are skipped.

    Returns
    -------
    FeatureTable
        ``X`` of shape (n_networks, 2 T): at each timepoint the training loss (log10) and the probe
        accuracy. Feature names: measure ``"perf"``, function ``"raw"``, statistic ``"log_loss"`` /
        ``"accuracy"``. ``layer`` is ``"all"`` and ``depth_position`` ``"none"``.
    """
    rows, rules, ids, metas = [], [], [], []
    n_t = None
    for recording in recordings:
        metadata = dict(recording.metadata)
        if bool(metadata.get("diverged", False)):
            continue
        loss, accuracy = _curves(recording)
        if n_t is None:
            n_t = len(loss)
        elif len(loss) != n_t:
            raise ValueError(f"all recordings must observe the same number of checkpoints for the performance "
                             f"baseline; got {n_t} and {len(loss)} (network {recording.run_id})")
        rows.append(np.column_stack([np.log10(np.maximum(loss, 1e-12)), accuracy]).reshape(-1))
        rules.append(str(recording.rule))
        ids.append(str(recording.run_id))
        metas.append(metadata)
    if not rows:
        raise ValueError("performance_table needs at least one non-diverged recording")
    names = np.array([("perf", "raw", stat, t) for t in range(n_t) for stat in ("log_loss", "accuracy")],
                     dtype=FEATURE_NAME_DTYPE)
    X = np.vstack(rows)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        logger.warning("performance baseline: dropped %d network(s) with non-finite curves", int((~finite).sum()))
    keep = np.flatnonzero(finite)
    n = len(keep)
    return FeatureTable(X=X[keep], rule=np.array(rules)[keep], network_id=np.array(ids)[keep],
                        layer=np.full(n, "all"), depth_position=np.full(n, "none"),
                        metadata=tuple(metas[i] for i in keep), feature_names=names)


def final_accuracy(recordings: Iterable[Any]) -> dict[str, float]:
    """Network id -> probe accuracy at the last checkpoint of the ground truth."""
    out = {}
    for recording in recordings:
        source = getattr(recording, "source", recording)
        out[str(recording.run_id)] = float(np.asarray(source.test_accuracy)[-1])
    return out


def performance_matched(table: FeatureTable, final_accuracies: Mapping[str, float], n_bins: int = 5,
                        seed: int = 0, min_networks_per_rule: int = 2) -> FeatureTable:
    """Keep networks whose final accuracy overlaps across rules, balanced per accuracy bin.

    The common range is ``[max over rules of min accuracy, min over rules of max accuracy]``; it is cut
    into ``n_bins`` equal bins, and in each bin every rule keeps as many networks as the rule with the
    fewest there (a seeded random choice). Afterwards the rules have the same final-accuracy histogram,
    so performance alone cannot tell them apart.

    Parameters
    ----------
    table : FeatureTable
    final_accuracies : mapping of str to float
        Network id -> final probe accuracy (:func:`final_accuracy`).
    n_bins : int, default=5
    seed : int, default=0
    min_networks_per_rule : int, default=2

    Returns
    -------
    FeatureTable
        With ``performance_range`` (low, high) added to every example's metadata.

    Raises
    ------
    ValueError
        A network without accuracy, no common range, or too few networks per rule left.
    """
    n_bins = _check_int("n_bins", n_bins, 1)
    networks, first = np.unique(table.network_id, return_index=True)
    missing = [n for n in networks.tolist() if n not in final_accuracies]
    if missing:
        raise ValueError(f"final_accuracies has no value for {len(missing)} network(s), e.g. {missing[0]!r}")
    rules = table.rule[first]
    accuracy = np.array([final_accuracies[n] for n in networks.tolist()], dtype=np.float64)
    classes = np.unique(rules)
    low = max(accuracy[rules == r].min() for r in classes)
    high = min(accuracy[rules == r].max() for r in classes)
    if low > high:
        detail = ", ".join(f"{r}: {accuracy[rules == r].min():.3f}-{accuracy[rules == r].max():.3f}" for r in classes)
        raise ValueError(f"performance matching: the rules' final accuracies do not overlap ({detail})")
    edges = np.linspace(low, high, n_bins + 1)
    in_range = (accuracy >= low) & (accuracy <= high)
    bins = np.clip(np.searchsorted(edges, accuracy, side="right") - 1, 0, n_bins - 1)
    rng = np.random.default_rng(seed)
    kept = []
    for b in range(n_bins):
        members = [np.flatnonzero(in_range & (bins == b) & (rules == r)) for r in classes]
        count = min(len(m) for m in members)
        for m in members:
            kept.extend(rng.permutation(m)[:count].tolist())
    kept_networks = set(networks[kept].tolist())
    counts = {r: int(np.sum(rules[kept] == r)) for r in classes.tolist()}
    if min(counts.values(), default=0) < min_networks_per_rule:
        raise ValueError(f"performance matching leaves too few networks per rule ({counts}; need >= "
                         f"{min_networks_per_rule}) in the common final-accuracy range {low:.3f}-{high:.3f}; "
                         f"use fewer bins or more networks")
    logger.info("performance matched: %d of %d networks in accuracy range %.3f-%.3f", len(kept_networks),
                len(networks), low, high)
    subset = table.subset(np.isin(table.network_id, list(kept_networks)))
    return with_metadata(subset, performance_range=(float(low), float(high)))


# -- labels ------------------------------------------------------------------------------------------
def relabel(table: FeatureTable, key: str = "family") -> FeatureTable:
    """Decode a metadata value instead of the rule (e.g. the rule *family*).

    Parameters
    ----------
    table : FeatureTable
    key : str, default="family"
        Metadata key; every example must have it.

    Returns
    -------
    FeatureTable
        ``rule`` replaced by ``metadata[key]`` (as str).
    """
    column = table.metadata_column(key)
    missing = [i for i, v in enumerate(column) if v is None]
    if missing:
        keys = sorted({k for meta in table.metadata for k in meta})
        raise ValueError(f"metadata key {key!r} is missing for {len(missing)} example(s) (network "
                         f"{table.network_id[missing[0]]!r}).{_did_you_mean(key, keys)}")
    return _replace(table, rule=np.array([str(v) for v in column]))


# -- filters -----------------------------------------------------------------------------------------
_FILTER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Filter:
    """One metadata condition, e.g. ``Filter("architecture", "=", ("mlp",))``."""

    key: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.key}{self.op}{','.join(self.values)}"


def parse_filter(text: str | Filter) -> Filter:
    """Parse ``"key=value"``, ``"key=v1,v2"``, ``"key!=value"``, ``"key>1e-3"``, ``"key<=0.5"``."""
    if isinstance(text, Filter):
        return text
    if not isinstance(text, str):
        raise TypeError(f"a filter must be a string like 'architecture=mlp', got {type(text).__name__}")
    match = _FILTER.match(text)
    if not match or not match.group(3):
        raise ValueError(f"cannot parse filter {text!r}; expected 'key=value', 'key=v1,v2', 'key!=value', "
                         f"'key>number' or 'key<number'")
    key, op, values = match.groups()
    parsed = tuple(v.strip() for v in values.split(",")) if op in ("=", "!=") else (values.strip(),)
    if op not in ("=", "!="):
        try:
            float(parsed[0])
        except ValueError:
            raise ValueError(f"filter {text!r}: {op!r} needs a number, got {parsed[0]!r}") from None
    return Filter(key, op, parsed)


def _equal(value: Any, wanted: str) -> bool:
    if isinstance(value, bool) or value is None:
        return str(value).lower() == wanted.lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    return str(value) == wanted


def filter_mask(table: FeatureTable, filters: Sequence[str | Filter] | str | None) -> np.ndarray:
    """Boolean mask (n_examples,) of the examples whose metadata match every filter.

    Raises
    ------
    ValueError
        A key no example has (with the closest key), or a filter no example matches (listing the values
        present).
    """
    if filters is None:
        return np.ones(table.n_examples, dtype=bool)
    if isinstance(filters, (str, Filter)):
        filters = [filters]
    mask = np.ones(table.n_examples, dtype=bool)
    keys = sorted({k for meta in table.metadata for k in meta} | {"rule", "network_id", "layer", "depth_position"})
    for item in filters:
        f = parse_filter(item)
        if f.key not in keys:
            raise ValueError(f"unknown metadata key {f.key!r} in filter {str(f)!r}.{_did_you_mean(f.key, keys)} "
                             f"Keys: {', '.join(keys)}")
        if f.key in ("rule", "network_id", "layer", "depth_position"):
            column = getattr(table, f.key).astype(object)
        else:
            column = table.metadata_column(f.key)
        if f.op == "=":
            match = np.array([any(_equal(v, w) for w in f.values) for v in column], dtype=bool)
        elif f.op == "!=":
            match = np.array([not any(_equal(v, w) for w in f.values) for v in column], dtype=bool)
        else:
            bound = float(f.values[0])
            compare = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}[f.op]
            numeric = np.array([float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                else np.nan for v in column])
            match = compare(numeric, bound) & np.isfinite(numeric)
        if not match.any():
            present = sorted({str(v) for v in column})
            shown = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "")
            raise ValueError(f"filter {str(f)!r} matches no example; values of {f.key!r} present: {shown}")
        mask &= match
    return mask


# -- generalization ----------------------------------------------------------------------------------
def _generalization_splits(table: FeatureTable, train_side: np.ndarray, test_side: np.ndarray, n_splits: int,
                           test_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    networks, inverse = np.unique(table.network_id, return_inverse=True)
    on_train = np.zeros(len(networks), dtype=bool)
    on_test = np.zeros(len(networks), dtype=bool)
    on_train[inverse[train_side]] = True
    on_test[inverse[test_side]] = True
    rule = np.empty(len(networks), dtype=object)
    rule[inverse] = table.rule
    both = on_train & on_test
    train_only = on_train & ~on_test
    test_rules = sorted(set(table.rule[test_side].tolist()))
    train_rules = sorted(set(table.rule[train_side].tolist()))
    unseen = [r for r in test_rules if r not in train_rules]
    if unseen:
        raise ValueError(f"the test filter selects rule(s) {unseen} that the training filter leaves out; the "
                         f"decoder cannot name a rule it never saw (training rules: {train_rules})")
    if len(train_rules) < 2:
        raise ValueError(f"the training filter leaves a single rule {train_rules}; need at least 2")
    for r in test_rules:
        if not np.any((both | train_only) & (rule == r)):
            raise ValueError(f"no training network for rule {r!r}")
        if np.sum(both & (rule == r)) == 1 and not np.any(train_only & (rule == r)):
            raise ValueError(f"rule {r!r} has a single network on both sides of the filters; it cannot be "
                             f"tested without also being trained on (need >= 2 networks)")
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        test_network = np.zeros(len(networks), dtype=bool)
        train_network = np.zeros(len(networks), dtype=bool)
        for r in np.unique(rule).tolist():
            shared = np.flatnonzero(both & (rule == r))
            only = np.flatnonzero(train_only & (rule == r))
            if len(shared) >= 2:
                held = rng.permutation(shared)[:_n_test(test_fraction, len(shared))]
                test_network[held] = True
                train_network[np.setdiff1d(shared, held)] = True
            elif len(shared) == 1:
                train_network[shared] = True
            if len(only) >= 2:  # same training-set size as in-distribution cross-validation
                train_network[rng.permutation(only)[: len(only) - _n_test(test_fraction, len(only))]] = True
            else:
                train_network[only] = True
        test_network |= on_test & ~on_train
        train_rows = np.flatnonzero(train_side & train_network[inverse])
        test_rows = np.flatnonzero(test_side & test_network[inverse])
        if test_rows.size == 0:
            raise ValueError("the filters leave an empty test set (every test-side network is also needed "
                             "for training); use disjoint filters or more networks")
        splits.append((train_rows, test_rows))
    return splits


def generalize(table: FeatureTable, train_filter: Sequence[str | Filter] | str | None,
               test_filter: Sequence[str | Filter] | str | None, decoder: str | Any = "random_forest", *,
               n_splits: int = 10, test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
               param_grid: Any = None) -> EvaluationResult:
    """Train on the examples matching ``train_filter``, test on those matching ``test_filter``.

    No network is ever on both sides of a split. Networks only the training filter selects are training
    networks (a random ``1 - test_fraction`` of each rule per split, so the training set has the size of
    in-distribution cross-validation); networks only the test filter selects are tested in every split;
    networks both select (e.g. one network observed by two rig presets) are split per rule, trained on
    through their training-side examples and tested through their test-side examples.

    Parameters
    ----------
    table : FeatureTable
        E.g. :func:`concat_tables` of one table per rig preset, each tagged with :func:`with_metadata`.
    train_filter, test_filter : str, Filter, sequence of them, or None
        Metadata conditions (see :func:`parse_filter`); None selects everything.
    decoder : str or estimator, default="random_forest"
    n_splits : int, default=10
    test_fraction : float, default=0.25
    seed : int, default=0
    n_jobs : int, default=1
    param_grid : optional
        Nested model selection (see :func:`~virtual_lab.analysis.evaluation.cross_validate`).

    Returns
    -------
    EvaluationResult
        ``split_kind == "generalization"``; ``notes`` name the filters and the sizes of both sides.

    Raises
    ------
    ValueError
        A filter matching nothing, an empty test set, a test rule absent from training, or a single
        training rule.
    """
    n_splits = _check_int("n_splits", n_splits, 1)
    train_side = filter_mask(table, train_filter)
    test_side = filter_mask(table, test_filter)
    splits = _generalization_splits(table, train_side, test_side, n_splits, test_fraction, seed)
    n_train_networks = len(np.unique(table.network_id[train_side]))
    n_test_networks = len(np.unique(table.network_id[test_side]))
    notes = (f"train filter: {_describe(train_filter)} ({n_train_networks} networks); test filter: "
             f"{_describe(test_filter)} ({n_test_networks} networks)",)
    return cross_validate(table, decoder, splits, seed=seed, n_jobs=n_jobs, param_grid=param_grid,
                          test_fraction=test_fraction, split_kind="generalization", notes=notes)


def _describe(filters: Any) -> str:
    if filters is None:
        return "all"
    if isinstance(filters, (str, Filter)):
        filters = [filters]
    return " & ".join(str(parse_filter(f)) for f in filters)


def compare_splits(table: FeatureTable, decoder: str | Any = "random_forest", **kwargs: Any
                   ) -> dict[str, Any]:
    """Grouped splits vs the paper's layer-level splits on the same table.

    Returns
    -------
    dict
        ``grouped`` and ``layer`` (EvaluationResult), and ``difference``: layer minus grouped mean
        accuracy, ``{"layer_accuracy": ..., "network_accuracy": ...}``. A positive difference is what the
        layer-level splits gain by letting one network's layers sit on both sides.
    """
    grouped = evaluate(table, decoder, split="grouped", **kwargs)
    layer = evaluate(table, decoder, split="layer", **kwargs)
    return {"grouped": grouped, "layer": layer,
            "difference": {name: float(np.mean(getattr(layer, name)) - np.mean(getattr(grouped, name)))
                           for name in ("layer_accuracy", "network_accuracy")}}


# -- one call per control ----------------------------------------------------------------------------
def run_control(name: str, table: FeatureTable, decoder: str | Any = "random_forest", *,
                recordings: Sequence[Any] | None = None, n_splits: int = 10, test_fraction: float = 0.25,
                seed: int = 0, n_jobs: int = 1, param_grid: Any = None, n_permutations: int = 100
                ) -> list[tuple[str, Any]]:
    """Run one control by name.

    Parameters
    ----------
    name : str
        One of :data:`CONTROLS`: ``weights``, ``activations``, ``activity_change`` (observable class
        alone); ``time_average``, ``last_timepoint``, ``time_shuffled``; ``performance_only`` and
        ``performance_matched`` (need ``recordings``); ``family`` (decode ``metadata["family"]``);
        ``layer_splits`` (paper's layer-level splits, with the grouped result for the difference);
        ``permutation`` (network-level permutation test).
    table : FeatureTable
    decoder : str or estimator, default="random_forest"
    recordings : sequence of Recording, optional
        The recordings the table was built from (for the performance controls).
    n_splits, test_fraction, seed, n_jobs, param_grid
        As in :func:`~virtual_lab.analysis.evaluation.evaluate`.
    n_permutations : int, default=100
        For ``permutation``.

    Returns
    -------
    list of (str, EvaluationResult or PermutationResult)
        Labelled results: one for most controls; ``layer_splits`` gives ``"grouped splits"`` and
        ``"layer-level splits"``; ``permutation`` gives a PermutationResult.
    """
    _check_choice("control", name, CONTROLS)
    kwargs = dict(n_splits=n_splits, test_fraction=test_fraction, seed=seed, n_jobs=n_jobs, param_grid=param_grid)
    if name in OBSERVABLE_CLASSES:
        return [(f"{name} only", evaluate(observable_class(table, name), decoder, **kwargs))]
    if name in TEMPORAL_CONTROLS:
        label = name.replace("_", " ")
        return [(label, evaluate(temporal_features(table, name, seed=seed), decoder, **kwargs))]
    if name in ("performance_only", "performance_matched"):
        if recordings is None:
            raise ValueError(f"control {name!r} needs the recordings (loss and accuracy curves); pass recordings=")
        if name == "performance_only":
            return [("performance only", evaluate(performance_table(recordings), decoder, **kwargs))]
        matched = performance_matched(table, final_accuracy(recordings), seed=seed)
        low, high = matched.metadata[0]["performance_range"]
        result = evaluate(matched, decoder, **kwargs)
        note = (f"{len(np.unique(matched.network_id))} of {len(np.unique(table.network_id))} networks, final "
                f"accuracy {low:.3f}-{high:.3f}")
        return [("performance matched", dataclasses.replace(result, notes=result.notes + (note,)))]
    if name == "family":
        return [("rule family", evaluate(relabel(table, "family"), decoder, **kwargs))]
    if name == "layer_splits":
        compared = compare_splits(table, decoder, **kwargs)
        return [("grouped splits", compared["grouped"]), ("layer-level splits", compared["layer"])]
    # permutation
    kwargs.pop("n_jobs")
    return [("permutation test", permutation_test(table, decoder, n_permutations, n_jobs=n_jobs, **kwargs))]


# -- from session files ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Curves:
    """What the performance controls need of a recording, without its arrays."""

    run_id: str
    rule: str
    metadata: Mapping[str, Any]
    source: Any
    checkpoint_indices: np.ndarray


@dataclass(frozen=True)
class _Source:
    train_loss: np.ndarray
    test_accuracy: np.ndarray


def observe_session(ground_truth: Any, rig: str, seed: int = 0) -> Any:
    """Observe a session through a rig: ``"full"`` (everything) or a preset of
    :mod:`virtual_lab.rig.presets` (name or TOML path), with a per-network seed ``derive_seed(seed, run_id)``."""
    from virtual_lab.rig import Recording
    from virtual_lab.seeding import derive_seed

    if rig == "full":
        return Recording.from_ground_truth(ground_truth)
    try:
        from virtual_lab.rig.presets import apply_preset
    except ImportError:  # pragma: no cover - presets not available
        raise ValueError(f"rig preset {rig!r} asked for, but virtual_lab.rig.presets is not available; "
                         f"use --rig full") from None
    return apply_preset(ground_truth, rig, seed=derive_seed(seed, ground_truth.run_id))


def read_session_arrays(path: str) -> Any:
    """Read a ground-truth session with h5py alone (``read_session(path, engine="h5py")``: no pynwb object
    mapping, ~10x faster than the default engine, which it equals — tested); falls back to the pynwb reader
    when the file does not have the expected layout.

    Returns
    -------
    GroundTruth
    """
    from virtual_lab.sessions import read_session

    try:
        return read_session(path, engine="h5py")
    except (KeyError, OSError, TypeError, ValueError) as error:
        logger.debug("fast read of %s failed (%r); using read_session", path, error)
        return read_session(path)


def _session_features(path: str, rigs: tuple[str, ...], observables: Mapping[str, tuple], seed: int
                      ) -> tuple[list[FeatureTable | None], list[_Curves | None], list[tuple[str, str]]]:
    """Tables and curves of one session through every rig; ``errors`` holds (rig, reason) per rig that failed."""
    from virtual_lab.analysis.observables import build_feature_table

    try:
        ground_truth = read_session_arrays(path)
    except (KeyError, OSError, TypeError, ValueError) as error:
        reason = f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        return [None] * len(rigs), [None] * len(rigs), [(rig, reason) for rig in rigs]
    tables, curves, errors = [], [], []
    for rig in rigs:
        recording = observe_session(ground_truth, rig, seed)
        metadata = {**dict(recording.metadata), "rig": rig, "session_path": str(path)}
        curves.append(_Curves(recording.run_id, recording.rule, metadata,
                              _Source(np.asarray(ground_truth.train_loss), np.asarray(ground_truth.test_accuracy)),
                              np.asarray(recording.checkpoint_indices)))
        try:
            table = build_feature_table([recording], observables[rig])
            tables.append(_replace(table, metadata=tuple({**m, "rig": rig, "session_path": str(path),
                                                          "checkpoint_steps": tuple(int(s) for s in
                                                                                    recording.checkpoint_steps)}
                                                         for m in table.metadata)))
        except ValueError as error:  # e.g. a diverged network
            tables.append(None)
            errors.append((rig, "network diverged" if recording.metadata.get("diverged", False) else str(error)))
    return tables, curves, errors


def _reasons(reasons: Sequence[str]) -> str:
    """Per-session reasons, deduplicated with counts, most frequent first, on one line."""
    from collections import Counter

    return "; ".join(f"{n} session{'s' if n > 1 else ''}: {reason}"
                     for reason, n in Counter(reasons).most_common())


def _complete_files(paths: Sequence[str] | str) -> list:
    """Session files under ``paths`` (files or folders), damaged or foreign ones warned about and skipped."""
    from virtual_lab.sessions import _session_files, partition_session_files

    files: list = []
    for item in ([paths] if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__") else paths):
        found = _session_files(item)
        if not found or not all(p.is_file() for p in found):
            raise ValueError(f"no NWB session found at {str(item)!r}")
        files.extend(found)
    # absolute paths: joblib's worker processes may have been started in another working directory
    files, skipped = partition_session_files(sorted({Path(f).resolve() for f in files}))  # damaged: warned, skipped
    if not files:
        raise ValueError(f"no complete session among the files given ({len(skipped)} skipped: "
                         f"{skipped[0][1] if skipped else 'none found'})")
    return files


def _checked_rigs(rigs: Sequence[str]) -> tuple[str, ...]:
    from virtual_lab.rig.presets import load_preset

    rigs = tuple(dict.fromkeys(rigs))
    if not rigs:
        raise ValueError("rigs must name at least one rig ('full' or a preset)")
    for rig in rigs:
        if rig != "full":
            load_preset(rig)  # unknown names fail here, with the list of presets
    return rigs


def rig_observables(paths: Sequence[str] | str, rigs: Sequence[str] = ("full",), observables: Any = None, *,
                    explicit: bool = False, seed: int = 0) -> dict[str, tuple[tuple[Any, ...], str]]:
    """The observables each rig measures, decided on the first session of ``paths``.

    Each rig observes the first complete session once, and
    :func:`virtual_lab.rig.presets.measured_observables` keeps the observables of the measures it records
    (a calcium or electrophysiology preset records activity only, an EM or spine preset weights only).

    Parameters
    ----------
    paths : str or sequence of str
        Session files or folders of them.
    rigs : sequence of str, default=("full",)
        ``"full"`` or rig preset names / paths.
    observables : sequence, optional
        What was asked for; default: the paper's 24 admissible observables.
    explicit : bool, default=False
        The observables were named one by one: one a rig cannot measure is an error, not left out.
    seed : int, default=0
        Rig seed, as in :func:`tables_from_sessions`.

    Returns
    -------
    dict of str to (tuple of Observable, str)
        Rig -> (observables kept, the one-line note saying what was left out, ``""`` if nothing).

    Raises
    ------
    ValueError
        No session; an unknown preset; a rig measuring none of the observables; with ``explicit``, an
        observable a rig cannot measure.
    """
    from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES, _as_observables
    from virtual_lab.rig.presets import measured_observables

    observables = _as_observables(ADMISSIBLE_OBSERVABLES if observables is None else observables)
    rigs = _checked_rigs(rigs)
    ground_truth = read_session_arrays(str(_complete_files(paths)[0]))
    return {rig: measured_observables(observables, observe_session(ground_truth, rig, seed).measures, rig,
                                      explicit=explicit) for rig in rigs}


def tables_from_sessions(paths: Sequence[str] | str, rigs: Sequence[str] = ("full",),
                         observables: Any = None, seed: int = 0, n_jobs: int = 1
                         ) -> tuple[dict[str, FeatureTable], dict[str, list[Any]]]:
    """Read NWB sessions, observe each through every rig, and build one feature table per rig.

    Parameters
    ----------
    paths : str or sequence of str
        Session files or folders of them (searched recursively for ``*.nwb``).
    rigs : sequence of str, default=("full",)
        ``"full"`` or rig preset names / paths.
    observables : sequence or dict of str to sequence, optional
        Default: the paper's 24 admissible observables. Each rig keeps those it measures
        (:func:`rig_observables`; what it leaves out is logged in one line). A dict (rig -> observables, as
        chosen with :func:`rig_observables`) is used as given.
    seed : int, default=0
        Rig seed (each network gets ``derive_seed(seed, run_id)``).
    n_jobs : int, default=1
        Sessions processed in parallel (processes).

    Returns
    -------
    tables : dict of str to FeatureTable
        Rig -> table; every example's metadata has ``rig``, ``session_path`` and ``checkpoint_steps``.
    curves : dict of str to list
        Rig -> per-network performance curves at the rig's checkpoints (for :func:`performance_table`).

    Raises
    ------
    ValueError
        No session; an unknown preset; or no usable session for a rig, with the reasons of its sessions
        (deduplicated, with counts) on one line.
    """
    from joblib import Parallel, delayed

    from virtual_lab.analysis.observables import _as_observables

    files = _complete_files(paths)
    rigs = _checked_rigs(rigs)
    if isinstance(observables, Mapping):
        missing = [rig for rig in rigs if rig not in observables]
        if missing:
            raise ValueError(f"observables given per rig lack the rig(s) {', '.join(missing)}")
        chosen = {rig: _as_observables(observables[rig]) for rig in rigs}
    else:  # each rig keeps what it measures, decided on the first session
        chosen = {}
        for rig, (kept, note) in rig_observables(str(files[0]), rigs, observables, seed=seed).items():
            chosen[rig] = kept
            if note:
                logger.info("%s", note)
    from virtual_lab.progress import progress_bar

    outputs = Parallel(n_jobs=n_jobs, batch_size="auto", return_as="generator")(
        delayed(_session_features)(str(path), rigs, chosen, seed) for path in files)
    outputs = list(progress_bar(outputs, total=len(files), desc=f"observing ({', '.join(rigs)})", unit="sessions"))
    tables, curves = {}, {}
    for index, rig in enumerate(rigs):
        parts = [out[0][index] for out in outputs if out[0][index] is not None]
        reasons = [reason for out in outputs for r, reason in out[2] if r == rig]
        if not parts:
            raise ValueError(f"no usable session for rig {rig!r}: {_reasons(reasons)}")
        if reasons:
            logger.warning("rig %s: skipped %d of %d sessions (%s)", rig, len(reasons), len(files), _reasons(reasons))
        tables[rig] = concat_tables(parts)
        curves[rig] = [out[1][index] for out in outputs if out[1][index] is not None]
    for path, out in zip(files, outputs):
        for rig, reason in out[2]:
            logger.debug("skipped %s [%s]: %s", path, rig, reason)
    return tables, curves


def align_tables(tables: Mapping[str, FeatureTable]) -> tuple[dict[str, FeatureTable], str]:
    """Make tables from different rigs comparable, for training on one rig and testing on another.

    Tables with the same features are returned as they are. Otherwise every table is reduced to the
    checkpoints (training steps) all of them observed; if they share none (or the observable sets
    differ in another way), every table is reduced to its time average over the observables they share.

    Returns
    -------
    tables : dict of str to FeatureTable
    note : str
        What was done ("" when nothing was needed).
    """
    tables = dict(tables)
    first = next(iter(tables.values()))
    if all(t.feature_names.shape == first.feature_names.shape and np.array_equal(t.feature_names, first.feature_names)
           for t in tables.values()):
        return tables, ""
    steps = {}
    for rig, table in tables.items():
        per_example = {tuple(m.get("checkpoint_steps", ())) for m in table.metadata}
        steps[rig] = set.intersection(*(set(s) for s in per_example)) if per_example else set()
    common = sorted(set.intersection(*steps.values())) if steps else []
    obs_sets = [{(r["measure"], r["function"], r["statistic"]) for r in t.feature_names if r["timepoint"] >= 0}
                for t in tables.values()]
    shared_obs = set.intersection(*obs_sets)
    if not shared_obs:
        raise ValueError("the rigs share no observable; a decoder trained on one cannot be tested on another")
    out = {}
    if common:
        for rig, table in tables.items():
            names = table.feature_names
            examples_steps = table.metadata[0].get("checkpoint_steps", ())
            keep_t = [examples_steps.index(s) for s in common]
            cols = []
            for new_t, old_t in enumerate(keep_t):
                for record_index, record in enumerate(names):
                    if record["timepoint"] == old_t and (record["measure"], record["function"], record["statistic"]) in shared_obs:
                        cols.append(record_index)
            cols += [i for i, r in enumerate(names) if r["timepoint"] < 0]
            cols = np.array(sorted(cols, key=lambda i: (names[i]["timepoint"] < 0,
                                                        keep_t.index(names[i]["timepoint"]) if names[i]["timepoint"] >= 0 else 0,
                                                        i)))
            new_names = names[cols].copy()
            for i, c in enumerate(cols):
                if names[c]["timepoint"] >= 0:
                    new_names["timepoint"][i] = keep_t.index(int(names[c]["timepoint"]))
            out[rig] = _replace(table, X=table.X[:, cols], feature_names=new_names)
        note = f"rigs observe different checkpoints: features reduced to the {len(common)} shared steps {common}"
    else:
        for rig, table in tables.items():
            averaged = temporal_features(table, "time_average")
            names = averaged.feature_names
            keep = np.array([r["timepoint"] < 0 or (r["measure"], r["function"], r["statistic"]) in shared_obs
                             for r in names])
            out[rig] = _columns(averaged, keep)
        note = "rigs share no checkpoint: features reduced to their time average"
    reference = next(iter(out.values())).feature_names
    if not all(np.array_equal(t.feature_names, reference) for t in out.values()):
        raise ValueError("could not align the rigs' features (their observables differ in order)")
    logger.warning(note)
    return out, note


#: Metadata whose values a standard report holds out one at a time (when the sessions vary in them).
HELD_OUT_KEYS = ("architecture", "task", "paradigm")
#: How a held-out key is named in labels: the paradigm (supervised / contrastive) is the task's objective,
#: what the paper calls a different task (ImageNet categorization vs SimCLR).
_HELD_OUT_NAMES = {"paradigm": "task (paradigm)"}


def held_out_generalization(table: FeatureTable, key: str, decoder: str | Any = "random_forest", **kwargs: Any
                            ) -> list[tuple[str, EvaluationResult]]:
    """Leave one value of a metadata key out: train on every other value, test on the held-out one.

    Parameters
    ----------
    table : FeatureTable
    key : str
        E.g. ``"architecture"``: with sessions of mlp, cnn and resnet networks, three results (train on
        cnn + resnet, test on mlp; ...).
    decoder : str or estimator
    **kwargs
        Passed to :func:`generalize` (``n_splits``, ``test_fraction``, ``seed``, ``n_jobs``, ``param_grid``).

    Returns
    -------
    list of (label, EvaluationResult)
        Label ``"held-out <key>: <value>"`` (``"held-out task (paradigm): <value>"`` for the paradigm), one per
        value.

    Raises
    ------
    ValueError
        Fewer than two values of ``key`` in the table.
    """
    values = sorted({str(v) for v in table.metadata_column(key)})
    if len(values) < 2:
        raise ValueError(f"held-out {key}: the sessions have a single {key} ({', '.join(values) or 'none'}); "
                         f"holding one out needs at least two")
    results = []
    for value in values:
        others = [v for v in values if v != value]
        result = generalize(table, f"{key}={','.join(others)}", f"{key}={value}", decoder, **kwargs)
        results.append((f"held-out {_HELD_OUT_NAMES.get(key, key)}: {value}", result))
    return results


def standard_controls(table: FeatureTable, recordings: Sequence[Any], decoder: str, *, rig: str = "full",
                      n_splits: int = 10, test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
                      permutation_decoder: str | None = None, n_permutations: int = 19,
                      held_out: Sequence[str] = HELD_OUT_KEYS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The controls of a standard report, for :func:`virtual_lab.pipeline.decode_sessions`.

    Runs, with ``decoder``: each observable class alone, time average, last timepoint, time shuffled,
    performance only, performance matched, rule family and layer-level splits; held-out generalization
    for every key of ``held_out`` whose value varies across the sessions (:func:`held_out_generalization`);
    then a network-level permutation test with ``permutation_decoder`` (default ``decoder``) and k-means
    clustering. A control the data cannot support (e.g. no overlap in final accuracy) is logged and skipped.

    Returns
    -------
    entries : list of dict
        ``{"rig", "decoder", "control", "summary", "result"}`` per control.
    extras : dict
        ``permutation`` (summary of the test, with ``decoder``), ``clustering`` (summary),
        ``split_difference`` (layer-level minus grouped mean accuracy) and ``skipped`` (control -> reason).
    """
    from virtual_lab.analysis.clustering import cluster_runs
    from virtual_lab.progress import progress_bar, quiet

    kwargs = dict(n_splits=n_splits, test_fraction=test_fraction, seed=seed, n_jobs=n_jobs)
    entries: list[dict[str, Any]] = []
    extras: dict[str, Any] = {"skipped": {}}
    names = [n for n in (*OBSERVABLE_CLASSES, "time_average", "last_timepoint", "time_shuffled", "performance_only",
                         "performance_matched", "family", "layer_splits")]
    varying = [key for key in held_out if len({str(v) for v in table.metadata_column(key)}) >= 2]
    bar = progress_bar(total=len(names) + len(varying), desc="controls", unit="controls")
    for name in names:
        bar.set_postfix_str(name)
        try:
            with quiet():  # one bar over the controls, not one per control's decoder
                results = run_control(name, table, decoder, recordings=recordings, **kwargs)
        except ValueError as error:
            logger.warning("control %s skipped: %s", name, error)
            extras["skipped"][name] = str(error)
            continue
        finally:
            bar.update()
        for label, result in results:
            if label == "grouped splits":
                grouped = result
                continue
            entries.append({"rig": rig, "decoder": decoder, "control": label, "summary": result.summary(),
                            "result": result})
            if label == "layer-level splits":
                extras["split_difference"] = {
                    metric: float(np.mean(getattr(result, metric)) - np.mean(getattr(grouped, metric)))
                    for metric in ("layer_accuracy", "network_accuracy")}
    for key in varying:  # keys the sessions do not vary in have nothing to hold out
        bar.set_postfix_str(f"held-out {key}")
        try:
            with quiet():
                results = held_out_generalization(table, key, decoder, **kwargs)
        except ValueError as error:
            logger.warning("held-out %s skipped: %s", key, error)
            extras["skipped"][f"held-out {key}"] = str(error)
            continue
        finally:
            bar.update()
        entries.extend({"rig": rig, "decoder": decoder, "control": label, "summary": result.summary(),
                        "result": result} for label, result in results)
    bar.close()
    chosen = permutation_decoder or decoder
    try:
        if n_permutations < 1:
            raise ValueError("permutation test not requested (n_permutations = 0)")
        test = permutation_test(table, chosen, n_permutations, seed=seed, n_jobs=n_jobs, n_splits=n_splits,
                                test_fraction=test_fraction)
        extras["permutation"] = {"decoder": chosen, **test.summary()}
    except ValueError as error:
        extras["skipped"]["permutation"] = str(error)
    try:
        extras["clustering"] = cluster_runs(table, seed=seed).summary()
    except ValueError as error:
        extras["skipped"]["clustering"] = str(error)
    return entries, extras
