"""Find session files and tell complete ones from damaged, foreign and temporary ones, the same way everywhere.

:func:`find_sessions` is the one search of session files: every command that takes recordings (files or
folders) goes through it, so a truncated HDF5 file, an NWB file from another tool, a random file named
``.nwb`` or the temporary file of a write in progress is classified, reported and skipped identically.
:func:`describe_session_file` classifies one file (h5py only, a few ms, never raises).

Which files a folder holds (searched recursively, results sorted):

* candidates: ``*_ses-groundtruth.nwb`` for ``kind="groundtruth"`` (every ``*.nwb`` in a folder that has
  none of those: sessions written under another session id), every ``*.nwb`` for ``kind="any"``;
* temporary: hidden names (``.<name>.nwb``), ``*.nwb.tmp`` (a write not yet renamed) and anything inside a
  hidden folder below the searched one (a sweep's ``.staging/``). They are never read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import h5py

from virtual_lab.sessions.layout import _ACTIVATIONS_PREFIX, GROUND_TRUTH_SESSION_ID
from virtual_lab.sessions.read import _h5_layers, _h5_metadata, _h5_network
from virtual_lab.validation import check_choice

logger = logging.getLogger(__name__)

__all__ = ["SESSION_FILE_KINDS", "SessionFiles", "SkippedFile", "TEMPORARY", "describe_session_file",
           "find_sessions", "is_complete_session", "partition_session_files", "session_candidates"]

#: Kinds of file :func:`describe_session_file` tells apart.
SESSION_FILE_KINDS = ("complete", "missing", "not_hdf5", "corrupted", "foreign", "incomplete")
#: Kind :func:`find_sessions` gives a temporary file (hidden name, ``.tmp``, inside a hidden folder).
TEMPORARY = "temporary"
#: Folder search patterns of :func:`find_sessions`, by ``kind``.
_FIND_KINDS = ("groundtruth", "any")
_GROUND_TRUTH_SUFFIX = f"_ses-{GROUND_TRUTH_SESSION_ID}.nwb"


def describe_session_file(path: str | os.PathLike) -> tuple[str, str, dict[str, Any]]:
    """Classify a file that should hold a ground-truth session, without ever raising.

    Checks, with h5py only (a few ms per file), that the file is HDF5, NWB, holds the virtual_lab layout
    and that every container has consistent shapes; truncation is caught by HDF5 when opening.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    kind : str
        One of :data:`SESSION_FILE_KINDS`: ``"complete"``; ``"missing"`` (no file); ``"not_hdf5"`` (e.g. a
        random file named ``.nwb``); ``"corrupted"`` (HDF5 that cannot be read, e.g. truncated);
        ``"foreign"`` (readable HDF5 or NWB that is not a virtual_lab session, e.g. from another tool);
        ``"incomplete"`` (a virtual_lab session with missing or inconsistent parts).
    reason : str
        One line for people; empty when complete.
    metadata : dict
        The run metadata when the kind is ``"complete"``, else empty.
    """
    path = Path(path)
    try:
        if not path.is_file():
            return "missing", "no such file", {}
        size = path.stat().st_size
        if size == 0:
            return "not_hdf5", "empty file (0 bytes)", {}
        if not h5py.is_hdf5(path):
            return "not_hdf5", f"not an HDF5/NWB file ({size} bytes, no HDF5 signature)", {}
    except OSError as error:
        return "corrupted", f"cannot be read: {error}", {}
    try:
        f = h5py.File(path, "r")
    except Exception as error:  # noqa: BLE001 - h5py raises OSError and others for damaged files
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        kind = "truncated" if "truncated" in text else "damaged"
        return "corrupted", f"{kind} HDF5 file ({size} bytes): {text}", {}
    try:
        with f:
            return _describe_open_file(f)
    except KeyError as error:
        return "incomplete", f"virtual_lab session missing {error}", {}
    except Exception as error:  # noqa: BLE001 - damaged data inside a file that opened
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return "corrupted", f"damaged HDF5 content: {text}", {}


def _describe_open_file(f: h5py.File) -> tuple[str, str, dict[str, Any]]:
    """:func:`describe_session_file` of a file that opened as HDF5 (may raise KeyError and read errors)."""
    if "nwb_version" not in f.attrs:
        return "foreign", "HDF5 file that is not NWB (no nwb_version attribute)", {}
    network = _h5_network(f)
    if f"{network}/training" not in f or f"{network}/layers" not in f:
        identifier = f["identifier"][()] if "identifier" in f else b"?"
        identifier = identifier.decode("utf-8", "replace") if isinstance(identifier, bytes) else identifier
        return ("foreign", f"NWB file that is not a virtual_lab ground-truth session "
                f"(identifier {identifier!r}, no {network}/training)", {})
    names, columns, _, n_units = _h5_layers(f)
    n_t = len(f["intervals/epochs/id"])
    n_s = f["stimulus/templates/probe_stimuli/data"].shape[0]
    problems = []
    if not names or n_t < 1:
        problems.append("no layers or no checkpoints")
    if len(f["intervals/trials/id"]) != n_t * n_s:
        problems.append("trials do not cover every checkpoint x stimulus")
    for column, units in zip(columns, n_units):
        if f[f"acquisition/{_ACTIVATIONS_PREFIX}{column}/data"].shape != (n_t * n_s, units):
            problems.append(f"activations of {column} have the wrong shape")
        if f[f"{network}/weights/{column}"].shape[0] != n_t:
            problems.append(f"weights of {column} have the wrong number of checkpoints")
        if f[f"{network}/activity_change/{column}"].shape != (n_t, n_s):
            problems.append(f"activity change of {column} has the wrong shape")
    if len(f[f"{network}/units/id"]) != sum(n_units):
        problems.append("units table does not match the layers")
    if len(f["processing/behavior/performance/id"]) != n_t:
        problems.append("performance table does not match the checkpoints")
    metadata = _h5_metadata(f)
    if not metadata.get("run_id"):
        problems.append("no run_id in the training table")
    if problems:
        return "incomplete", "virtual_lab session with " + "; ".join(problems), {}
    return "complete", "", metadata


def is_complete_session(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete ground-truth session with the expected layout.

    The same check as :func:`describe_session_file` (kind ``"complete"``): the file opens as HDF5 and NWB
    and every container of the layout is present with consistent shapes (no array data is read). Never
    raises: a missing, empty, truncated, random or foreign file, or a folder, gives ``False``.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    bool
    """
    kind, reason, _ = describe_session_file(path)
    if kind != "complete":
        logger.debug("%s is not a complete session (%s: %s)", path, kind, reason)
    return kind == "complete"


