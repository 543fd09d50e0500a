"""Progress on long work: a bar on a terminal, one plain line every ~10 s when stderr is a file.

Every stage that can take more than a few seconds (training, writing sessions, observing, feature
extraction, decoders and their splits, controls, permutations, power grid points) reports through
:func:`progress_bar`, so a cluster log shows that a run is alive and how far it is. On a terminal the bar is
tqdm's, with rate and ETA; when stderr is not a terminal (``virtual-lab run P > log.txt 2>&1``) the same
bar is written as one plain line per interval, and a heartbeat repeats the line when nothing advanced (one
long decoder fit), so no stage is silent for longer than the interval.

Progress is on by default and is switched off for a block with :func:`quiet` (what ``--quiet`` does);
the switch is a context variable, so it applies to the current thread and task only and needs no
``progress=`` argument threaded through every function. Only the main process reports: in worker
processes (joblib, the training pool, Dask) every bar is disabled, and the parent counts their work.

Examples
--------
>>> from virtual_lab.progress import progress_bar, quiet
>>> with quiet():
...     total = sum(progress_bar(range(5), desc="counting", unit="item"))
>>> total
10
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import weakref
from typing import Iterable, Iterator, TextIO, TypeVar

__all__ = ["progress_bar", "quiet", "progress_enabled", "PLAIN_INTERVAL_S"]

#: Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_INTERVAL_S = 10.0

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("virtual_lab_progress", default=True)
_PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:3.0f}%), {elapsed} elapsed, ETA {remaining}{postfix}"
_PLAIN_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit}, {elapsed} elapsed{postfix}"

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether progress is reported in the current context (False inside :func:`quiet`)."""
    return _ENABLED.get()


@contextlib.contextmanager
def quiet(enabled: bool = False) -> Iterator[None]:
    """Switch progress reporting off (or, with ``enabled=True``, on) inside the block.

    Parameters
    ----------
    enabled : bool, default=False
        The setting inside the block; ``quiet(not args.quiet)`` maps a ``--quiet`` flag directly.
    """
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _PlainLines:
    """A file-like target for tqdm that turns its carriage-return refreshes into whole lines."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip("\n").strip()
        if line and line != self._last:
            self._stream.write(line + "\n")
            self._last = line

    def flush(self) -> None:
        flush = getattr(self._stream, "flush", None)
        if flush is not None:
            flush()


def _plain_bar(bar_class: type, interval_s: float, **kwargs):
    """A tqdm bar printing one line per ``interval_s`` and a heartbeat line when nothing advanced."""
    bar = bar_class(mininterval=interval_s, maxinterval=interval_s, miniters=1, **kwargs)
    stop = threading.Event()
    # a weak reference: a bar abandoned by an exception is collected (and closed) instead of beating forever
    alive = weakref.ref(bar)

    def heartbeat() -> None:  # checks often, so that no gap between two lines exceeds the interval by much
        last_beat = 0.0
        while not stop.wait(min(1.0, interval_s / 4)):
            current = alive()
            if current is None or current.disable:
                return
            now = current._time()
            if now - max(current.last_print_t, last_beat) >= interval_s:  # refresh() does not move last_print_t
                current.refresh()
                last_beat = now
            del current

    thread = threading.Thread(target=heartbeat, name="virtual-lab-progress", daemon=True)
    close = bar.close

    def close_and_stop() -> None:
        stop.set()
        close()

    bar.close = close_and_stop  # type: ignore[method-assign]
    thread.start()
    return bar


def progress_bar(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, unit: str = "it",
                 enabled: bool = True, stream: TextIO | None = None, interval_s: float = PLAIN_INTERVAL_S):
    """A progress bar over ``iterable`` (or updated by hand with ``.update(n)``), with an ETA.

    Parameters
    ----------
    iterable : iterable, optional
        Items to wrap; iterate over the returned bar instead.
    total : int, optional
        Number of items (default ``len(iterable)`` where it has one).
    desc : str
        Name of the stage, first on every line.
    unit : str, default="it"
        What is counted (``"network-step"``, ``"session"``, ``"split"``).
    enabled : bool, default=True
        The caller's own switch; progress also stays off inside :func:`quiet`.
    stream : text stream, optional
        Where to write (default: ``sys.stderr`` at call time).
    interval_s : float, default=PLAIN_INTERVAL_S
        Seconds between plain lines when ``stream`` is not a terminal.

    Returns
    -------
    tqdm.tqdm
        Use as an iterator, or call ``update``/``set_postfix_str``, and ``close`` (or use as a context
        manager).
    """
    from tqdm.std import tqdm

    import multiprocessing

    stream = sys.stderr if stream is None else stream
    # only the main process reports: joblib, pool and Dask workers stay quiet (their parent has the bar)
    disable = not (enabled and _ENABLED.get()) or multiprocessing.parent_process() is not None
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if disable:
        return tqdm(iterable, total=total, disable=True)
    if _is_terminal(stream):
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True,
                         smoothing=0.1)
    return _plain_bar(tqdm, interval_s, iterable=iterable, total=total, desc=desc, unit=unit,
                      file=_PlainLines(stream), smoothing=0.1,
                      bar_format=_PLAIN_FORMAT if total else _PLAIN_FORMAT_NO_TOTAL)
