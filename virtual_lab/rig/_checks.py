"""Validation helpers for rig parameters: one-line errors naming the parameter, the value and what is allowed."""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Iterable

import numpy as np


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float, or a ValueError/TypeError naming ``name``, the value and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    bad = not np.isfinite(value)
    if low is not None:
        bad |= value < low or (low_open and value == low)
    if high is not None:
        bad |= value > high or (high_open and value == high)
    if bad:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
        allowed = " and ".join(x for x in (lo, hi) if x) or "finite"
        raise ValueError(f"{name}={value!r} is out of range (allowed: {allowed})")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int, or an error naming ``name``, the value and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "" if low is None else f">= {low}"
        hi = "" if high is None else f"<= {high}"
        raise ValueError(f"{name}={value} is out of range (allowed: {' and '.join(x for x in (lo, hi) if x)})")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError with the closest valid option."""
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        if not close:
            lower = {c.lower(): c for c in choices}
            close = [lower[str(value).lower()]] if str(value).lower() in lower else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name}={value!r} is not available{hint} (available: {', '.join(choices)})")
    return value


def stage_seed(seed: int, code: int) -> int:
    """A 63-bit sub-seed of ``seed`` for one stochastic stage (``code`` names the stage)."""
    state = np.random.SeedSequence([seed, code]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)
