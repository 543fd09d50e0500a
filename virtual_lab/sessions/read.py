"""Read ground-truth sessions: one reader for every use, eager by default, partial when asked.

:func:`read_session` reads the documented layout (see :mod:`virtual_lab.sessions`) through one of two
engines that give identical arrays:

* ``"pynwb"`` maps the file through pynwb's object model (full fidelity: the file must be NWB that pynwb
  can build; ~0.2-0.5 s per small file);
* ``"h5py"`` reads the same datasets with h5py alone (a few ms per file), for scanning and decoding large
  sweeps.

Both engines hand their datasets to one assembly function, so a partial read (some layers, some arrays,
some checkpoints) is the same slice of the full read whichever engine is used, and only the chunks asked
for are read from disk. :func:`read_session_metadata` and :func:`read_session_attribution` read the small
tables with h5py only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from virtual_lab.sessions.layout import (_ACTIVATIONS_PREFIX, LEGACY_NETWORK_MODULE, NETWORK_MODULE,
                                         _as_str_list, _decode_value)
from virtual_lab.types import GroundTruth
from virtual_lab.validation import check_choice, did_you_mean

logger = logging.getLogger(__name__)

__all__ = ["ENGINES", "SESSION_ARRAYS", "SessionReadError", "read_session", "read_session_attribution",
           "read_session_metadata"]

#: Engines of :func:`read_session`.
ENGINES = ("pynwb", "h5py")
#: Arrays :func:`read_session` can leave out (``arrays=``); the small ones (checkpoint steps, probe labels,
#: performance curves, metadata) are always read.
SESSION_ARRAYS = ("activations", "weights", "activity_change", "probe_stimuli")


class SessionReadError(OSError, KeyError):
    """A session file failed to open or read; the message starts with the file's path and is one line.

    Raised by :func:`read_session` for any HDF5 failure, e.g. ``filter returned failure during read`` in the
    middle of an array of a file whose layout is intact (bytes overwritten), or a missing part of the
    layout. An ``OSError`` (the command line reports it in one line, exit status 1) and, for code written
    against the ``KeyError`` of a missing dataset, a ``KeyError`` too.
    """

    def __str__(self) -> str:  # OSError's, not KeyError's quoted repr
        return OSError.__str__(self)


def _read_error(path: Path, error: BaseException) -> SessionReadError:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return SessionReadError(f"{path}: cannot read the session ({type(error).__name__}: {text})")


# ----------------------------------------------------------------------------------------------- h5py access
# The layout read with h5py alone: sweeps scan thousands of files, and pynwb's object mapping costs
# ~0.2-0.5 s per file where h5py needs a few ms.


def _h5_network(f: h5py.File) -> str:
    """HDF5 path of the network-state module: ``processing/misc``, or ``processing/network`` in older files.

    The first of the two that holds a training table; ``processing/misc`` when neither does (lookups then
    fail with a ``KeyError`` naming the current layout).
    """
    for name in (NETWORK_MODULE, LEGACY_NETWORK_MODULE):
        if f"processing/{name}/training" in f:
            return f"processing/{name}"
    return f"processing/{NETWORK_MODULE}"


def _h5_layers(f: h5py.File) -> tuple[list[str], list[str], list[str], list[int]]:
    layers = f[f"{_h5_network(f)}/layers"]
    return (_as_str_list(layers["layer"]), _as_str_list(layers["column_name"]),
            _as_str_list(layers["depth_position"]), [int(x) for x in layers["n_units"][:]])


def _h5_metadata(f: h5py.File) -> dict[str, Any]:
    training = f[f"{_h5_network(f)}/training"]
    return {key: _decode_value(value, dtype)
            for key, value, dtype in zip(_as_str_list(training["key"]), _as_str_list(training["value"]),
                                         _as_str_list(training["dtype"]))}


class _H5Source:
    """The session's datasets found by HDF5 path (engine ``"h5py"``)."""

    def __init__(self, f: h5py.File):
        self._f = f
        self._network = _h5_network(f)

    def layers(self) -> tuple[list[str], list[str], list[str], list[int]]:
        return _h5_layers(self._f)

    def steps(self) -> Any:
        return self._f["intervals/epochs/training_step"][:]

    def labels(self) -> Any:
        return self._f["intervals/trials/label"][:]

    def activations(self, column: str) -> h5py.Dataset:
        return self._f[f"acquisition/{_ACTIVATIONS_PREFIX}{column}/data"]

    def weights(self, column: str) -> h5py.Dataset:
        return self._f[f"{self._network}/weights/{column}"]

    def activity_change(self, column: str) -> h5py.Dataset:
        return self._f[f"{self._network}/activity_change/{column}"]

    def probe(self) -> tuple[h5py.Dataset, list[int] | None]:
        probe = self._f["stimulus/templates/probe_stimuli"]
        dimension = [int(x) for x in probe["dimension"][:]] if "dimension" in probe else None
        return probe["data"], dimension

    def performance(self, column: str) -> Any:
        return self._f["processing/behavior/performance"][column][:]

    def metadata(self) -> dict[str, Any]:
        return _h5_metadata(self._f)


