"""On-disk cache of what decoding computes per session: its observables seen through a rig, and its curves.

Reading a session and computing its observables is most of what ``virtual-lab decode`` does before fitting
decoders, and a second decode over the same sessions (another decoder, another control) would compute the
same tables again. :func:`virtual_lab.analysis.session_tables.tables_from_sessions` given a cache folder
computes each (session, rig, rig seed, observable set, code version) once and stores it as ``<key>.npz``:

* the key holds the session's content hash (SHA-256 of its bytes,
  :func:`virtual_lab.sessions.checksum.file_sha256`), so a session whose bytes change is recomputed, and
  nothing in an entry names the session's path (a moved folder keeps its cache);
* the rig's fingerprint: ``"full"``, or the text of the preset file a name or path resolves to
  (:func:`virtual_lab.rig.presets.preset_file`), so an edited preset is recomputed;
* the code fingerprint (:func:`code_fingerprint`): the package version and the source of every module that
  reads sessions, observes them or computes observables, so changed code is recomputed;
* entries are written atomically (a temporary file in the same folder, then a rename) and read without
  pickle; an entry that does not read counts as absent and is written again.

The default folder is ``<recordings>/.cache/observables`` (:func:`default_cache_dir`); ``virtual-lab decode
--no-cache`` reads and writes no cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import FEATURE_NAME_DTYPE, FeatureTable

logger = logging.getLogger(__name__)

__all__ = ["CACHE_FORMAT", "Observation", "ObservableCache", "code_fingerprint", "default_cache_dir",
           "rig_fingerprint", "source_fingerprint", "write_npz_atomic"]

#: Version of the entry layout; part of every key.
CACHE_FORMAT = 1

#: Sources whose code decides an entry's content, relative to the package folder (folders: every ``.py`` and
#: ``.toml`` below them).
_FINGERPRINT_SOURCES = ("analysis/observables.py", "analysis/observable_stats.py", "analysis/session_tables.py",
                        "analysis/observable_cache.py", "sessions/read.py", "sessions/layout.py", "types.py", "rig")

_TABLE_COLUMNS = ("rule", "network_id", "layer", "depth_position")

#: Cache folders a write already failed in (this process).
_UNWRITABLE: set[Path] = set()


def default_cache_dir(recordings: str | os.PathLike) -> Path:
    """``<recordings>/.cache/observables``: next to the sessions of a folder (or of a file's folder)."""
    root = Path(recordings)
    return (root if root.is_dir() else root.parent) / ".cache" / "observables"


def source_fingerprint(sources: tuple[str, ...], *salt: Any) -> str:
    """Hex digest (16 characters) of the package version, ``salt`` and the source of ``sources`` (paths relative
    to the package folder; a folder stands for every ``.py`` and ``.toml`` below it): the code part of a cache
    key, here and in :mod:`virtual_lab.analysis.result_cache`."""
    from virtual_lab import __version__

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256("\x1f".join(str(part) for part in (__version__, *salt)).encode())
    for name in sources:
        path = package / name
        files = sorted(p for p in path.rglob("*") if p.suffix in (".py", ".toml")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                digest.update(file.relative_to(package).as_posix().encode() + b"\x1f" + file.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hex digest of the package version, :data:`CACHE_FORMAT` and the source of the modules that read sessions,
    observe them through rigs and compute observables (any edit of them invalidates every entry)."""
    return source_fingerprint(_FINGERPRINT_SOURCES, CACHE_FORMAT)


def write_npz_atomic(path: Path, info: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *,
                     json_default: Any = None) -> None:
    """Write ``arrays`` and ``info`` (as JSON text under ``__info__``, ``json_default`` for what JSON cannot hold)
    to ``path`` through a temporary file in its folder, renamed into place; on failure the temporary file is
    removed and the error raised."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp",
                                         delete=False) as handle:
            tmp = handle.name
            np.savez(handle, __info__=np.array(json.dumps(info, default=json_default)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=64)
def rig_fingerprint(rig: str) -> str:
    """``"full"``, or the rig's name with a digest of the preset file it resolves to."""
    if rig == "full":
        return rig
    from virtual_lab.rig.presets import preset_file

    text = preset_file(rig).read_text(encoding="utf-8")
    return f"{rig}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Observation:
    """What one session yields through one rig, before the session's path is attached.

    Attributes
    ----------
    table : FeatureTable or None
        :func:`~virtual_lab.analysis.observables.build_feature_table` of the recording; ``None`` when it failed.
    error : str
        Why the table is missing (``""`` when it is not).
    run_id, rule : str
    metadata : dict
        The recording's metadata (str, int, float, bool values).
    train_loss, test_accuracy : ndarray
        The session's performance curves, every checkpoint.
    checkpoint_indices, checkpoint_steps : ndarray of int
        The checkpoints the rig kept, and their training steps.
    """

    table: FeatureTable | None
    error: str
    run_id: str
    rule: str
    metadata: Mapping[str, Any]
    train_loss: np.ndarray
    test_accuracy: np.ndarray
    checkpoint_indices: np.ndarray
    checkpoint_steps: np.ndarray


def _pack(observation: Observation) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {name: np.asarray(getattr(observation, name)) for name in
              ("train_loss", "test_accuracy", "checkpoint_indices", "checkpoint_steps")}
    info = {"error": observation.error, "run_id": observation.run_id, "rule": observation.rule,
            "metadata": dict(observation.metadata), "table_metadata": None}
    table = observation.table
    if table is not None:
        arrays.update(X=table.X, feature_names=table.feature_names,
                      **{f"table_{name}": np.asarray(getattr(table, name)) for name in _TABLE_COLUMNS})
        info["table_metadata"] = [dict(m) for m in table.metadata]
    return arrays, info


def _unpack(arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> Observation:
    table = None
    if info["table_metadata"] is not None:
        table = FeatureTable(X=arrays["X"], metadata=tuple(info["table_metadata"]),
                             feature_names=arrays["feature_names"].astype(FEATURE_NAME_DTYPE),
                             **{name: arrays[f"table_{name}"] for name in _TABLE_COLUMNS})
    return Observation(table=table, error=info["error"], run_id=info["run_id"], rule=info["rule"],
                       metadata=info["metadata"], train_loss=arrays["train_loss"],
                       test_accuracy=arrays["test_accuracy"], checkpoint_indices=arrays["checkpoint_indices"],
                       checkpoint_steps=arrays["checkpoint_steps"])


class ObservableCache:
    """A folder of cached :class:`Observation` entries, one per (session content, rig, seed, observables, code).

    Parameters
    ----------
    directory : str or path-like
        Created when the first entry is written.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def key(self, session_sha256: str, rig: str, seed: int, observables: Sequence[Any]) -> str:
        """The entry name of a session's content hash seen through ``rig`` with rig seed ``seed``, for the
        observables ``observables`` (names or :class:`~virtual_lab.analysis.observables.Observable`)."""
        names = [getattr(o, "name", str(o)) for o in observables]
        text = json.dumps([session_sha256, rig_fingerprint(rig), int(seed), names, code_fingerprint()])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        """The file of an entry."""
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> Observation | None:
        """The entry ``key``, or ``None`` when it is absent or does not read (it is then written anew)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != "__info__"}
                info = json.loads(str(data["__info__"]))
            return _unpack(arrays, info)
        except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
            logger.warning("observable cache entry %s does not read (%s); recomputing it", path, error)
            return None

    def store(self, key: str, observation: Observation) -> bool:
        """Write the entry ``key`` atomically; ``False`` (with a warning) when the folder is not writable."""
        arrays, info = _pack(observation)
        try:
            write_npz_atomic(self.path(key), info, arrays)
            return True
        except (OSError, TypeError, ValueError) as error:
            # once per folder and process: a read-only recordings folder would otherwise warn for every session
            log = logger.debug if self.directory in _UNWRITABLE else logger.warning
            _UNWRITABLE.add(self.directory)
            log("could not write the observable cache entry %s (%s); continuing without storing it",
                self.path(key), error)
            return False
