"""Does the decoder hold where it has not looked? Leave one level of an axis out, train on the rest.

:func:`holdout_table` holds out each level of a metadata axis in turn (the learning-rate multiplier, the
hidden width or depth, the batch size, the task, the architecture, the paradigm, the rig): it trains on
every other level and tests on the held-out level's networks, never letting one network sit on both sides
(splits of :func:`virtual_lab.analysis.generalization.generalize`). A **discrete** axis (a grid: few
distinct values) is held out one value at a time; a **continuous** one (values sampled from a prior, more
than :data:`MAX_LEVELS` distinct values, or ``bins`` given) one bin at a time, equal-width bins in log
space for learning rates and linear space otherwise, the two extreme bins included. Each level is marked
*interpolation* (inside the range the decoder was trained on), *extrapolation* (an extreme level: the
training range lies on one side of it) or *new value* (a categorical axis).

In-distribution reference: one ordinary grouped cross-validation over every level
(:func:`~virtual_lab.analysis.evaluation.evaluate`), whose accuracy is the reference line, scored also on
each level's networks alone: the same networks, tested by a decoder that saw their level in training (and
as many training networks, ``1 - test_fraction`` of each rule's). For an axis a network has several
values of (the rig: one network observed by several presets), a level's in-distribution accuracy is an
ordinary cross-validation inside that level.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from virtual_lab.analysis.evaluation import EvaluationResult, cross_validate, evaluate
from virtual_lab.analysis.generalization import _generalization_splits
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.analysis.tables import DERIVED_KEYS, metadata_values
from virtual_lab.stats import percentile_interval, stratified_bootstrap_indices, wilson_interval
from virtual_lab.validation import check_int, did_you_mean

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BINS", "HOLDOUT_AXES", "MAX_LEVELS", "AxisLevels", "HoldoutLevel", "HoldoutResult",
           "holdout_levels", "holdout_markdown", "holdout_table", "plot_holdout"]

#: Axes ``virtual-lab decode --holdout`` names in its help (any metadata key works).
HOLDOUT_AXES = ("learning_rate_scale", "learning_rate", "width", "depth", "batch_size", "task", "architecture",
                "paradigm", "rig")
#: A numeric axis with more distinct values than this is continuous (sampled from a prior) and is binned.
MAX_LEVELS = 12
#: Bins of a continuous axis unless told otherwise.
DEFAULT_BINS = 8
#: Axes binned in log space (positive values only).
LOG_AXES = ("learning_rate", "learning_rate_scale")
POSITIONS = ("interpolation", "extrapolation", "new value")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _key(value: Any) -> Any:
    """One level per value: numbers to 6 significant digits (rates stored as products of floats)."""
    return float(f"{float(value):.6g}") if _is_number(value) else str(value)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class AxisLevels:
    """The levels of an axis: each example's level index (-1: none), labels, ranges and positions."""

    index: np.ndarray
    labels: tuple[str, ...]
    ranges: tuple[tuple[float | None, float | None], ...]
    positions: tuple[str, ...]
    scale: str
    edges: tuple[float, ...] | None


def _axis_column(table: FeatureTable, axis: str) -> np.ndarray:
    keys = sorted({k for meta in table.metadata for k in meta} | set(DERIVED_KEYS) | {"rule", "layer"})
    if axis not in keys:
        raise ValueError(f"--holdout {axis}: no session has metadata {axis!r}{did_you_mean(axis, keys)}")
    column = metadata_values(table, axis)
    missing = [i for i, v in enumerate(column) if v is None]
    if missing:
        raise ValueError(f"held-out {axis}: {len(missing)} example(s) have no {axis!r} (network "
                         f"{table.network_id[missing[0]]!r}); every session needs one")
    return column