# ----------------------------------------------------------------------------------------------- pynwb access


def _network_module(nwbfile: Any) -> Any:
    """The network-state module of a session: ``processing/misc``, or ``processing/network`` in older files."""
    for name in (NETWORK_MODULE, LEGACY_NETWORK_MODULE):
        module = nwbfile.processing.get(name)
        if module is not None and "training" in module.data_interfaces:
            return module
    raise KeyError(f"no processing/{NETWORK_MODULE} (or processing/{LEGACY_NETWORK_MODULE}) module with a "
                   f"training table")


class _NWBSource:
    """The same datasets found through pynwb's containers (engine ``"pynwb"``)."""

    def __init__(self, nwbfile: Any):
        self._nwbfile = nwbfile
        self._network = _network_module(nwbfile)

    def layers(self) -> tuple[list[str], list[str], list[str], list[int]]:
        layers = self._network["layers"]
        return (_as_str_list(layers["layer"].data), _as_str_list(layers["column_name"].data),
                _as_str_list(layers["depth_position"].data), [int(x) for x in np.asarray(layers["n_units"].data[:])])

    def steps(self) -> Any:
        return self._nwbfile.epochs["training_step"].data[:]

    def labels(self) -> Any:
        return self._nwbfile.trials["label"].data[:]

    def activations(self, column: str) -> Any:
        return self._nwbfile.acquisition[_ACTIVATIONS_PREFIX + column].data

    def weights(self, column: str) -> Any:
        return self._network["weights"][column].data

    def activity_change(self, column: str) -> Any:
        return self._network["activity_change"][column].data

    def probe(self) -> tuple[Any, list[int] | None]:
        probe = self._nwbfile.stimulus_template["probe_stimuli"]
        dimension = None if probe.dimension is None else [int(x) for x in np.asarray(probe.dimension[:])]
        return probe.data, dimension

    def performance(self, column: str) -> Any:
        return self._nwbfile.processing["behavior"]["performance"][column].data[:]

    def metadata(self) -> dict[str, Any]:
        training = self._network["training"]
        return {key: _decode_value(value, dtype)
                for key, value, dtype in zip(_as_str_list(training["key"].data), _as_str_list(training["value"].data),
                                             _as_str_list(training["dtype"].data))}


# ----------------------------------------------------------------------------------------------- selection


def _names(parameter: str, value: Any) -> list:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"The {parameter!r} parameter of read_session must be a sequence of names, e.g. "
                        f"({value!r},). Got the str {value!r} instead.")
    return list(value)


def _chosen_arrays(arrays: Iterable[str] | None) -> frozenset[str]:
    if arrays is None:
        return frozenset(SESSION_ARRAYS)
    return frozenset(check_choice("arrays", name, SESSION_ARRAYS) for name in _names("arrays", arrays))


def _chosen_layers(path: Path, names: list[str], layers: Iterable[str] | None) -> set[str]:
    if layers is None:
        return set(names)
    chosen = _names("layers", layers)
    if not chosen:
        raise ValueError("The 'layers' parameter of read_session must name at least one layer (None reads all).")
    for layer in chosen:
        if layer not in names:
            raise ValueError(f"{path}: no layer {layer!r} in this session{did_you_mean(layer, names)} "
                             f"(layers: {', '.join(names)})")
    return set(chosen)


def _checkpoint_picks(checkpoints: Iterable[int] | None) -> np.ndarray | None:
    """The checkpoint indices asked for, as int64 (before the file is opened: type and uniqueness only)."""
    if checkpoints is None:
        return None
    picks = np.asarray(checkpoints if isinstance(checkpoints, np.ndarray) else list(checkpoints))
    if picks.ndim != 1 or picks.size == 0 or not np.issubdtype(picks.dtype, np.integer):
        raise TypeError(f"The 'checkpoints' parameter of read_session must be a non-empty sequence of checkpoint "
                        f"indices (int). Got {checkpoints!r} instead.")
    picks = picks.astype(np.int64)
    if len(np.unique(picks)) != len(picks):
        raise ValueError(f"The 'checkpoints' parameter of read_session repeats an index: {picks.tolist()}.")
    return picks


