"""Feature tables from NWB session files: read each session, observe it through every rig, one table per rig.

:func:`tables_from_sessions` is what ``virtual-lab decode`` runs on session files or folders (with a cache
folder, each session's observation through each rig is computed once:
:mod:`virtual_lab.analysis.observable_cache`);
:func:`rig_observables` decides on the first session which observables each rig measures;
:func:`align_tables` makes the tables of different rigs comparable, for training on one rig and testing on
another.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.controls import temporal_features
from virtual_lab.analysis.observable_cache import Observation, ObservableCache
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.analysis.tables import _columns, _replace, concat_tables

logger = logging.getLogger(__name__)

__all__ = ["align_tables", "observe_session", "read_session_arrays", "rig_observables", "tables_from_sessions"]


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


def _observe(ground_truth: Any, rig: str, observables: tuple, seed: int) -> Observation:
    """One session seen through one rig: its feature table (or why there is none) and its curves."""
    from virtual_lab.analysis.observables import build_feature_table

    recording = observe_session(ground_truth, rig, seed)
    table, error = None, ""
    try:
        table = build_feature_table([recording], observables)
    except ValueError as failure:  # e.g. a diverged network
        error = "network diverged" if recording.metadata.get("diverged", False) else str(failure)
    return Observation(table, error, recording.run_id, recording.rule, dict(recording.metadata),
                       np.asarray(ground_truth.train_loss), np.asarray(ground_truth.test_accuracy),
                       np.asarray(recording.checkpoint_indices),
                       np.asarray(recording.checkpoint_steps, dtype=np.int64))


def _attach(observation: Observation, rig: str, path: str) -> tuple[FeatureTable | None, _Curves]:
    """An observation's table and curves with the rig and the session's path in every metadata entry."""
    metadata = {**dict(observation.metadata), "rig": rig, "session_path": str(path)}
    curves = _Curves(observation.run_id, observation.rule, metadata,
                     _Source(observation.train_loss, observation.test_accuracy), observation.checkpoint_indices)
    if observation.table is None:
        return None, curves
    steps = tuple(int(s) for s in observation.checkpoint_steps)
    return _replace(observation.table, metadata=tuple({**m, "rig": rig, "session_path": str(path),
                                                       "checkpoint_steps": steps}
                                                      for m in observation.table.metadata)), curves


def _cached(path: str, rigs: tuple[str, ...], observables: Mapping[str, tuple], seed: int, cache_dir: str
            ) -> tuple[dict[str, str], dict[str, Observation]]:
    """The cache keys of a session's rigs (none when the file does not open) and the observations the cache
    in ``cache_dir`` holds (:mod:`~virtual_lab.analysis.observable_cache`)."""
    from virtual_lab.sessions.checksum import file_sha256

    cache = ObservableCache(cache_dir)
    try:
        digest = file_sha256(path)
    except OSError:  # reported by whoever reads the file
        return {}, {}
    keys = {rig: cache.key(digest, rig, seed, observables[rig]) for rig in rigs}
    return keys, {rig: hit for rig in rigs if (hit := cache.load(keys[rig])) is not None}


def _session_features(path: str, rigs: tuple[str, ...], observables: Mapping[str, tuple], seed: int,
                      cache_dir: str | None = None, cached: tuple[dict, dict] | None = None
                      ) -> tuple[list[FeatureTable | None], list[_Curves | None], list[tuple[str, str]], str, int]:
    """Tables and curves of one session through every rig; ``errors`` holds (rig, reason) per rig that failed,
    the fourth item why the file could not be read ("" when it could), the last how many rigs' observables
    were computed: the others came from the cache in ``cache_dir`` (``cached``: what :func:`_cached` found).
    """
    keys: dict[str, str] = {}
    found: dict[str, Observation] = {}
    if cache_dir is not None:
        if cached is None:
            cached = _cached(path, rigs, observables, seed, cache_dir)
        keys, found = dict(cached[0]), dict(cached[1])
    missing = [rig for rig in rigs if rig not in found]
    if missing:
        try:
            ground_truth = read_session_arrays(path)
        except (KeyError, OSError, TypeError, ValueError) as error:
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            reason = f"unreadable ({type(error).__name__}: {text})"
            return [None] * len(rigs), [None] * len(rigs), [(rig, reason) for rig in rigs], text, 0
        for rig in missing:
            found[rig] = _observe(ground_truth, rig, observables[rig], seed)
            if rig in keys:
                ObservableCache(cache_dir).store(keys[rig], found[rig])
    tables, curves = zip(*(_attach(found[rig], rig, path) for rig in rigs))
    errors = [(rig, found[rig].error) for rig in rigs if found[rig].error]
    return list(tables), list(curves), errors, "", len(missing)


def _reasons(reasons: Sequence[str]) -> str:
    """Per-session reasons, deduplicated with counts, most frequent first, on one line."""
    from collections import Counter

    return "; ".join(f"{n} session{'s' if n > 1 else ''}: {reason}"
                     for reason, n in Counter(reasons).most_common())


def _complete_files(paths: Sequence[str] | str) -> list:
    """Complete session files under ``paths`` (files or folders), sorted and absolute
    (:func:`virtual_lab.sessions.find_sessions`: damaged or foreign files are warned about and skipped)."""
    from virtual_lab.sessions import find_sessions

    return sorted(find_sessions(paths, kind="any").complete)


def _first_readable(paths: Sequence[str] | str) -> Any:
    """The first session of ``paths`` that reads (session files are tried in order; folders are searched)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = items if items and all(Path(p).is_file() for p in items) else _complete_files(items)
    for path in files:
        try:
            return read_session_arrays(str(path))
        except (KeyError, OSError, TypeError, ValueError) as error:  # reported by whoever reads every file
            logger.info("choosing the observables on another session: %s", error)
    raise ValueError(f"{', '.join(map(str, items))}: no session reads ({len(files)} tried)")


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
    """The observables each rig measures, decided on the first session of ``paths`` that reads.

    Each rig observes that session once, and
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
    ground_truth = _first_readable(paths)
    return {rig: measured_observables(observables, observe_session(ground_truth, rig, seed).measures, rig,
                                      explicit=explicit) for rig in rigs}


def tables_from_sessions(paths: Sequence[str] | str, rigs: Sequence[str] = ("full",),
                         observables: Any = None, seed: int = 0, n_jobs: int = 1, *, strict: bool = False,
                         skipped: list | None = None, cache_dir: str | os.PathLike | None = None,
                         cache_stats: dict | None = None) -> tuple[dict[str, FeatureTable], dict[str, list[Any]]]:
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
    strict : bool, default=False
        A session file that fails to read (e.g. damaged in the middle of an array) raises
        :class:`~virtual_lab.sessions.SessionReadError` instead of being skipped.
    skipped : list, optional
        Receives a :class:`~virtual_lab.sessions.SkippedFile` (kind ``"corrupted"``) for every session file
        that failed to read and was left out; each is also logged as one warning naming the file.
    cache_dir : str or path-like, optional
        Folder of the observable cache (:mod:`virtual_lab.analysis.observable_cache`, e.g.
        :func:`~virtual_lab.analysis.observable_cache.default_cache_dir`): each session's observables through
        each rig are read from it when its entry (session content hash, rig, seed, observables, code version)
        is there, else computed and stored. Default: no cache.
    cache_stats : dict, optional
        Receives ``"computed"`` (session x rig observations computed) and ``"cached"`` (read from the cache).

    Returns
    -------
    tables : dict of str to FeatureTable
        Rig -> table; every example's metadata has ``rig``, ``session_path`` and ``checkpoint_steps``.
    curves : dict of str to list
        Rig -> per-network performance curves at the rig's checkpoints (for
        :func:`~virtual_lab.analysis.controls.performance_table`).

    Raises
    ------
    ValueError
        No session; an unknown preset; or no usable session for a rig, with the reasons of its sessions
        (deduplicated, with counts) on one line.
    SessionReadError
        With ``strict``, the first session file that fails to read.
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
        for rig, (kept, note) in rig_observables([str(f) for f in files], rigs, observables, seed=seed).items():
            chosen[rig] = kept
            if note:
                logger.info("%s", note)
    from virtual_lab.progress import progress_bar

    cache = None if cache_dir is None else str(cache_dir)
    # sessions the cache serves whole are assembled here; only the others go to the worker processes
    cached = [None if cache is None else _cached(str(path), rigs, chosen, seed, cache) for path in files]
    served = {i: _session_features(str(path), rigs, chosen, seed, cache, cached[i]) for i, path in enumerate(files)
              if cached[i] is not None and len(cached[i][1]) == len(rigs)}
    todo = [i for i in range(len(files)) if i not in served]
    computed = Parallel(n_jobs=n_jobs if len(todo) > 1 else 1, batch_size="auto", return_as="generator")(
        delayed(_session_features)(str(files[i]), rigs, chosen, seed, cache, cached[i]) for i in todo)
    served.update(zip(todo, progress_bar(computed, total=len(todo), desc=f"observing ({', '.join(rigs)})",
                                         unit="sessions")))
    outputs = [served[i] for i in range(len(files))]
    _report_unreadable(files, outputs, strict, skipped)
    computed = sum(out[4] for out in outputs)
    cached = sum(len(rigs) - out[4] for out in outputs if not out[3])
    if cache is not None:
        logger.info("observables: %d session x rig observations computed, %d read from the cache in %s", computed,
                    cached, cache)
    if cache_stats is not None:
        cache_stats.update(computed=computed, cached=cached)
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


def _report_unreadable(files: Sequence[Any], outputs: Sequence[tuple], strict: bool, skipped: list | None) -> None:
    """Every session file that failed to read: one warning naming it (and an entry in ``skipped``), or with
    ``strict`` the error."""
    from virtual_lab.sessions import SessionReadError, SkippedFile

    for path, out in zip(files, outputs):
        if not out[3]:
            continue
        if strict:
            raise SessionReadError(out[3] if str(path) in out[3] else f"{path}: {out[3]}")
        logger.warning("skipping %s (corrupted: %s)", path, out[3])
        if skipped is not None:
            skipped.append(SkippedFile(Path(path), "corrupted", out[3]))


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
