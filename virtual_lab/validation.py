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

__all__ = ["InputError", "did_you_mean", "check_choice", "check_real", "check_int", "check_fraction",
           "type_name", "format_bytes"]


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


def did_you_mean(value: Any, allowed: Iterable[Any], cutoff: float = 0.5, *, prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest of ``allowed`` (case-insensitive match first), else ``""``.

    ``prefix`` is put before the suggestion (a dotted key's table, e.g. ``"training."``); the match is made
    on the bare names, so a shared prefix never makes unrelated keys look close.

    Examples
    --------
    >>> did_you_mean("adm", ["sgd", "adam"])
    "; did you mean 'adam'?"
    >>> did_you_mean("xyz", ["sgd", "adam"])
    ''
    >>> did_you_mean("n_epoch", ["n_epochs", "batch_size"], prefix="training.")
    "; did you mean 'training.n_epochs'?"
    """
    allowed = [str(a) for a in allowed]
    lower = {a.lower(): a for a in allowed}
    if str(value).lower() in lower:
        return f"; did you mean {prefix + lower[str(value).lower()]!r}?"
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=cutoff)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


def type_name(value: Any) -> str:
    """The name a message gives ``value``'s type, in the words of TOML (``integer``, ``number``, ``string``...).

    Examples
    --------
    >>> type_name(3), type_name(2.5), type_name("x"), type_name([1]), type_name({}), type_name(True)
    ('integer', 'number', 'string', 'list', 'table', 'boolean')
    """
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", tuple: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def _fail(source: str | None, name: str, detail: str, plain: str, kind: type = ValueError) -> None:
    """Raise :class:`InputError` (``source`` given: ``source: name: detail``) or ``kind(plain)``."""
    if source is not None:
        raise InputError(source, name, detail)
    raise kind(plain)


def check_choice(name: str, value: Any, choices: Iterable[Any], *, source: str | None = None) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError with the closest valid option.

    With ``source`` (a file), the error is an :class:`InputError` naming the file and the key ``name``.

    Examples
    --------
    >>> check_choice("training.device", "tpu", ["cpu", "cuda"], source="p.toml")
    Traceback (most recent call last):
    ...
    virtual_lab.validation.InputError: p.toml: training.device: 'tpu' is not allowed; did you mean 'cpu'? (allowed: cpu, cuda)
    """
    choices = list(choices)
    if not isinstance(value, (str, numbers.Number)) or value not in choices:
        hint, listed = did_you_mean(value, choices), ", ".join(map(str, choices))
        _fail(source, name, f"{value!r} is not allowed{hint} (allowed: {listed})",
              f"{name}={value!r} is not available{hint} (available: {listed})")
    return value


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
    hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
    return " and ".join(x for x in (lo, hi) if x) or "finite"


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, source: str | None = None) -> float:
    """``value`` as a finite float within the bounds, or a TypeError/ValueError naming ``name`` and the range.

    NaN and infinities are always refused. With ``source`` (a file), every error is an :class:`InputError`
    naming the file and the key ``name``.

    Examples
    --------
    >>> check_real("rig[0].noise_sd", float("inf"), low=0, source="p.toml")
    Traceback (most recent call last):
    ...
    virtual_lab.validation.InputError: p.toml: rig[0].noise_sd: inf is out of range (allowed: >= 0)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(source, name, f"expected a number, got {type_name(value)} {value!r}",
              f"{name} must be a number, got {type(value).__name__} {value!r}", TypeError)
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range
        value = float("inf") if value > 0 else float("-inf")
    bad = not np.isfinite(value)
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        allowed = _range_text(low, high, low_open, high_open)
        _fail(source, name, f"{value!r} is out of range (allowed: {allowed})",
              f"{name}={value!r} is out of range (allowed: {allowed})")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              source: str | None = None) -> int:
    """``value`` as an int within the bounds, or a TypeError/ValueError naming ``name`` and the range.

    With ``source`` (a file), every error is an :class:`InputError` naming the file and the key ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(source, name, f"expected an integer, got {type_name(value)} {value!r}",
              f"{name} must be an integer, got {type(value).__name__} {value!r}", TypeError)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        allowed = _range_text(low, high, False, False)
        _fail(source, name, f"{value} is out of range (allowed: {allowed})",
              f"{name}={value} is out of range (allowed: {allowed})")
    return value


def check_fraction(name: str, value: Any, *, include_one: bool = False, source: str | None = None) -> float:
    """A fraction in (0, 1), or in (0, 1] with ``include_one`` (NaN refused)."""
    return check_real(name, value, low=0, high=1, low_open=True, high_open=not include_one, source=source)


def format_bytes(n: float) -> str:
    """A size people read at a glance: ``"512 MB"``, ``"3.4 GB"``, ``"71 PB"`` (powers of 1024).

    Examples
    --------
    >>> format_bytes(3 * 2**20), format_bytes(1.5 * 2**30), format_bytes(7.3e16)
    ('3.0 MB', '1.5 GB', '65 PB')
    """
    units = ("bytes", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    size, unit = float(n), 0
    while size >= 1024 and unit < len(units) - 1:
        size, unit = size / 1024, unit + 1
    if unit == 0:
        return f"{int(size)} bytes"
    return f"{size:.1f} {units[unit]}" if size < 10 else f"{size:.0f} {units[unit]}"