def _check_range(path: Path, picks: np.ndarray | None, n_t: int) -> None:
    if picks is None:
        return
    outside = picks[(picks < 0) | (picks >= n_t)]
    if outside.size:
        raise ValueError(f"{path}: checkpoint index {int(outside[0])} is out of range; the session has {n_t} "
                         f"checkpoints (0 to {n_t - 1}).")


# ----------------------------------------------------------------------------------------------- assembly


def _per_checkpoint(data: Any, picks: np.ndarray | None) -> np.ndarray:
    """A (T, ...) dataset as float32: one block read, or one row per picked checkpoint."""
    if picks is None:
        return np.asarray(data[()], dtype=np.float32)
    return np.stack([np.asarray(data[int(k)], dtype=np.float32) for k in picks])


def _activations(data: Any, n_t: int, n_s: int, picks: np.ndarray | None) -> np.ndarray:
    """The (T*S, U) activation series as (T, S, U) float32; a picked checkpoint reads its own chunk only."""
    if picks is None:
        block = np.asarray(data[()], dtype=np.float32)
        return block.reshape(n_t, n_s, block.shape[1])
    return np.stack([np.asarray(data[int(k) * n_s:(int(k) + 1) * n_s], dtype=np.float32) for k in picks])


def _stimuli(source: Any) -> np.ndarray:
    data, dimension = source.probe()
    stimuli = np.asarray(data[()], dtype=np.float32)
    if dimension is not None and len(dimension) == 1:  # (S, D) vectors are stored as (S, D, 1) images
        stimuli = stimuli.reshape(stimuli.shape[0], dimension[0])
    return stimuli


def _assemble(source: Any, path: Path, layers: Iterable[str] | None, wanted: frozenset[str],
              picks: np.ndarray | None) -> GroundTruth:
    """One GroundTruth from either engine's datasets, reading only what was asked for."""
    names, columns, depths, _ = source.layers()
    steps = np.asarray(source.steps(), dtype=np.int64)
    labels_all = np.asarray(source.labels(), dtype=np.int64)
    n_t = len(steps)
    if n_t == 0 or len(labels_all) % n_t:
        raise ValueError(f"{path}: {len(labels_all)} trials do not split into {n_t} checkpoints.")
    n_s = len(labels_all) // n_t
    keep = _chosen_layers(path, names, layers)
    _check_range(path, picks, n_t)
    n_kept = n_t if picks is None else len(picks)
    activations, weights, change = {}, {}, {}
    for layer, column in zip(names, columns):
        if layer not in keep:
            continue
        activations[layer] = (_activations(source.activations(column), n_t, n_s, picks)
                              if "activations" in wanted else np.zeros((n_kept, 0, 0), dtype=np.float32))
        weights[layer] = (_per_checkpoint(source.weights(column), picks)
                          if "weights" in wanted else np.zeros((n_kept, 0, 0), dtype=np.float32))
        change[layer] = (_per_checkpoint(source.activity_change(column), picks)
                         if "activity_change" in wanted else np.zeros((n_kept, 0), dtype=np.float32))
    stimuli = _stimuli(source) if "probe_stimuli" in wanted else np.zeros((n_s, 0), dtype=np.float32)
    train_loss = np.asarray(source.performance("train_loss"), dtype=np.float32)
    test_accuracy = np.asarray(source.performance("test_accuracy"), dtype=np.float32)
    if picks is not None:
        steps, train_loss, test_accuracy = steps[picks], train_loss[picks], test_accuracy[picks]
    kept = [i for i, layer in enumerate(names) if layer in keep]
    return GroundTruth(
        layer_names=tuple(names[i] for i in kept),
        depth_positions=tuple(depths[i] for i in kept),
        checkpoint_steps=steps,
        activations=activations,
        weights=weights,
        activity_change=change,
        train_loss=train_loss,
        test_accuracy=test_accuracy,
        probe_stimuli=stimuli,
        probe_labels=labels_all[:n_s].copy(),
        metadata=source.metadata(),
    )


# ----------------------------------------------------------------------------------------------- public readers


