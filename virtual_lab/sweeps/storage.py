"""What a sweep keeps on disk: run-file checks, free space, staging and commit, the manifest, the event log.

Every write a sweep makes goes through here: sessions are staged in ``<root>/.staging/<population>-<token>/``
and committed by an atomic ``COMMIT`` list (:func:`commit_staged`, rolled forward or discarded at the next
start by :func:`recover_staging`); ``sweep_manifest.json`` is rewritten atomically (:func:`write_manifest`);
``sweep_log.jsonl`` is appended and fsynced per event (:class:`EventLog`). See :mod:`virtual_lab.sweeps`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from virtual_lab.lab.spec import RunSpec
    from virtual_lab.sweeps.plan import SweepPlan

logger = logging.getLogger(__name__)

__all__ = [
    "EventLog",
    "InsufficientDiskSpaceError",
    "RunFileCheck",
    "check_free_space",
    "check_run_file",
    "commit_staged",
    "estimate_session_bytes",
    "new_staging_folder",
    "previous_runs",
    "read_log",
    "recover_staging",
    "session_checksum",
    "set_aside",
    "spec_metadata",
    "spec_mismatches",
    "write_manifest",
]

MANIFEST_NAME = "sweep_manifest.json"
LOG_NAME = "sweep_log.jsonl"
STAGING_NAME = ".staging"
COMMIT_NAME = "COMMIT"
#: Bytes every session file carries besides its arrays (cached NWB schema, metadata tables).
SESSION_OVERHEAD_BYTES = 450_000


class InsufficientDiskSpaceError(OSError):
    """The recordings folder's disk lacks room for the sessions a sweep is about to write."""


# ----------------------------------------------------------------------------------------------- spec check


SPEC_PREFIX = "spec_"
#: Spec fields whose value in a file written before the field existed is not today's default: such a file
#: holds this legacy value (before ``eval_subset``, the recorded loss was taken on the whole training set), so
#: a sweep retrains it rather than mixing two definitions of the recorded loss in one folder.
LEGACY_VALUES = {"eval_subset": 0}


def _encode_spec_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def spec_metadata(spec: "RunSpec") -> dict[str, Any]:
    """The resolved spec as metadata entries ``spec_<field>`` (sequences as comma-separated text).

    Stored in every session a sweep writes, so a later sweep can tell whether a file holds exactly the run
    it expects. (One entry per field rather than one JSON text: nwbinspector flags JSON objects in tables.)
    The spec's descriptive fields (``RunSpec.DESCRIPTIVE_FIELDS``: how the run was chosen, e.g. its
    learning-rate multiplier) are left out: they are not part of what is checked, and
    :func:`virtual_lab.sweeps.executors.expected_metadata` stores them under their plain names.
    """
    fields = dataclasses.asdict(spec)
    fields.pop("protocol", None)
    for name in getattr(spec, "DESCRIPTIVE_FIELDS", ()):
        fields.pop(name, None)
    return {SPEC_PREFIX + key: _encode_spec_value(value) for key, value in sorted(fields.items())}



def spec_mismatches(spec: "RunSpec", metadata: Mapping[str, Any]) -> list[str]:
    """How a session's stored metadata differs from the spec a sweep expects at its path.

    Parameters
    ----------
    spec : RunSpec
    metadata : mapping
        As stored in the session (:func:`virtual_lab.sessions.read_session_metadata`).

    Returns
    -------
    list of str
        One ``"field: stored X, expected Y"`` per difference; empty when the file holds this run.
        A field the file does not store (written before the field existed) counts only when the spec
        differs from the field's default, or from its :data:`LEGACY_VALUES` entry where the old behaviour
        was not today's default.
    """
    problems = []
    if str(metadata.get("run_id", "")) != spec.run_id:
        problems.append(f"run_id: stored {metadata.get('run_id')!r}, expected {spec.run_id!r}")
    has_spec = any(str(key).startswith(SPEC_PREFIX) for key in metadata)
    defaults = {f.name: f.default for f in dataclasses.fields(spec)}
    for key, value in spec_metadata(spec).items():
        name = key[len(SPEC_PREFIX):]
        # files written before the spec was stored: compare the plain fields the training table has
        stored_key = key if has_spec else name
        if stored_key not in metadata:
            default = LEGACY_VALUES.get(name, defaults.get(name, dataclasses.MISSING))
            if has_spec and (default is dataclasses.MISSING or _encode_spec_value(default) != value):
                problems.append(f"{name}: not stored (so {default!r}), expected {value!r}"
                                if name in LEGACY_VALUES else f"{name}: not stored, expected {value!r}")
            continue
        stored = metadata[stored_key]
        if stored != value:
            problems.append(f"{name}: stored {stored!r}, expected {value!r}")
    return problems