# ----------------------------------------------------------------------------------------------- searching


class SkippedFile(NamedTuple):
    """A file :func:`find_sessions` did not keep: its absolute path, kind and one-line reason."""

    path: Path
    kind: str
    reason: str


@dataclass(frozen=True)
class SessionFiles:
    """What :func:`find_sessions` found.

    Attributes
    ----------
    complete : tuple of Path
        Complete ground-truth sessions, absolute paths (folders: sorted; files: in the order given).
    skipped : tuple of SkippedFile
        Every other file found, with its kind (one of :data:`SESSION_FILE_KINDS` other than ``"complete"``,
        or :data:`TEMPORARY`) and the reason.
    metadata : mapping of Path to dict
        The run metadata of each complete file (as :func:`~virtual_lab.sessions.read_session_metadata`
        reads it), read during the check.
    """

    complete: tuple[Path, ...]
    skipped: tuple[SkippedFile, ...] = ()
    metadata: Mapping[Path, Mapping[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def bad(self) -> tuple[SkippedFile, ...]:
        """The skipped files that are not temporary (damaged, foreign or incomplete)."""
        return tuple(s for s in self.skipped if s.kind != TEMPORARY)


def _is_temporary_name(name: str) -> bool:
    return name.startswith(".") or name.endswith(".tmp")


def _search_folder(root: Path, kind: str) -> tuple[list[Path], list[Path]]:
    """(candidates, temporaries) under ``root``, each sorted."""
    candidates, temporaries = [], []
    for path in sorted(root.rglob("*")):
        if not (path.name.endswith(".nwb") or path.name.endswith(".nwb.tmp")) or not path.is_file():
            continue
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts[:-1])
        (temporaries if hidden or _is_temporary_name(path.name) else candidates).append(path)
    if kind == "groundtruth":
        named = [p for p in candidates if p.name.endswith(_GROUND_TRUTH_SUFFIX)]
        if named:  # a folder without any is searched for every *.nwb (other session ids)
            candidates = named
            temporaries = [p for p in temporaries if _GROUND_TRUTH_SUFFIX in p.name]
    return candidates, temporaries


def _path_items(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str | os.PathLike]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("no session files or folders given")
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"session paths must be str or path-like. Got {type(item).__name__} instead.")
    return items