def read_session(
    path: str | os.PathLike,
    *,
    engine: str = "pynwb",
    layers: Iterable[str] | None = None,
    arrays: Iterable[str] | None = None,
    checkpoints: Iterable[int] | None = None,
) -> GroundTruth:
    """Read a ground-truth session written by :func:`~virtual_lab.sessions.write_session`.

    Everything asked for is read into memory and the file is closed: the result holds numpy arrays only.
    By default everything is read; ``layers``, ``arrays`` and ``checkpoints`` read a part, and a partial
    read equals the same slice of the full read (only the chunks asked for are read from disk).

    Parameters
    ----------
    path : str or path-like
    engine : {"pynwb", "h5py"}, default="pynwb"
        ``"h5py"`` reads the documented layout directly, without pynwb's object mapping: the same
        result, about 100x faster for small sessions (for scanning and decoding large sweeps).
    layers : sequence of str, optional
        Layer names to read (returned in the session's forward order); default: every layer.
    arrays : sequence of str, optional
        Which of :data:`SESSION_ARRAYS` (``"activations"``, ``"weights"``, ``"activity_change"``,
        ``"probe_stimuli"``) to read; default: all. An array left out is an empty float32 array that keeps
        its first axis: shape (T, 0, 0) for activations and weights, (T, 0) for activity change, (S, 0) for
        the probe stimuli. Checkpoint steps, probe labels, performance curves and metadata are always read.
    checkpoints : sequence of int, optional
        Checkpoint indices (positions, 0 = initialization) to read, in the order given, no repeats;
        default: every checkpoint.

    Returns
    -------
    GroundTruth
        ``activations[layer]`` has shape (T, S, U_layer), ``weights[layer]`` (T, out, in),
        ``activity_change[layer]`` (T, S), ``train_loss`` and ``test_accuracy`` (T,), ``checkpoint_steps``
        (T,) int64, with T the number of checkpoints read; metadata values keep their types (str, int, float,
        bool).

    Raises
    ------
    ValueError
        An unknown engine, array or layer name (with the closest valid one); a checkpoint index out of range
        or repeated; a file whose trials do not split into its checkpoints.
    TypeError
        ``layers`` or ``arrays`` given as one str, ``checkpoints`` not integers.
    SessionReadError
        The file cannot be opened as HDF5, lacks part of the layout, or its data fails to read (an
        ``OSError`` and a ``KeyError`` whose message starts with the path; use
        :func:`~virtual_lab.sessions.find_sessions` to skip files that are not complete sessions).
    """
    path = Path(path)
    if engine not in ENGINES:
        raise ValueError(f"The 'engine' parameter of read_session must be 'pynwb' or 'h5py'. Got {engine!r} instead.")
    wanted = _chosen_arrays(arrays)
    picks = _checkpoint_picks(checkpoints)
    try:
        if engine == "h5py":
            with h5py.File(path, "r") as f:
                return _assemble(_H5Source(f), path, layers, wanted, picks)
        from pynwb import NWBHDF5IO

        with NWBHDF5IO(str(path), mode="r") as io:
            ground_truth = _assemble(_NWBSource(io.read()), path, layers, wanted, picks)
    except SessionReadError:
        raise
    except (OSError, KeyError, RuntimeError) as error:  # h5py/HDF5 failures of a damaged or partial file
        raise _read_error(path, error) from error
    logger.debug("read session %s", path)
    return ground_truth


def read_session_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The resolved run metadata stored in a session (``processing/misc/training``), via h5py only.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        Keys and typed values as written (``run_id``, ``rule``, hyperparameters, seeds, ...).

    Raises
    ------
    OSError
        The file cannot be opened as HDF5 (missing, truncated, not HDF5).
    KeyError
        The file has no virtual_lab training table.
    """
    with h5py.File(Path(path), "r") as f:
        return _h5_metadata(f)


def read_session_attribution(path: str | os.PathLike) -> dict[str, Any]:
    """Who ran an NWB file and where (``general/experimenter``, ``institution``, ``lab``), via h5py only.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        ``experimenter`` (tuple of str, empty when none is stored), ``institution`` and ``lab`` (str, empty
        when not stored): the keyword arguments of :func:`~virtual_lab.sessions.write_session` and
        :func:`~virtual_lab.rig.export.export_recording` that write the same attribution again.

    Raises
    ------
    SessionReadError
        The file cannot be opened as HDF5 (an ``OSError`` naming the file).
    """
    try:
        return _read_attribution(Path(path))
    except SessionReadError:
        raise
    except (OSError, KeyError, RuntimeError) as error:
        raise _read_error(Path(path), error) from error


def _read_attribution(path: Path) -> dict[str, Any]:
    def text(value: Any) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    with h5py.File(path, "r") as f:
        general = f.get("general")
        out: dict[str, Any] = {"experimenter": (), "institution": "", "lab": ""}
        if general is None:
            return out
        if "experimenter" in general:
            stored = general["experimenter"][()]
            out["experimenter"] = tuple(text(x) for x in np.atleast_1d(stored))
        for key in ("institution", "lab"):
            if key in general:
                out[key] = text(general[key][()])
        return out
