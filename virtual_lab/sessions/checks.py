"""Check sessions with the field's tools and read them through neo: nwbinspector, pynwb validation, neo.

Metadata and neo (0.14.6)
-------------------------
neo reads every session, with two known neo defects that shape the file (see :mod:`virtual_lab.sessions`):
no ``general/keywords`` (neo rejects the lazy ``StrDataset`` pynwb returns for them), and a false alarm
"Can't handle unit 'dimensionles'" for every ``"dimensionless"`` series (neo strips a trailing ``s`` from
unit names), which :func:`read_neo` drops.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from virtual_lab.sessions.discover import describe_session_file, session_candidates
from virtual_lab.sessions.layout import _NEO_DIMENSIONLESS_MESSAGE

__all__ = ["check_session_data", "inspect_sessions", "read_neo", "validate_session"]

#: Contiguous datasets larger than this are read in slices by :func:`check_session_data`.
_READ_BLOCK_BYTES = 64 * 2**20


def _read_dataset(dataset: Any) -> None:
    """Read every byte of an h5py dataset (chunk by chunk, or in blocks): raises where HDF5 cannot decode it."""
    if dataset.shape is None or dataset.size == 0:
        return
    if dataset.chunks is not None:
        for selection in dataset.iter_chunks():
            dataset[selection]
        return
    if dataset.ndim == 0 or dataset.size * dataset.dtype.itemsize <= _READ_BLOCK_BYTES:
        dataset[()]
        return
    row_bytes = dataset.size // dataset.shape[0] * dataset.dtype.itemsize
    step = max(1, _READ_BLOCK_BYTES // row_bytes)
    for start in range(0, dataset.shape[0], step):
        dataset[start:start + step]


def check_session_data(path: str | os.PathLike) -> str:
    """Whether a ground-truth session reads completely: its layout, then every dataset and attribute.

    Slower than :func:`~virtual_lab.sessions.describe_session_file` (which opens containers but reads no
    array): every chunk is read and decompressed, so a file overwritten in the middle whose layout is intact
    (``filter returned failure during read``) is found. Memory stays bounded (one chunk or 64 MiB at a time).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    str
        ``""`` when everything reads; otherwise one line: ``"<kind>: <reason>"`` of a file that is not a
        complete session, or ``"damaged HDF5 data in <object>: <error>"``. Never raises.
    """
    import h5py

    kind, reason, _ = describe_session_file(path)
    if kind != "complete":
        return f"{kind}: {reason}"
    current = ["/"]

    def visit(name: str, obj: Any) -> None:
        current[0] = name
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            _read_dataset(obj)

    try:
        with h5py.File(Path(path), "r") as f:
            dict(f.attrs)
            f.visititems(visit)
    except Exception as error:  # noqa: BLE001 - any HDF5 failure is the answer, not a crash
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"damaged HDF5 data in {current[0]}: {text}"
    return ""


def inspect_sessions(
    paths_or_folder: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    config: str | Mapping[str, Any] | None = None,
) -> list:
    """Run ``nwbinspector`` (best practices + pynwb validation) on session files.

    Parameters
    ----------
    paths_or_folder : path-like or iterable of path-like
        One file, several files, or a folder searched recursively for ``*.nwb``: every NWB file found by
        :func:`~virtual_lab.sessions.session_candidates` (any content: rig recordings, foreign and damaged
        files are inspected too; temporary files of writes in progress are skipped).
    config : str or dict, optional
        An nwbinspector config: a keyword such as ``"dandi"``, a path to a config file, or a loaded dict.
        ``None`` uses the default importances.

    Returns
    -------
    list of nwbinspector.InspectorMessage
        Every message, all importance levels (``message.importance.name`` is ``"CRITICAL"``,
        ``"BEST_PRACTICE_VIOLATION"``, ...); a file that cannot be read gives an ``ERROR`` message.

    Raises
    ------
    ValueError
        A path that does not exist, or a folder without any ``*.nwb`` file.
    """
    import nwbinspector

    if isinstance(config, (str, os.PathLike)):
        config = nwbinspector.load_config(filepath_or_keyword=config)
    files, _ = session_candidates(paths_or_folder, kind="any")
    messages = []
    for path in files:
        messages.extend(m for m in nwbinspector.inspect_nwbfile(nwbfile_path=path, config=config) if m is not None)
    return messages


def validate_session(path: str | os.PathLike) -> list:
    """Validate a session file against the NWB schema cached in it (``pynwb.validate``).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    list
        Validation errors; empty when the file is valid.
    """
    import pynwb

    result = pynwb.validate(path=str(path))
    if isinstance(result, tuple):  # pynwb < 3 returned (errors, status)
        result = result[0]
    return list(result)


def read_neo(path: str | os.PathLike):
    """Read a session through ``neo.io.NWBIO`` and return its first block.

    Activations appear as ``AnalogSignal`` (10 Hz virtual clock, dimensionless) and the checkpoints as
    one ``Epoch``; tables in ``processing`` and ``intervals/trials`` are not read by neo.

    neo 0.14.6 logs "Can't handle unit 'dimensionles'. Returning dimensionless" for every dimensionless
    series (it strips the final "s" of unit names) although the unit it returns is right; this function
    drops exactly that message while it reads. Every other neo message passes through.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    neo.Block
        Fully loaded (not lazy); the NWB file is closed before returning.
    """
    from neo.io import NWBIO

    def not_the_dimensionless_false_alarm(record: logging.LogRecord) -> bool:
        return record.getMessage() != _NEO_DIMENSIONLESS_MESSAGE

    neo_logger = logging.getLogger("Neo")
    neo_logger.addFilter(not_the_dimensionless_false_alarm)
    try:
        reader = NWBIO(str(path), "r")
        try:
            return reader.read()[0]
        finally:
            reader.close()
    finally:
        neo_logger.removeFilter(not_the_dimensionless_false_alarm)