def holdout_levels(table: FeatureTable, axis: str, bins: int | None = None, log: bool | None = None) -> AxisLevels:
    """The levels :func:`holdout_table` holds out, one level index per example.

    Parameters
    ----------
    table : FeatureTable
    axis : str
        A metadata key (or a key of :data:`~virtual_lab.analysis.tables.DERIVED_KEYS`).
    bins : int, optional
        Equal-width bins over the range of the values (both extremes are bin edges); default: the distinct
        values when there are at most :data:`MAX_LEVELS` of them (or they are not numbers), else
        :data:`DEFAULT_BINS` bins. Empty bins are dropped.
    log : bool, optional
        Bin in log space; default: for :data:`LOG_AXES` with positive values.

    Returns
    -------
    AxisLevels
        ``index`` (n_examples,), ``labels``, ``ranges`` ((low, high) per level; None for categories),
        ``positions`` (``"interpolation"``, ``"extrapolation"`` or ``"new value"``), ``scale``
        (``"categorical"``, ``"levels"``, ``"log bins"`` or ``"linear bins"``) and ``edges`` (bin edges).
    """
    column = _axis_column(table, axis)
    numeric = all(_is_number(v) for v in column)
    keys = np.array([_key(v) for v in column], dtype=object)
    distinct = sorted(set(keys.tolist()))
    if bins is not None:
        bins = check_int("bins", bins, low=2)
        if not numeric:
            raise ValueError(f"held-out {axis}: values are not numbers ({', '.join(map(str, distinct[:5]))}); "
                             f"they cannot be binned")
    if not numeric:
        index = np.array([distinct.index(k) for k in keys.tolist()])
        return AxisLevels(index, tuple(map(str, distinct)), tuple((None, None) for _ in distinct),
                       tuple("new value" for _ in distinct), "categorical", None)
    if bins is None and len(distinct) <= MAX_LEVELS:
        index = np.array([distinct.index(k) for k in keys.tolist()])
        n = len(distinct)
        positions = tuple("extrapolation" if i in (0, n - 1) else "interpolation" for i in range(n))
        return AxisLevels(index, tuple(f"{v:g}" for v in distinct), tuple((float(v), float(v)) for v in distinct),
                       positions, "levels", None)
    bins = DEFAULT_BINS if bins is None else bins
    values = np.array([float(v) for v in column])
    if log is None:
        log = axis in LOG_AXES and bool(np.all(values > 0))
    if log and not np.all(values > 0):
        raise ValueError(f"held-out {axis}: log-space bins need positive values")
    x = np.log(values) if log else values
    low, high = float(x.min()), float(x.max())
    if high == low:
        raise ValueError(f"held-out {axis}: a single value; nothing to hold out")
    raw = np.clip(np.floor((x - low) / (high - low) * bins + 1e-9), 0, bins - 1).astype(int)
    edges = np.linspace(low, high, bins + 1)
    edges = np.exp(edges) if log else edges
    used = sorted(set(raw.tolist()))
    index = np.array([used.index(b) for b in raw.tolist()])
    labels = tuple(f"[{_fmt(edges[b])}, {_fmt(edges[b + 1])}{']' if b == bins - 1 else ')'}" for b in used)
    positions = tuple("extrapolation" if b in (used[0], used[-1]) else "interpolation" for b in used)
    return AxisLevels(index, labels, tuple((float(edges[b]), float(edges[b + 1])) for b in used), positions,
                   "log bins" if log else "linear bins", tuple(float(e) for e in edges))