@dataclass(frozen=True)
class RunFileCheck:
    """What is at a run's session path.

    Attributes
    ----------
    state : str
        ``"complete"`` (this run, readable), ``"missing"``, ``"damaged"`` (truncated, unreadable, not HDF5,
        incomplete), ``"mismatch"`` (a complete virtual_lab session of another spec) or ``"foreign"``
        (HDF5/NWB written by something else).
    reason : str
    diverged : bool
    diverged_step : int
    """

    state: str
    reason: str = ""
    diverged: bool = False
    diverged_step: int = -1


def check_run_file(path: str | os.PathLike, spec: "RunSpec") -> RunFileCheck:
    """Check the session file of one run (h5py only, a few ms; never raises)."""
    from virtual_lab.sessions import describe_session_file

    kind, reason, metadata = describe_session_file(path)
    if kind == "missing":
        return RunFileCheck("missing")
    if kind == "foreign":
        return RunFileCheck("foreign", reason)
    if kind != "complete":
        return RunFileCheck("damaged", reason)
    problems = spec_mismatches(spec, metadata)
    if problems:
        return RunFileCheck("mismatch", "session of a different spec: " + "; ".join(problems[:4]))
    step = int(metadata.get("diverged_step", -1))
    return RunFileCheck("complete", "", bool(metadata.get("diverged", False)), step)


def set_aside(path: Path) -> Path:
    """Rename a file that must not be overwritten to ``<name>.mismatched-N`` (not ``*.nwb``: sweeps skip it).

    Parameters
    ----------
    path : Path

    Returns
    -------
    Path
        Where the file is now.
    """
    n = 1
    while True:
        target = path.with_name(f"{path.name}.mismatched-{n}")
        if not target.exists():
            os.replace(path, target)
            return target
        n += 1


# ----------------------------------------------------------------------------------------------- disk


def estimate_session_bytes(spec: "RunSpec", weights_dtype: str = "float32") -> int:
    """Upper estimate of one session file's size in bytes (arrays uncompressed + fixed overhead).

    Weights are stored ``(T, out, in)`` and barely compress; activations ``(T * S, units)`` float32.
    """
    sizes = tuple(spec.layer_sizes)
    n_t, n_s = int(spec.n_checkpoints), int(spec.n_probe)
    if spec.architecture == "mlp":
        units = sum(sizes[1:])
        synapses = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        n_layers = len(sizes) - 1
    else:
        from virtual_lab.lab.conv_geometry import conv_input_shape, conv_layers
        from virtual_lab.lab.tasks import task_image_shape

        layers = conv_layers(spec.architecture, spec.channels, conv_input_shape(task_image_shape(spec.task)),
                             sizes[-1])
        units = sum(layer.n_units for layer in layers)
        synapses = sum(math.prod(layer.weight_shape) for layer in layers)
        n_layers = len(layers)
    weight_bytes = 2 if weights_dtype == "float16" else 4
    raw = (n_t * n_s * units * 4 + n_t * synapses * weight_bytes + n_t * n_s * n_layers * 4
           + n_t * n_s * 6 * 8 + n_s * sizes[0] * 4 + units * 48)
    return int(raw) + SESSION_OVERHEAD_BYTES


