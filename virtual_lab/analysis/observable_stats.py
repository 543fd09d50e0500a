"""The numerical kernels of the observables' statistics (numpy only).

:func:`virtual_lab.analysis.observables.compute_statistics` and
:func:`~virtual_lab.analysis.observables.compute_observables` validate their arguments and call these. One sort
along the last axis gives median, third quartile and the constant-vector test; the sorts are shared between
the functions raw, abs and sq (see :func:`_transformed`); mean and central moments come from the same array.
The definitions of the statistics are in :mod:`virtual_lab.analysis.observables`.
"""

from __future__ import annotations

import functools
from typing import Mapping

import numpy as np

#: Statistics that need a sort (skew and kurtosis: for the constant-vector test min == max).
_ORDER_STATISTICS = frozenset({"median", "thirdquartile", "skew", "kurtosis"})


@functools.lru_cache(maxsize=256)
def _nearest_rank_75(n: int) -> int:
    # the position np.percentile(..., 75, method="nearest") picks in a sorted vector of length n
    return int(np.percentile(np.arange(n), 75, method="nearest"))


def _statistics(values: np.ndarray, wanted: frozenset[str], is_sorted: bool) -> dict[str, np.ndarray]:
    """Core of :func:`~virtual_lab.analysis.observables.compute_statistics`; ``values`` is float64 and, when
    ``is_sorted``, sorted along -1."""
    n = values.shape[-1]
    if n == 0:
        raise ValueError("cannot compute statistics of an empty vector (0 units, synapses or stimuli)")
    needs_order = bool(wanted & _ORDER_STATISTICS)
    if needs_order and not is_sorted:
        values = np.sort(values, axis=-1)
    out: dict[str, np.ndarray] = {}
    if needs_order:
        any_nan = np.isnan(values[..., -1])  # NaN sorts last
        constant = values[..., 0] == values[..., -1]
    if "norm" in wanted:
        out["norm"] = np.sqrt(np.einsum("...i,...i->...", values, values))
    if wanted & {"mean", "var", "skew", "kurtosis"}:
        mean = values.mean(axis=-1)
        if "mean" in wanted:
            out["mean"] = mean
    if wanted & {"median", "skew"}:
        median = np.where(any_nan, np.nan, 0.5 * (values[..., (n - 1) // 2] + values[..., n // 2]))
        if "median" in wanted:
            out["median"] = median
    if "thirdquartile" in wanted:
        out["thirdquartile"] = np.where(any_nan, np.nan, values[..., _nearest_rank_75(n)])
    if wanted & {"var", "skew", "kurtosis"}:
        centered = values - mean[..., None]
        centered *= centered  # squared deviations, in place
        var = centered.mean(axis=-1)
        if needs_order:
            var = np.where(constant, 0.0, var)  # exact 0 for constant vectors despite rounding in the mean
        if "var" in wanted:
            out["var"] = var
        with np.errstate(divide="ignore", invalid="ignore"):
            if "skew" in wanted:
                out["skew"] = np.where(constant, 0.0, 3.0 * (mean - median) / np.sqrt(var))
            if "kurtosis" in wanted:
                centered *= centered  # fourth powers
                out["kurtosis"] = np.where(constant, 0.0, centered.mean(axis=-1) / (var * var))
    return out


def _transformed(x: np.ndarray, functions: Mapping[str, frozenset[str]]) -> dict[str, tuple[np.ndarray, bool]]:
    """``function(x)`` for each function asked, as (float64 array, sorted along -1?).

    ``functions`` maps each function to the statistics wanted of it. Sorts are shared: x**2 is sorted in
    the order of |x|, and |x| in the order of x where x >= 0 (e.g. ReLU outputs), so at most two sorts
    serve all three functions. ``x`` (float64, owned by the caller) is not modified.
    """
    out: dict[str, tuple[np.ndarray, bool]] = {}
    sorted_raw = None
    if "raw" in functions:
        if functions["raw"] & _ORDER_STATISTICS:
            sorted_raw = np.sort(x, axis=-1)
            out["raw"] = (sorted_raw, True)
        else:
            out["raw"] = (x, False)
    magnitude = [f for f in ("abs", "sq") if f in functions]
    if any(functions[f] & _ORDER_STATISTICS for f in magnitude):
        lowest = sorted_raw[..., 0] if sorted_raw is not None else x
        nonnegative = bool(np.min(lowest) >= 0)  # False when NaN
        if nonnegative and sorted_raw is not None:
            sorted_abs = sorted_raw
        else:
            sorted_abs = np.sort(x if nonnegative else np.abs(x), axis=-1)
        if "abs" in functions:
            out["abs"] = (sorted_abs, True)
        if "sq" in functions:
            out["sq"] = (np.square(sorted_abs), True)
    else:
        if "abs" in functions:
            out["abs"] = (np.abs(x), False)
        if "sq" in functions:
            out["sq"] = (np.square(x), False)
    return out