def session_candidates(paths: str | os.PathLike | Iterable[str | os.PathLike], *, kind: str = "any",
                       allow_empty: bool = False) -> tuple[list[Path], list[Path]]:
    """The files :func:`find_sessions` would classify, without opening any: (candidates, temporaries).

    For tools that look at every NWB file whatever its content (e.g. :func:`inspect_sessions`).

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Files and folders (searched recursively).
    kind : {"any", "groundtruth"}, default="any"
        Which file names a folder search keeps (see :func:`find_sessions`).
    allow_empty : bool, default=False
        A folder without any candidate is not an error.

    Returns
    -------
    candidates, temporaries : list of Path
        Absolute paths, duplicates dropped; a file named explicitly is a candidate unless its name is
        temporary (hidden or ``.tmp``).

    Raises
    ------
    ValueError
        No paths given; a path that does not exist; (unless ``allow_empty``) a folder holding no candidate.
        One line naming the path.
    """
    check_choice("kind", kind, _FIND_KINDS)
    candidates: dict[Path, None] = {}
    temporaries: dict[Path, None] = {}
    for item in _path_items(paths):
        path = Path(item).resolve()  # absolute: worker processes may run in another directory
        if path.is_dir():
            found, temporary = _search_folder(path, kind)
            if not found and not allow_empty:
                also = f" (only {len(temporary)} temporary file(s))" if temporary else ""
                raise ValueError(f"{item}: no NWB session file (*.nwb) in this folder{also}")
        elif path.is_file():
            found, temporary = ([], [path]) if _is_temporary_name(path.name) else ([path], [])
        else:
            raise ValueError(f"{item}: no such file or folder")
        candidates.update(dict.fromkeys(found))
        temporaries.update(dict.fromkeys(temporary))
    return list(candidates), list(temporaries)


def find_sessions(paths: str | os.PathLike | Iterable[str | os.PathLike], *, kind: str = "groundtruth",
                  strict: bool = False, allow_empty: bool = False) -> SessionFiles:
    """Find the complete ground-truth sessions among files and folders; report and skip every other file.

    Each candidate is checked with :func:`describe_session_file` (h5py, a few ms); every skipped file is
    logged as one warning naming it (``skipping <path> (<kind>: <reason>)``).

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Session files and folders of them (searched recursively).
    kind : {"groundtruth", "any"}, default="groundtruth"
        What a folder search looks for: ``"groundtruth"``, files named ``*_ses-groundtruth.nwb`` (or every
        ``*.nwb`` in a folder holding none of those); ``"any"``, every ``*.nwb``. Files named explicitly
        are always checked.
    strict : bool, default=False
        Raise on the first damaged, foreign or incomplete file instead of skipping it (temporary files are
        never sessions and are skipped either way).
    allow_empty : bool, default=False
        Return an empty :attr:`SessionFiles.complete` instead of raising when no file is complete (e.g. a
        sweep folder holding only its manifest so far). A path that does not exist is an error either way.

    Returns
    -------
    SessionFiles
        ``complete`` (absolute paths; folders sorted, files in the order given, no duplicates),
        ``skipped`` (path, kind, reason), ``metadata`` of each complete file.

    Raises
    ------
    ValueError
        One line naming the path: a path that does not exist, a folder holding no session file, with
        ``strict`` the first bad file, and (unless ``allow_empty``) no complete session at all.
    """
    items = _path_items(paths)
    candidates, temporaries = session_candidates(items, kind=kind, allow_empty=allow_empty)
    complete, skipped, metadata = [], [], {}
    for path in candidates:
        file_kind, reason, meta = describe_session_file(path)
        if file_kind == "complete":
            complete.append(path)
            metadata[path] = meta
            continue
        if strict:
            raise ValueError(f"{path}: not a complete session ({file_kind}: {reason})")
        skipped.append(SkippedFile(path, file_kind, reason))
    skipped += [SkippedFile(p, TEMPORARY, "temporary file of a write in progress or interrupted; never read")
                for p in temporaries]
    for path, file_kind, reason in skipped:
        logger.warning("skipping %s (%s: %s)", path, file_kind, reason)
    if not complete and not allow_empty:
        first = f"; first: {skipped[0].path}: {skipped[0].kind}: {skipped[0].reason}" if skipped else ""
        where = ", ".join(map(str, items))
        raise ValueError(f"{where}: no complete session ({len(skipped)} file(s) skipped{first})")
    return SessionFiles(tuple(complete), tuple(skipped), metadata)


def _session_files(paths_or_folder: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The ``*.nwb`` files of a folder (temporary ones left out), or the paths given, unchecked.

    Kept for :func:`virtual_lab.analysis.session_tables._complete_files` until it calls :func:`find_sessions`.
    """
    if isinstance(paths_or_folder, (str, os.PathLike)):
        root = Path(paths_or_folder)
        return _search_folder(root, "any")[0] if root.is_dir() else [root]
    return [Path(p) for p in paths_or_folder]


def partition_session_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split candidate files into complete ground-truth sessions and the rest, with a reason for each.

    The per-file check of :func:`find_sessions` on files already listed (paths are kept as given, missing
    files are skipped as ``"missing"``); every skipped file is logged as a warning.

    Parameters
    ----------
    paths : iterable of path-like

    Returns
    -------
    complete : list of Path
    skipped : list of (Path, str)
        Each skipped file with ``"<kind>: <reason>"``.
    """
    complete, skipped = [], []
    for path in map(Path, paths):
        kind, reason, _ = describe_session_file(path)
        if kind == "complete":
            complete.append(path)
        else:
            skipped.append((path, f"{kind}: {reason}"))
            logger.warning("skipping %s (%s: %s)", path, kind, reason)
    return complete, skipped
