"""One writer per sweep folder: an exclusive lock held by :func:`~virtual_lab.sweeps.run.run_sweep` throughout.

The lock is ``<root>/.sweep.lock``, taken with :class:`filelock.FileLock` (``flock`` on Unix) without waiting;
next to it ``<root>/.sweep.lock.json`` says who holds it (pid, host, start time, command). A second sweep
on the same folder fails at once with :class:`SweepLockedError` naming the holder, before it touches
anything (staging recovery included).

The kernel releases an ``flock`` when its process dies, however it dies (SIGKILL included), so a lock that
can be taken is free. The info file of a holder that was killed stays behind: the next sweep on this host
finds it naming a process that is no longer running, takes the lock over and logs a warning. An info file
naming a process on *another* host cannot be checked from here (and ``flock`` is not shared between hosts
on every network filesystem), so a lock taken while such a file is present is refused, with the command that
removes it once that process is known to be gone.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

__all__ = ["LOCK_INFO_NAME", "LOCK_NAME", "SweepLockedError", "lock_holder", "sweep_lock"]

LOCK_NAME = ".sweep.lock"
LOCK_INFO_NAME = ".sweep.lock.json"
#: How long a second sweep waits for the holder's info file to appear (the holder writes it right after locking).
_INFO_WAIT_S = 1.0


class SweepLockedError(ValueError):
    """Another sweep is writing the folder (or may be: a lock of another host). The message is one line.

    A ``ValueError``, so the command line reports it as invalid input: one line, exit status 2.
    """


def _format_time(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(unix))


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def lock_holder(root: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds (or last held, if it died) the lock of a sweep folder: its info file, or ``None``.

    Parameters
    ----------
    root : path-like
        The sweep's recordings folder.

    Returns
    -------
    dict or None
        ``pid``, ``host``, ``started`` (Unix time), ``started_text`` and ``command``, as written by the holder.
    """
    return _read_info(Path(root) / LOCK_INFO_NAME)


def _pid_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return False
    return True


def _describe(info: dict[str, Any] | None) -> str:
    if info is None:
        return "another process (it has not said which yet)"
    started = info.get("started_text") or _format_time(float(info.get("started", 0)))
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {started}"


def _write_info(path: Path, command: str) -> None:
    now = time.time()
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(now, 3),
            "started_text": _format_time(now), "command": command}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _locked_error(root: Path, lock_path: Path, info_path: Path) -> SweepLockedError:
    """The error of a lock held by someone else (waits briefly for a holder that just started)."""
    deadline = time.monotonic() + _INFO_WAIT_S
    info = _read_info(info_path)
    while info is None and time.monotonic() < deadline:
        time.sleep(0.05)
        info = _read_info(info_path)
    note = ""
    if info is not None and info.get("host") == socket.gethostname() and not _pid_running(int(info.get("pid", -1))):
        note = " (that process has ended; its worker processes are still exiting: try again in a few seconds)"
    return SweepLockedError(f"{root} is being written by {_describe(info)} (lock file {lock_path}){note}; "
                            f"wait for that sweep to finish or stop it, or write to another --output-dir")


def _check_previous_holder(root: Path, info_path: Path) -> None:
    """The lock was free: warn about the info file of a holder that died, refuse one of another host."""
    info = _read_info(info_path)
    if info is None:
        if info_path.exists():
            logger.warning("%s: replacing an unreadable lock info file %s", root, info_path)
        return
    host, pid = info.get("host"), int(info.get("pid", -1))
    if host != socket.gethostname():
        raise SweepLockedError(
            f"{root} may be being written by {_describe(info)} (lock file {root / LOCK_NAME}): a lock of another "
            f"host cannot be checked from {socket.gethostname()}; if that process is no longer running, remove "
            f"{info_path} and run again")
    state = "is no longer running" if not _pid_running(pid) else "no longer holds the lock"
    logger.warning("%s: taking over the stale lock of %s: that process %s (lock file %s)", root,
                   _describe(info), state, root / LOCK_NAME)


@contextmanager
def sweep_lock(root: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of a sweep folder for the duration of the ``with`` block.

    Parameters
    ----------
    root : path-like
        The sweep's recordings folder (created if needed).
    command : str, optional
        What the info file records as the holder's command; default: this process's command line.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    SweepLockedError
        Another process holds the lock (the message names its pid, host, start time and the lock file), or
        an info file of another host is present.
    """
    from filelock import FileLock, Timeout

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lock_path, info_path = root / LOCK_NAME, root / LOCK_INFO_NAME
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _locked_error(root, lock_path, info_path) from None
    try:
        _check_previous_holder(root, info_path)
        _write_info(info_path, command if command is not None else shlex.join(sys.argv))
    except BaseException:
        lock.release()  # the info file there is another host's (or could not be replaced): left as it is
        raise
    try:
        yield lock_path
    finally:
        try:
            info_path.unlink(missing_ok=True)  # before releasing: the next holder never sees this process's info
        finally:
            lock.release()
