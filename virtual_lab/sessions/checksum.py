"""Content checksums of files: the SHA-256 a sweep manifest and ``record``'s summary store for each file.

A checksum is taken when a file is committed (a sweep's sessions, ``record``'s outputs) and compared by
``virtual-lab status --verify``: a file whose bytes changed since (a flipped bit in an uncompressed dataset,
a partial overwrite) no longer matches, even when it still opens.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["file_checksum", "file_sha256"]


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as 64 lowercase hex digits, read in chunks (bounded memory).

    Parameters
    ----------
    path : str or path-like
    chunk_size : int, default=1 MiB
        Bytes read at a time.

    Returns
    -------
    str

    Raises
    ------
    OSError
        The file cannot be opened or read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksum(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256": ..., "size": ...}`` of a file (the entry manifests store).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        ``sha256`` (hex str) and ``size`` (bytes, int).

    Raises
    ------
    OSError
        The file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    return {"sha256": file_sha256(path), "size": int(size)}