def check_free_space(folder: str | os.PathLike, n_bytes: int, *, what: str = "the sweep") -> int:
    """Raise :class:`InsufficientDiskSpaceError` unless ``folder``'s disk has ``n_bytes`` free (+ 5%, +50 MB).

    Returns
    -------
    int
        Free bytes.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = int(n_bytes * 1.05) + 50 * 2**20
    if free < needed:
        raise InsufficientDiskSpaceError(
            f"not enough free disk space for {what} in {folder}: it needs about {_gb(needed)} and "
            f"{_gb(free)} is free (free some space, choose another --output-dir, store weights as float16 "
            f"with [storage] weights_dtype = \"float16\", or record fewer checkpoints)")
    return free


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


# ----------------------------------------------------------------------------------------------- files


def _fsync_dir(path: Path) -> None:
    from virtual_lab.sessions import _fsync_dir as fsync_dir

    fsync_dir(path)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class EventLog:
    """Append-only JSON-lines log, flushed and fsynced per event (a killed sweep loses at most a line)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), "pid": os.getpid(), **fields}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Events of a ``sweep_log.jsonl``; a torn last line (killed mid-write) is skipped."""
    events = []
    path = Path(path)
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def recover_staging(root: str | os.PathLike) -> tuple[int, int]:
    """Finish or discard the staged writes a killed sweep left in ``<root>/.staging``.

    A staging folder with a ``COMMIT`` list was complete: its remaining files are renamed into place.
    Any other staging folder is deleted (its population is trained again).

    Returns
    -------
    n_committed, n_discarded : int
        Sessions moved into place, staging folders deleted.
    """
    staging = Path(root) / STAGING_NAME
    if not staging.is_dir():
        return 0, 0
    committed = discarded = 0
    for folder in sorted(staging.iterdir()):
        moves = None
        if folder.is_dir() and (folder / COMMIT_NAME).is_file():
            try:
                moves = json.loads((folder / COMMIT_NAME).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                moves = None
        if moves is not None:
            committed += _commit_moves(Path(root), folder, moves)
        else:
            discarded += 1
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            folder.unlink(missing_ok=True)
    if committed or discarded:
        logger.warning("recovered an interrupted sweep in %s: %d staged session(s) committed, %d unfinished "
                       "population(s) discarded", root, committed, discarded)
    return committed, discarded


def _commit_moves(root: Path, folder: Path, moves: Sequence[Sequence[str]]) -> int:
    n = 0
    for staged_name, relative in moves:
        staged = folder / staged_name
        if not staged.is_file():
            continue  # already moved before the interruption
        final = root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        _fsync_dir(final.parent)
        n += 1
    return n


def new_staging_folder(root: str | os.PathLike, population_id: str) -> Path:
    """A fresh private folder ``<root>/.staging/<population_id>-<token>/`` for one population's sessions."""
    staging = Path(root) / STAGING_NAME / f"{population_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def commit_staged(root: str | os.PathLike, staging: Path, moves: Sequence[Sequence[str]]) -> None:
    """Commit a population's staged sessions: write the ``COMMIT`` list atomically, then move them into place.

    Once ``COMMIT`` exists the population counts as written: a process killed during the moves leaves a
    staging folder that :func:`recover_staging` rolls forward.

    Parameters
    ----------
    root : path-like
        The recordings folder.
    staging : Path
        From :func:`new_staging_folder`, holding the staged files.
    moves : sequence of (str, str)
        ``(staged file name, final path relative to root)`` of every session to commit.

    Raises
    ------
    OSError
        Writing the list or a move failed (e.g. disk full); files already moved stay in place.
    """
    commit = staging / COMMIT_NAME
    tmp = staging / f".{COMMIT_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump([list(move) for move in moves], f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, commit)
    _fsync_dir(staging)
    _commit_moves(Path(root), staging, moves)
    shutil.rmtree(staging, ignore_errors=True)


def write_manifest(plan: "SweepPlan", runs: Mapping[str, Mapping[str, Any]], finished: bool) -> None:
    """Rewrite ``<root>/sweep_manifest.json`` atomically: every run of the plan, in sweep order, with its record.

    Parameters
    ----------
    plan : SweepPlan
    runs : mapping of str to dict
        Record of every run id (``status``, ``error``, ``step``, ``rule``, ``architecture``, ``path``, ...).
    finished : bool
        Whether the sweep has ended (a manifest with ``false`` belongs to a sweep in progress or killed).
    """
    counts = Counter(r["status"] for r in runs.values())
    _write_json_atomic(plan.root / MANIFEST_NAME, {
        "format": "virtual_lab sweep manifest 1",
        "protocol": plan.protocol.name,
        "protocol_source": plan.protocol.source,
        "finished": finished,
        "updated": round(time.time(), 3),
        "counts": {k: counts[k] for k in ("complete", "diverged", "failed", "pending")},
        "runs": [runs[s.run_id] for s in plan.specs],
    })


def previous_runs(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The run records of the manifest already in ``root``, by session path (relative); empty without one."""
    try:
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_text(encoding="utf-8"))
        return {str(r["path"]): dict(r) for r in manifest.get("runs", []) if isinstance(r, dict) and "path" in r}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def session_checksum(path: Path, previous: Mapping[str, Any] | None, run_id: str) -> dict[str, Any]:
    """``sha256`` and ``size`` of a complete session a sweep reuses.

    The checksum the previous manifest recorded when the session was committed is kept while the file has
    the size recorded then (a changed byte is for ``virtual-lab status --verify`` to find, never silently
    re-recorded); a session without one (committed by a sweep that was killed before recording it, or by an
    older version) is hashed now.

    Parameters
    ----------
    path : Path
    previous : mapping, optional
        The run's record in the previous manifest.
    run_id : str

    Returns
    -------
    dict
        ``sha256`` and ``size``.
    """
    from virtual_lab.sessions.checksum import file_checksum

    size = path.stat().st_size
    if previous and previous.get("run_id") == run_id and previous.get("sha256"):
        if previous.get("size") == size:
            return {"sha256": str(previous["sha256"]), "size": int(size)}
        logger.warning("%s: %d bytes where the manifest recorded %s when it was committed; recording the checksum "
                       "it has now", path, size, previous.get("size"))
    return file_checksum(path)
