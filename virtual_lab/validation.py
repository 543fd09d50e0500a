"""Input checks with one-line messages: the parameter, what was given, what is allowed, the closest valid option.

Every stage validates user input through these functions, so a bad value reads the same wherever it is
caught (MNE-Python's ``_check_option`` and scikit-learn's parameter constraints are the models):

>>> check_choice("decoder", "random_forrest", ["random_forest", "linear_svm"])
Traceback (most recent call last):
...
ValueError: decoder='random_forrest' is not available; did you mean 'random_forest'? (available: random_forest, linear_svm)
>>> check_real("noise_sd", float("nan"), low=0)
Traceback (most recent call last):
...
ValueError: noise_sd=nan is out of range (allowed: >= 0)
>>> check_fraction("test_fraction", 1.0)
Traceback (most recent call last):
...
ValueError: test_fraction=1.0 is out of range (allowed: > 0 and < 1)

Errors about a file's contents are :class:`InputError` (a ``ValueError``) carrying the file and the dotted
key, so the command line prints ``file: key: message`` in one line.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Iterable

import numpy as np

__all__ = ["InputError", "did_you_mean", "check_choice", "check_real", "check_int", "check_fraction"]


class InputError(ValueError):
    """Invalid user input in a file (a protocol, a rig preset): the message names the file and the key.

    Parameters
    ----------
    source : str
        The file (or ``"<string>"``).
    key : str
        Dotted key, e.g. ``training.n_epochs``.
    message : str
        What is wrong and what is allowed.
    """

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def did_you_mean(value: Any, allowed: Iterable[Any], cutoff: float = 0.5) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``allowed`` (case-insensitive match first), else ``""``.

    Examples
    --------
    >>> did_you_mean("adm", ["sgd", "adam"])
    "; did you mean 'adam'?"
    >>> did_you_mean("xyz", ["sgd", "adam"])
    ''
    """
    allowed = [str(a) for a in allowed]
    lower = {a.lower(): a for a in allowed}
    if str(value).lower() in lower:
        return f"; did you mean {lower[str(value).lower()]!r}?"
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError with the closest valid option."""
    choices = list(choices)
    if not isinstance(value, (str, numbers.Number)) or value not in choices:
        raise ValueError(f"{name}={value!r} is not available{did_you_mean(value, choices)} "
                         f"(available: {', '.join(map(str, choices))})")
    return value


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
    hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
    return " and ".join(x for x in (lo, hi) if x) or "finite"


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the bounds, or a TypeError/ValueError naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    bad = not np.isfinite(value)
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        raise ValueError(f"{name}={value!r} is out of range (allowed: {_range_text(low, high, low_open, high_open)})")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within the bounds, or a TypeError/ValueError naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={value} is out of range (allowed: {_range_text(low, high, False, False)})")
    return value


def check_fraction(name: str, value: Any, *, include_one: bool = False) -> float:
    """A fraction in (0, 1), or in (0, 1] with ``include_one``."""
    return check_real(name, value, low=0, high=1, low_open=True, high_open=not include_one)
