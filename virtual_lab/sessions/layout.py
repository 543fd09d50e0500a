"""Names and constants of the session layout: ids, paths, column names, the virtual clock, value encoding.

Everything here is plain Python and numpy (no h5py, no pynwb): the writer, the reader and the discovery of
session files all name things through these functions, so a session reads back under the names it was
written with.
"""

from __future__ import annotations

import numbers
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLOCK_RATE_HZ",
    "GROUND_TRUTH_SESSION_ID",
    "IN_SILICO_EXPERIMENTER",
    "LEGACY_NETWORK_MODULE",
    "NETWORK_MODULE",
    "SESSION_START_TIME",
    "SYNTHETIC_CONSTRUCT_SPECIES",
    "layer_column_name",
    "sanitize_id",
    "session_path",
]

#: Rate of the virtual clock: one probe presentation per sample.
CLOCK_RATE_HZ = 10.0
#: Fixed, timezone-aware start of every ground-truth session (the network's initialization).
SESSION_START_TIME = datetime(2020, 1, 1, tzinfo=timezone.utc)
#: NCBI Taxonomy term for "synthetic construct" (taxid 32630), as the IRI form DANDI and nwbinspector accept.
SYNTHETIC_CONSTRUCT_SPECIES = "http://purl.obolibrary.org/obo/NCBITaxon_32630"
#: Session id of a ground-truth session when none is given (rig recordings use other session ids).
GROUND_TRUTH_SESSION_ID = "groundtruth"

#: Experimenter written when none is given. No person performed the run: the software did, in silico. In the
#: DANDI "Last, First" form nwbinspector checks, so give real names (``experimenter=``, ``[storage]``) to credit people.
IN_SILICO_EXPERIMENTER = "virtual_lab, in silico"
#: Processing module holding the network state (layers, units, weights, activity change, run spec).
NETWORK_MODULE = "misc"
#: Its name in sessions written before the rename (still read).
LEGACY_NETWORK_MODULE = "network"

_REFERENCE = "doi:10.48550/arXiv.2010.11765"
_UNIT = "dimensionless"
#: What neo 0.14.6 logs for every "dimensionless" series (it strips the trailing "s"); the unit it returns is right.
_NEO_DIMENSIONLESS_MESSAGE = "Can't handle unit 'dimensionles'. Returning dimensionless"
_ACTIVATIONS_PREFIX = "activations_"
_DTYPES = ("str", "int", "float", "bool")


# ----------------------------------------------------------------------------------------------- naming


def sanitize_id(text: str) -> str:
    """Map any text to a DANDI-safe id: ASCII letters, digits and ``-`` only.

    Every run of other characters (``/``, ``_``, ``.``, spaces, non-ASCII, ...) becomes one ``-``; leading
    and trailing ``-`` are dropped. The mapping is idempotent; distinct texts can map to the same id
    (``"a_b"`` and ``"a.b"`` both give ``"a-b"``).

    Parameters
    ----------
    text : str
        Any label, e.g. a run id.

    Returns
    -------
    str
        The safe id.

    Raises
    ------
    ValueError
        If nothing safe is left (empty text, or only separators).

    Examples
    --------
    >>> sanitize_id("run_01/sgdm lr.0.1")
    'run-01-sgdm-lr-0-1'
    """
    if not isinstance(text, str):
        raise TypeError(f"The 'text' parameter of sanitize_id must be a str. Got {type(text).__name__} instead.")
    safe = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    if not safe:
        raise ValueError(f"Cannot make a DANDI id from {text!r}: it has no ASCII letters or digits.")
    return safe


def session_path(root: str | os.PathLike, subject_id: str, session_id: str) -> Path:
    """DANDI-style path of a session file: ``root/sub-<subject>/sub-<subject>_ses-<session>.nwb``.

    Parameters
    ----------
    root : str or path-like
        Folder holding all sessions (a dandiset-like tree).
    subject_id : str
        Subject (network) id; passed through :func:`sanitize_id`.
    session_id : str
        Session id; passed through :func:`sanitize_id`.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> session_path("recordings", "mock0sgdm", "groundtruth").as_posix()
    'recordings/sub-mock0sgdm/sub-mock0sgdm_ses-groundtruth.nwb'
    """
    subject = sanitize_id(subject_id)
    session = sanitize_id(session_id)
    return Path(root) / f"sub-{subject}" / f"sub-{subject}_ses-{session}.nwb"


def layer_column_name(layer: str) -> str:
    """Name used for a layer inside the file (series name suffix and table column name).

    Characters other than ASCII letters, digits, ``_`` and ``-`` become ``_`` (``"layer1.0.conv1"`` ->
    ``"layer1_0_conv1"``); the true layer name is kept in ``processing/misc/layers``.

    Parameters
    ----------
    layer : str

    Returns
    -------
    str
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "_", layer)
    if not name:
        raise ValueError("Layer names must not be empty.")
    return name


def _temp_path(path: Path) -> Path:
    """The hidden temporary name a file is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.tmp")


# ----------------------------------------------------------------------------------------------- metadata


def _encode_value(key: str, value: Any) -> tuple[str, str]:
    """(text, dtype) of one metadata value; the text parses back exactly."""
    if isinstance(value, (bool, np.bool_)):
        return ("True" if value else "False"), "bool"
    if isinstance(value, numbers.Integral):
        return str(int(value)), "int"
    if isinstance(value, numbers.Real):
        return repr(float(value)), "float"
    if isinstance(value, str):
        return value, "str"
    raise TypeError(f"metadata[{key!r}] must be a str, int, float or bool. Got {type(value).__name__} instead.")


def _decode_value(text: str, dtype: str) -> Any:
    if dtype == "bool":
        if text not in ("True", "False"):
            raise ValueError(f"Bad bool value {text!r} in the training table.")
        return text == "True"
    if dtype == "int":
        return int(text)
    if dtype == "float":
        return float(text)
    if dtype == "str":
        return text
    raise ValueError(f"Unknown dtype {dtype!r} in the training table; expected one of {_DTYPES}.")


def _as_str_list(data: Any) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in data[:]]
