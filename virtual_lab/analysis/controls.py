"""Ablations and controls of rule decoding (what the paper's reviewers asked for).

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
- **grouped vs layer-level splits**: :func:`~virtual_lab.analysis.generalization.compare_splits`;
- **permutation**: :func:`~virtual_lab.analysis.permutation.permutation_test`.

:func:`standard_controls` runs the set a standard report shows, with the held-out generalization tests
of :mod:`virtual_lab.analysis.generalization`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.evaluation import evaluate
from virtual_lab.analysis.generalization import HELD_OUT_KEYS, compare_splits, held_out_generalization
from virtual_lab.analysis.observables import FEATURE_NAME_DTYPE, MEASURES, FeatureTable
from virtual_lab.analysis.permutation import permutation_test
from virtual_lab.analysis.tables import _columns, _replace, with_metadata
from virtual_lab.validation import check_choice, check_int, did_you_mean

logger = logging.getLogger(__name__)

__all__ = ["CONTROLS", "OBSERVABLE_CLASSES", "TEMPORAL_CONTROLS", "observable_class", "performance_matched",
           "performance_table", "relabel", "run_control", "temporal_features"]

OBSERVABLE_CLASSES = {"weights": "weight", "activations": "act", "activity_change": "gradavg"}
"""Control name -> measure kept by :func:`observable_class`."""

TEMPORAL_CONTROLS = ("trajectory", "time_average", "last_timepoint", "time_shuffled")

CONTROLS = (*OBSERVABLE_CLASSES, "time_average", "last_timepoint", "time_shuffled", "performance_only",
            "performance_matched", "family", "layer_splits", "permutation")
"""Names accepted by :func:`run_control` (and ``virtual-lab decode --control``)."""


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
    check_choice("measure", measure, MEASURES)
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
    check_choice("kind", kind, TEMPORAL_CONTROLS)
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
    n_bins = check_int("n_bins", n_bins, low=1)
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
                         f"{table.network_id[missing[0]]!r}){did_you_mean(key, keys)}")
    return _replace(table, rule=np.array([str(v) for v in column]))


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
    check_choice("control", name, CONTROLS)
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


def standard_controls(table: FeatureTable, recordings: Sequence[Any], decoder: str, *, rig: str = "full",
                      n_splits: int = 10, test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
                      permutation_decoder: str | None = None, n_permutations: int = 19,
                      held_out: Sequence[str] = HELD_OUT_KEYS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The controls of a standard report, for :func:`virtual_lab.pipeline.decode_sessions`.

    Runs, with ``decoder``: each observable class alone, time average, last timepoint, time shuffled,
    performance only, performance matched, rule family and layer-level splits; held-out generalization
    for every key of ``held_out`` whose value varies across the sessions
    (:func:`~virtual_lab.analysis.generalization.held_out_generalization`); then a network-level
    permutation test with ``permutation_decoder`` (default ``decoder``) and k-means clustering. A control
    the data cannot support (e.g. no overlap in final accuracy) is logged and skipped.

    Returns
    -------
    entries : list of dict
        ``{"rig", "decoder", "control", "summary", "result"}`` per control.
    extras : dict
        ``permutation`` (summary of the test, with ``decoder``), ``clustering`` (summary),
        ``split_difference`` (layer-level minus grouped mean accuracy) and ``skipped`` (control -> reason).
    """
    from virtual_lab.progress import progress_bar

    kwargs = dict(n_splits=n_splits, test_fraction=test_fraction, seed=seed, n_jobs=n_jobs)
    extras: dict[str, Any] = {"skipped": {}}
    names = [n for n in (*OBSERVABLE_CLASSES, "time_average", "last_timepoint", "time_shuffled", "performance_only",
                         "performance_matched", "family", "layer_splits")]
    varying = [key for key in held_out if len({str(v) for v in table.metadata_column(key)}) >= 2]
    bar = progress_bar(total=len(names) + len(varying), desc="controls", unit="controls")
    entries = _named_controls(names, table, recordings, decoder, rig, kwargs, extras, bar)
    entries.extend(_held_out_controls(varying, table, decoder, rig, kwargs, extras, bar))
    bar.close()
    _permutation_and_clustering(table, permutation_decoder or decoder, n_permutations, extras, seed=seed,
                                n_jobs=n_jobs, n_splits=n_splits, test_fraction=test_fraction)
    return entries, extras


def _named_controls(names: Sequence[str], table: FeatureTable, recordings: Sequence[Any], decoder: str, rig: str,
                    kwargs: Mapping[str, Any], extras: dict[str, Any], bar: Any) -> list[dict[str, Any]]:
    """Entries of the controls ``names`` (:func:`run_control`); a control the data cannot support goes to
    ``extras["skipped"]``, the layer-level minus grouped accuracy to ``extras["split_difference"]``."""
    from virtual_lab.progress import quiet

    entries: list[dict[str, Any]] = []
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
    return entries


def _held_out_controls(keys: Sequence[str], table: FeatureTable, decoder: str, rig: str, kwargs: Mapping[str, Any],
                       extras: dict[str, Any], bar: Any) -> list[dict[str, Any]]:
    """Entries of :func:`~virtual_lab.analysis.generalization.held_out_generalization` for each of ``keys``."""
    from virtual_lab.progress import quiet

    entries: list[dict[str, Any]] = []
    for key in keys:  # keys the sessions do not vary in have nothing to hold out
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
    return entries


def _permutation_and_clustering(table: FeatureTable, decoder: str, n_permutations: int, extras: dict[str, Any], *,
                                seed: int, n_jobs: int, n_splits: int, test_fraction: float) -> None:
    """``extras["permutation"]`` and ``extras["clustering"]`` (or the reason in ``extras["skipped"]``)."""
    from virtual_lab.analysis.clustering import cluster_runs

    try:
        if n_permutations < 1:
            raise ValueError("permutation test not requested (n_permutations = 0)")
        test = permutation_test(table, decoder, n_permutations, seed=seed, n_jobs=n_jobs, n_splits=n_splits,
                                test_fraction=test_fraction)
        extras["permutation"] = {"decoder": decoder, **test.summary()}
    except ValueError as error:
        extras["skipped"]["permutation"] = str(error)
    from virtual_lab.progress import progress_bar

    with progress_bar(total=1, desc="clustering", unit="fits") as bar:  # heartbeat lines while k-means runs
        try:
            extras["clustering"] = cluster_runs(table, seed=seed).summary()
        except ValueError as error:
            extras["skipped"]["clustering"] = str(error)
        bar.update()
