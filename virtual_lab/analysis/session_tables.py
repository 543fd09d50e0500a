"""Feature tables from NWB session files: read each session, observe it through every rig, one table per rig.

:func:`tables_from_sessions` is what ``virtual-lab decode`` runs on session files or folders;
:func:`rig_observables` decides on the first session which observables each rig measures;
:func:`align_tables` makes the tables of different rigs comparable, for training on one rig and testing on
another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.controls import temporal_features
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
    """Complete session files under ``paths`` (files or folders), sorted and absolute
    (:func:`virtual_lab.sessions.find_sessions`: damaged or foreign files are warned about and skipped)."""
    from virtual_lab.sessions import find_sessions

    return sorted(find_sessions(paths, kind="any").complete)


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
        Rig -> per-network performance curves at the rig's checkpoints (for
        :func:`~virtual_lab.analysis.controls.performance_table`).

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
