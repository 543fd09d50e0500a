"""Cross-validated evaluations kept on disk, so a second ``decode`` over the same sessions refits nothing.

Inside ``with cached_evaluations(folder):`` every :func:`virtual_lab.analysis.evaluation.evaluate` of a named
decoder (no fitted estimators asked for, no custom grid) first looks for its result in ``folder``. The key is
the SHA-256 of everything the result depends on:

* the feature table's content (:func:`table_digest`: the features, labels, networks, layers, metadata and
  feature names, so a changed session or another rig or observable set gives another table);
* the evaluation's settings (decoder name, splits, test fraction, seed, split kind, grid, inner splits);
* :func:`code_fingerprint`: the package version, :data:`RESULT_FORMAT` and the source of the modules that
  split, fit and score (an edit of any of them invalidates every entry).

``n_jobs`` is not part of the key: the splits are seeded, so the result does not depend on it. An entry is one
``.npz`` file (arrays, and the rest as JSON text; read without pickle), written atomically; an unreadable
entry is recomputed and an unwritable folder only warns. Outside the context nothing is cached.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from virtual_lab.analysis.observable_cache import source_fingerprint, write_npz_atomic

logger = logging.getLogger(__name__)

__all__ = ["RESULT_FORMAT", "active_folder", "cached_evaluations", "code_fingerprint", "evaluation_key", "load",
           "store", "table_digest"]

#: Version of the entry layout; part of every key.
RESULT_FORMAT = 1

#: Modules (relative to the package folder) whose code decides an evaluation's result.
_FINGERPRINT_SOURCES = ("analysis/evaluation.py", "analysis/fitting.py", "analysis/decoders.py",
                        "analysis/splits.py", "analysis/conv1d.py", "analysis/result_cache.py", "stats.py")

_ARRAYS = ("layer_accuracy", "layer_balanced_accuracy", "network_accuracy", "network_balanced_accuracy",
           "layer_confusion_counts", "network_confusion_counts")
_OPTIONAL_ARRAYS = ("feature_names", "feature_importances")
_JSON = ("decoder", "combination", "classes", "predictions", "layer_predictions", "n_examples", "n_networks",
         "test_fraction", "seed", "split_kind", "best_params", "param_grid", "notes")

_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("virtual_lab_evaluation_cache",
                                                                      default=None)
_UNWRITABLE: set[Path] = set()


@contextlib.contextmanager
def cached_evaluations(folder: str | os.PathLike | None) -> Iterator[None]:
    """Cache every eligible :func:`~virtual_lab.analysis.evaluation.evaluate` inside the block in ``folder``
    (``None``: cache nothing)."""
    token = _FOLDER.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _FOLDER.reset(token)


def active_folder() -> Path | None:
    """The folder of the enclosing :func:`cached_evaluations`, or None."""
    return _FOLDER.get()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hex digest of the version, :data:`RESULT_FORMAT` and the source of the splitting, fitting and scoring
    modules."""
    return source_fingerprint(_FINGERPRINT_SOURCES, "evaluations", RESULT_FORMAT)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def table_digest(table: Any) -> str:
    """SHA-256 (hex) of a feature table's content: features, labels, networks, layers, metadata, names.

    >>> import dataclasses, numpy as np
    >>> from virtual_lab.analysis.observables import FeatureTable, feature_names_for
    >>> names = feature_names_for(["weightraw_mean"], 2)
    >>> t = FeatureTable(np.ones((2, len(names))), np.array(["a", "b"]), np.array(["n1", "n2"]),
    ...                  np.array(["l", "l"]), np.array(["early", "early"]), ({}, {}), names)
    >>> table_digest(t) == table_digest(dataclasses.replace(t, X=np.ones((2, len(names)))))
    True
    >>> table_digest(t) == table_digest(dataclasses.replace(t, X=np.zeros((2, len(names)))))
    False
    """
    digest = hashlib.sha256()
    x = np.ascontiguousarray(table.X)
    digest.update(f"{x.dtype.str}{x.shape}".encode() + x.tobytes())
    for column in (table.rule, table.network_id, table.layer, table.depth_position):
        digest.update(b"\x1e" + "\x1f".join(str(v) for v in column).encode())
    digest.update(b"\x1e" + json.dumps(list(table.metadata), sort_keys=True, default=_json_default).encode())
    names = np.ascontiguousarray(table.feature_names)
    digest.update(b"\x1e" + str(names.dtype.descr).encode() + names.tobytes())
    return digest.hexdigest()


def evaluation_key(table: Any, **settings: Any) -> str:
    """The cache key of evaluating ``table`` with ``settings`` (decoder, n_splits, ...), a hex string."""
    text = json.dumps([table_digest(table), settings, code_fingerprint()], sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(key: str) -> Any | None:
    """The cached :class:`~virtual_lab.analysis.evaluation.EvaluationResult` of ``key``, or None (no cache,
    no entry, or an unreadable one)."""
    from virtual_lab.analysis.evaluation import EvaluationResult

    folder = active_folder()
    path = None if folder is None else folder / f"{key}.npz"
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["__info__"]))
            arrays = {name: np.asarray(data[name]) for name in _ARRAYS}
            optional = {name: (np.asarray(data[name]) if name in data.files else None) for name in _OPTIONAL_ARRAYS}
    except (OSError, ValueError, KeyError) as error:
        logger.warning("evaluation cache entry %s is unreadable (%s): recomputing it", path, error)
        return None
    info["classes"] = tuple(info["classes"])
    for name in ("predictions", "layer_predictions", "best_params"):
        info[name] = tuple(info[name])
    info["notes"] = tuple(info["notes"])
    return EvaluationResult(**arrays, **optional, **info)


def store(key: str, result: Any) -> None:
    """Write ``result`` under ``key`` in the active folder (atomically; warns once if the folder cannot be
    written)."""
    folder = active_folder()
    if folder is None or folder in _UNWRITABLE:
        return
    arrays = {name: np.asarray(getattr(result, name)) for name in _ARRAYS}
    arrays.update({name: np.asarray(getattr(result, name)) for name in _OPTIONAL_ARRAYS
                   if getattr(result, name) is not None})
    info = {name: getattr(result, name) for name in _JSON}
    try:
        write_npz_atomic(folder / f"{key}.npz", info, arrays, json_default=_json_default)
    except (OSError, TypeError, ValueError) as error:
        _UNWRITABLE.add(folder)
        logger.warning("cannot write the evaluation cache in %s (%s): decoding goes on without it", folder, error)