@dataclass(frozen=True)
class HoldoutLevel:
    """One held-out level of :class:`HoldoutResult`.

    Attributes
    ----------
    label : str
        The value, or the bin ``[low, high)``.
    low, high : float or None
        Its numeric range (equal for a discrete level; None for a category).
    position : {"interpolation", "extrapolation", "new value"}
    n_test_networks, n_train_networks : int
        Networks of the level (tested in every split) and of the other levels (a ``1 - test_fraction``
        random part of each rule's trains each split).
    held_out : EvaluationResult or None
        None when the level could not be held out (``skipped`` says why).
    in_distribution_accuracy : float or None
        Network accuracy on the level's networks when the decoder saw the level (module docstring).
    in_distribution_n : int
        Distinct networks of the level the in-distribution cross-validation tested.
    bootstrap95 : (float, float) or None
        Percentile interval of the held-out network accuracy, resampling the test networks within their
        rule and the splits.
    curves_held_out : EvaluationResult or None
        The same held-out test decoding the learning curves alone (when curves were given).
    skipped : str
    """

    label: str
    low: float | None
    high: float | None
    position: str
    n_test_networks: int
    n_train_networks: int
    held_out: EvaluationResult | None = field(repr=False)
    in_distribution_accuracy: float | None
    in_distribution_n: int
    bootstrap95: tuple[float, float] | None
    curves_held_out: EvaluationResult | None = field(default=None, repr=False)
    skipped: str = ""

    @property
    def held_out_accuracy(self) -> float | None:
        """Network accuracy pooled over every (split, test network) prediction."""
        return _pooled(self.held_out)

    def row(self) -> dict[str, Any]:
        """A plain dict (one row of ``holdout.csv``)."""
        wilson = self.held_out.network_accuracy_interval() if self.held_out is not None else (None, None)
        in_wilson = ((None, None) if self.in_distribution_accuracy is None else
                     wilson_interval(self.in_distribution_accuracy * self.in_distribution_n, self.in_distribution_n))
        curves = self.curves_held_out
        curves_wilson = curves.network_accuracy_interval() if curves is not None else (None, None)
        return {"level": self.label, "low": self.low, "high": self.high, "position": self.position,
                "n_test_networks": self.n_test_networks, "n_train_networks": self.n_train_networks,
                "in_distribution_accuracy": self.in_distribution_accuracy, "in_distribution_n": self.in_distribution_n,
                "in_distribution_wilson_low": in_wilson[0], "in_distribution_wilson_high": in_wilson[1],
                "held_out_accuracy": self.held_out_accuracy,
                "held_out_balanced_accuracy": (float(np.mean(self.held_out.network_balanced_accuracy))
                                               if self.held_out is not None else None),
                "wilson_low": wilson[0], "wilson_high": wilson[1],
                "bootstrap_low": self.bootstrap95[0] if self.bootstrap95 else None,
                "bootstrap_high": self.bootstrap95[1] if self.bootstrap95 else None,
                "curves_held_out_accuracy": _pooled(curves), "curves_wilson_low": curves_wilson[0],
                "curves_wilson_high": curves_wilson[1], "skipped": self.skipped}


def _pooled(result: EvaluationResult | None) -> float | None:
    if result is None or not result.predictions:
        return None
    return float(np.mean([row["correct"] for row in result.predictions]))


@dataclass(frozen=True, eq=False)
class HoldoutResult:
    """Outcome of :func:`holdout_table`.

    Attributes
    ----------
    axis : str
    decoder : str
    features : str
        What the decoder saw (a label, e.g. ``"paper"``).
    scale : str
        ``"categorical"``, ``"levels"``, ``"log bins"`` or ``"linear bins"``.
    edges : tuple of float or None
        Bin edges (binned axes).
    levels : tuple of HoldoutLevel
    in_distribution : EvaluationResult
        Ordinary grouped cross-validation over every level (the reference line).
    chance : float
        ``1 / n_rules``.
    """

    axis: str
    decoder: str
    features: str
    scale: str
    edges: tuple[float, ...] | None
    levels: tuple[HoldoutLevel, ...]
    in_distribution: EvaluationResult = field(repr=False)
    chance: float

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per level, with ``axis``, ``decoder``, ``features`` and ``chance``."""
        return [{"axis": self.axis, "decoder": self.decoder, "features": self.features, **level.row(),
                 "chance": self.chance} for level in self.levels]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: the rows, the in-distribution accuracy (mean, s.e.m., Wilson) and the scale."""
        s = self.in_distribution.summary()
        return {"axis": self.axis, "decoder": self.decoder, "features": self.features, "scale": self.scale,
                "edges": list(self.edges) if self.edges else None, "chance": self.chance,
                "in_distribution": {"network_accuracy_mean": s["network_accuracy_mean"],
                                    "network_accuracy_sem": s["network_accuracy_sem"],
                                    "network_accuracy_wilson95": s["network_accuracy_wilson95"],
                                    "n_networks": s["n_networks"]},
                "levels": self.rows()}


