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
from typing import Any, Iterable, Mapping

from virtual_lab.sessions.discover import session_candidates
from virtual_lab.sessions.layout import _NEO_DIMENSIONLESS_MESSAGE

__all__ = ["inspect_sessions", "read_neo", "validate_session"]


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
