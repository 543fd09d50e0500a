"""Small statistics used by every analysis: intervals, chance levels, permutation p-values.

One place for each: :func:`wilson_interval` (a binomial proportion), :func:`stratified_bootstrap_indices` and
:func:`percentile_interval` (the bootstrap over networks), :func:`binomial_chance` (chance level of an
accuracy over n networks), :func:`permutation_p_value` (Phipson & Smyth), :func:`sem`.

Examples
--------
>>> low, high = wilson_interval(8, 10)
>>> round(low, 4), round(high, 4)
(0.4902, 0.9433)
>>> binomial_chance(20, 4)["threshold"]
0.45
>>> permutation_p_value([0.2, 0.3, 0.9], observed=0.8)
0.5
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from virtual_lab.validation import check_real

__all__ = ["wilson_interval", "sem", "binomial_chance", "permutation_p_value", "stratified_bootstrap_indices",
           "percentile_interval"]


def wilson_interval(n_correct: float, n_total: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    n_correct : float
        Successes (may be fractional, e.g. ``accuracy * n``).
    n_total : float
        Trials, > 0.
    confidence : float, default=0.95

    Returns
    -------
    (float, float)
        Lower and upper bound.

    References
    ----------
    Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference. JASA 22,
    209-212. doi:10.1080/01621459.1927.10502953

    Examples
    --------
    >>> [round(x, 3) for x in wilson_interval(0.9 * 40, 40)]
    [0.769, 0.96]
    """
    from scipy.stats import norm

    if not n_total > 0:
        raise ValueError(f"n_total must be > 0, got {n_total!r}")
    if not 0 <= n_correct <= n_total:
        raise ValueError(f"n_correct must lie in [0, n_total={n_total}], got {n_correct!r}")
    confidence = check_real("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = n_correct / n_total
    denominator = 1 + z * z / n_total
    centre = (p + z * z / (2 * n_total)) / denominator
    half = z * math.sqrt(p * (1 - p) / n_total + z * z / (4 * n_total * n_total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def sem(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)``; NaN for fewer than 2 values.

    Examples
    --------
    >>> sem([1.0, 2.0, 3.0])
    0.5773502691896258
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan")
    return float(values.std(ddof=1) / math.sqrt(values.size))


def binomial_chance(n_networks: int, n_classes: int, confidence: float = 0.95) -> dict[str, float]:
    """Chance level of network-level accuracy over ``n_networks`` networks and ``n_classes`` balanced rules.

    Returns
    -------
    dict
        ``chance`` (1/k), ``low`` and ``high`` (central ``confidence`` interval of Binomial(n, 1/k)/n) and
        ``threshold`` (smallest accuracy with one-sided binomial p < 1 - confidence).
    """
    from scipy.stats import binom

    p0 = 1.0 / n_classes
    alpha = 1 - confidence
    low, high = binom.ppf([alpha / 2, 1 - alpha / 2], n_networks, p0)
    threshold = (binom.isf(alpha, n_networks, p0) + 1) / n_networks
    return {"chance": p0, "low": float(low) / n_networks, "high": float(high) / n_networks,
            "threshold": float(min(threshold, 1.0))}


def permutation_p_value(null: Sequence[float] | np.ndarray, observed: float) -> float:
    """``(b + 1) / (m + 1)``: b of m null scores at least ``observed`` (never 0).

    References
    ----------
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Stat. Appl. Genet. Mol.
    Biol. 9(1). doi:10.2202/1544-6115.1585
    """
    null = np.asarray(null, dtype=np.float64)
    if null.size == 0:
        raise ValueError("a permutation p-value needs at least one null score")
    return (int(np.sum(null >= observed)) + 1) / (null.size + 1)


def stratified_bootstrap_indices(labels: Sequence[str] | np.ndarray, n_bootstrap: int,
                                 rng: np.random.Generator, classes: Sequence[str] | None = None) -> np.ndarray:
    """Bootstrap resamples of item indices, drawn with replacement within each class.

    Parameters
    ----------
    labels : array-like of str, shape (n,)
    n_bootstrap : int
    rng : numpy.random.Generator
    classes : sequence of str, optional
        Order in which the classes are drawn (default: sorted unique labels); part of the random stream.

    Returns
    -------
    ndarray of int64, shape (n_bootstrap, n)
        Row b holds replicate b: for each class (in ``classes`` order) as many draws as it has items.
    """
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist())) if classes is None else list(classes)
    members = [np.flatnonzero(labels == c) for c in classes]
    return np.concatenate([m[rng.integers(0, len(m), size=(n_bootstrap, len(m)))] for m in members], axis=1)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95, axis: int = -1) -> tuple:
    """Central percentile interval of bootstrap replicates along ``axis`` (NaN replicates ignored)."""
    alpha = 1 - confidence
    low, high = np.nanquantile(replicates, [alpha / 2, 1 - alpha / 2], axis=axis)
    return low, high