def _bootstrap(result: EvaluationResult, n_bootstrap: int, seed: int) -> tuple[float, float] | None:
    """Percentile interval of the network accuracy, resampling both the test networks (within their rule)
    and the splits (the training networks drawn), each with replacement."""
    splits = sorted({row["split"] for row in result.predictions})
    ids = sorted({row["network_id"] for row in result.predictions})
    if not ids or n_bootstrap < 1:
        return None
    correct = np.full((len(splits), len(ids)), np.nan)
    rules: dict[str, str] = {}
    for row in result.predictions:
        correct[splits.index(row["split"]), ids.index(row["network_id"])] = float(row["correct"])
        rules[row["network_id"]] = row["rule"]
    rng = np.random.default_rng(seed)
    networks = stratified_bootstrap_indices([rules[i] for i in ids], n_bootstrap, rng)
    drawn_splits = rng.integers(0, len(splits), size=(n_bootstrap, len(splits)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate whose draws were never tested: NaN
        replicates = np.array([np.nanmean(correct[np.ix_(drawn_splits[b], networks[b])])
                               for b in range(n_bootstrap)])
    low, high = percentile_interval(replicates)
    return float(low), float(high)


def _held_out(table: FeatureTable, index: np.ndarray, level: int, decoder: Any, label: str, kwargs: dict
              ) -> EvaluationResult:
    test_side = index == level
    train_side = (index >= 0) & ~test_side
    splits = _generalization_splits(table, train_side, test_side, kwargs["n_splits"], kwargs["test_fraction"],
                                    kwargs["seed"])
    note = (f"held out {label}: {len(np.unique(table.network_id[test_side]))} test networks, "
            f"{len(np.unique(table.network_id[train_side]))} training networks")
    return cross_validate(table, decoder, splits, seed=kwargs["seed"], n_jobs=kwargs["n_jobs"],
                          param_grid=kwargs["param_grid"], test_fraction=kwargs["test_fraction"],
                          split_kind="generalization", notes=(note,))


def _network_axis(table: FeatureTable, index: np.ndarray) -> bool:
    """Every network has one level (False for e.g. the rig: one network seen by several presets)."""
    seen: dict[str, int] = {}
    for network, level in zip(table.network_id.tolist(), index.tolist()):
        if seen.setdefault(network, level) != level:
            return False
    return True


def _curves_index(curves: FeatureTable, levels: AxisLevels, table: FeatureTable) -> np.ndarray:
    """The level of each network of the curves table (that of its examples in ``table``; -1 if absent)."""
    by_network = dict(zip(table.network_id.tolist(), levels.index.tolist()))
    return np.array([by_network.get(n, -1) for n in curves.network_id.tolist()])


def holdout_table(table: FeatureTable, axis: str, decoder: str | Any = "random_forest", bins: int | None = None, *,
                  log: bool | None = None, curves: FeatureTable | None = None, features: str = "paper",
                  n_splits: int = 10, test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
                  param_grid: Any = None, n_bootstrap: int = 2000,
                  in_distribution: EvaluationResult | None = None) -> HoldoutResult:
    """Leave each level of ``axis`` out in turn: train on the other levels, test on the held-out one.

    Parameters
    ----------
    table : FeatureTable
        For ``axis="rig"``, the tables of several rigs stacked
        (:func:`~virtual_lab.analysis.session_tables.align_tables`, then
        :func:`~virtual_lab.analysis.tables.concat_tables`).
    axis : str
        A metadata key: ``learning_rate_scale`` (the multiplier of the rule's base rate), ``learning_rate``,
        ``width``, ``depth``, ``batch_size``, ``task``, ``architecture``, ``paradigm``, ``rig``...
    decoder : str or estimator, default="random_forest"
    bins : int, optional
        Hold out bins instead of values (see :func:`holdout_levels`; default: bins only for a continuous
        axis, more than :data:`MAX_LEVELS` distinct values).
    log : bool, optional
        Bins in log space (default: for learning rates).
    curves : FeatureTable, optional
        The learning curves of the same networks
        (:func:`~virtual_lab.analysis.controls.performance_table`): each level is also held out decoding
        them alone.
    features : str, default="paper"
        A label of what ``table`` holds, stored in the result.
    n_splits, test_fraction, seed, n_jobs, param_grid
        As in :func:`~virtual_lab.analysis.generalization.generalize`.
    n_bootstrap : int, default=2000
        Resamples of the bootstrap interval (0: none).
    in_distribution : EvaluationResult, optional
        An ordinary cross-validation of ``table`` with ``decoder`` already run (reused as the reference).

    Returns
    -------
    HoldoutResult
        A level that cannot be held out (e.g. its rules missing from the other levels) has ``skipped``
        set and no result.

    Raises
    ------
    ValueError
        An unknown axis, an example without a value, or fewer than two levels.
    """
    kwargs = dict(n_splits=check_int("n_splits", n_splits, low=1), test_fraction=test_fraction, seed=seed,
                  n_jobs=n_jobs, param_grid=param_grid)
    levels = holdout_levels(table, axis, bins, log)
    if len(levels.labels) < 2:
        raise ValueError(f"held-out {axis}: the sessions have a single {axis} ({levels.labels[0]}); holding one "
                         f"out needs at least two")
    per_network = _network_axis(table, levels.index)
    if in_distribution is None:
        in_distribution = evaluate(table, decoder, **kwargs)
    curves_index = _curves_index(curves, levels, table) if curves is not None and per_network else None
    out = []
    for level, label in enumerate(levels.labels):
        test_networks = np.unique(table.network_id[levels.index == level])
        train_networks = np.unique(table.network_id[levels.index != level])
        in_acc, in_n = _inside_level(table, levels.index == level, test_networks, in_distribution, per_network,
                                     decoder, kwargs, f"{axis} {label}")
        low, high = levels.ranges[level]
        common = dict(label=label, low=low, high=high, position=levels.positions[level],
                      n_test_networks=len(test_networks), n_train_networks=len(train_networks),
                      in_distribution_accuracy=in_acc, in_distribution_n=in_n)
        try:
            result = _held_out(table, levels.index, level, decoder, f"{axis} {label}", kwargs)
        except ValueError as error:
            logger.warning("held-out %s %s skipped: %s", axis, label, error)
            out.append(HoldoutLevel(**common, held_out=None, bootstrap95=None, skipped=str(error)))
            continue
        curves_result = None if curves_index is None else _curves_held_out(curves, curves_index, level, decoder,
                                                                             f"{axis} {label}", kwargs)
        out.append(HoldoutLevel(**common, held_out=result, bootstrap95=_bootstrap(result, n_bootstrap, seed + level),
                                curves_held_out=curves_result))
    return HoldoutResult(axis=axis, decoder=in_distribution.decoder, features=features, scale=levels.scale,
                         edges=levels.edges, levels=tuple(out), in_distribution=in_distribution,
                         chance=1.0 / len(table.classes))


def _inside_level(table: FeatureTable, at_level: np.ndarray, test_networks: np.ndarray,
                  in_distribution: EvaluationResult, per_network: bool, decoder: str | Any, kwargs: dict[str, Any],
                  name: str) -> tuple[float | None, int]:
    """The in-distribution accuracy at one level and its number of test networks: the ordinary
    cross-validation's predictions of the level's networks (an axis with one value per network), else a
    cross-validation within the level (None, 0 when it cannot be run)."""
    if per_network:
        rows = [r for r in in_distribution.predictions if r["network_id"] in set(test_networks.tolist())]
        return (float(np.mean([r["correct"] for r in rows])) if rows else None), len({r["network_id"] for r in rows})
    try:
        inside = evaluate(table.subset(at_level), decoder, **kwargs)
    except ValueError as error:
        logger.info("held-out %s: no in-distribution accuracy (%s)", name, error)
        return None, 0
    return _pooled(inside), inside.n_test_networks


def _curves_held_out(curves: FeatureTable, curves_index: np.ndarray, level: int, decoder: str | Any, name: str,
                     kwargs: dict[str, Any]) -> EvaluationResult | None:
    """The learning curves alone decoded with ``level`` held out (None when that cannot be run)."""
    try:
        return _held_out(curves, curves_index, level, decoder, name, kwargs)
    except ValueError as error:
        logger.info("held-out %s, curves alone: %s", name, error)
        return None


def _cell(value: float | None, low: float | None = None, high: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else "")


def holdout_markdown(results: Sequence[HoldoutResult]) -> list[str]:
    """The generalization table as Markdown lines: one row per result x level (printed by ``decode``)."""
    header = ["decoder", "features", "held-out level", "position", "test nets", "in-distribution acc.",
              "held-out acc. [Wilson 95%]", "bootstrap 95%", "curves alone held-out"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        for row in result.rows():
            lines.append("| " + " | ".join([
                result.decoder, result.features, row["level"], row["position"], str(row["n_test_networks"]),
                _cell(row["in_distribution_accuracy"]) + (f" (n={row['in_distribution_n']})"
                                                         if row["in_distribution_accuracy"] is not None else ""),
                _cell(row["held_out_accuracy"], row["wilson_low"], row["wilson_high"]) if not row["skipped"]
                else f"skipped: {row['skipped']}",
                _cell(row["bootstrap_low"], None) + (f"-{row['bootstrap_high']:.2f}" if row["bootstrap_high"]
                                                     is not None else ""),
                _cell(row["curves_held_out_accuracy"], row["curves_wilson_low"], row["curves_wilson_high"])]) + " |")
    for result in results:
        s = result.summary()["in_distribution"]
        low, high = s["network_accuracy_wilson95"]
        lines.append(f"\nIn-distribution ({result.decoder}, {result.features}; grouped CV over every level): "
                     f"network accuracy {s['network_accuracy_mean']:.2f} [{low:.2f}, {high:.2f}], chance "
                     f"{result.chance:.2f}.")
    return lines


def plot_holdout(results: Sequence[HoldoutResult], path: str | Path) -> Path:
    """Held-out accuracy per level with Wilson 95% intervals, one series per result; in-distribution
    accuracy per level (open markers) and overall (dashed line, same colour); the learning curves' held-out
    accuracy (crosses, when computed); chance (dotted); extrapolation levels shaded."""
    from virtual_lab.analysis.report import _plt

    plt = _plt()
    results = list(results)
    labels = list(dict.fromkeys(level.label for r in results for level in r.levels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(labels) + 2.5) + 2.2, 3.8))
    width = 0.7 / max(1, len(results))
    has_curves = False
    for k, result in enumerate(results):
        colour = f"C{k}"
        offset = (k - (len(results) - 1) / 2) * width
        for level in result.levels:
            x = labels.index(level.label) + offset
            if level.in_distribution_accuracy is not None:
                ax.plot(x, level.in_distribution_accuracy, marker="o", mfc="none", color=colour, ms=6)
            if level.held_out is None:
                continue
            acc = level.held_out_accuracy
            low, high = level.held_out.network_accuracy_interval()
            ax.errorbar(x, acc, yerr=[[max(0.0, acc - low)], [max(0.0, high - acc)]], fmt="s", color=colour,
                        capsize=3, ms=5,
                        label=f"{result.decoder} / {result.features}" if level is result.levels[0] else None)
            if level.curves_held_out is not None:
                ax.plot(x, _pooled(level.curves_held_out), marker="x", color=colour, ms=6, ls="")
                has_curves = True
        ax.axhline(float(np.mean(result.in_distribution.network_accuracy)), color=colour, ls="--", lw=1)
    if results:
        ax.axhline(results[0].chance, color="k", ls=":", lw=1, label="chance")
        extremes = [i for i, label in enumerate(labels)
                    if any(lv.label == label and lv.position == "extrapolation" for r in results for lv in r.levels)]
        for i in extremes:
            ax.axvspan(i - 0.45, i + 0.45, color="0.92", zorder=0)
        ax.set_xlabel(f"held-out {results[0].axis}" + (" (grey: extrapolation)" if extremes else ""))
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30 if len(labels) > 5 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("network accuracy (Wilson 95%)")
    ax.plot([], [], marker="o", mfc="none", ls="", color="0.3", label="in distribution (this level)")
    ax.plot([], [], ls="--", color="0.3", label="in distribution (all levels)")
    if has_curves:
        ax.plot([], [], marker="x", ls="", color="0.3", label="learning curves alone (held out)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
