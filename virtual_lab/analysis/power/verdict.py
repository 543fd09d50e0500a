"""How often is the verdict right when M recorded animals share one rule?

Each animal is recorded with the chosen protocol and decoded on its own; the decoder's confusion matrix,
estimated on networks that took no part in choosing the protocol, is the likelihood ``P(predicted | true)``.
The verdict over ``M`` animals is the rule of highest posterior under a uniform prior:
``argmax_r prod_a P(predicted_a | r)``, i.e. of the counts ``n`` of each predicted rule,
``argmax_r sum_j n_j log P(j | r)``. Its probability of being right, with the true rule drawn uniformly
and the animals' predictions independent draws from the true rule's row, is computed exactly by
enumerating every count vector ``n`` (a multinomial over the ``k`` rules) -- or, when there are too many,
by a seeded Monte Carlo. Ties between rules count as a fair coin among the tied rules.

:func:`animals_table` estimates the confusion from per-network predictions (Dirichlet smoothing: a
pseudo-count in every cell, so that a cell never seen is not zero) and gives the interval by a bootstrap
over networks (resampled within their rule, each replicate's rows drawn from their Dirichlet posterior).
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from typing import Any, Sequence

import numpy as np

from virtual_lab.stats import percentile_interval, stratified_bootstrap_indices
from virtual_lab.validation import check_real

__all__ = ["DEFAULT_ANIMALS", "MAX_ENUMERATED", "animals_table", "count_vectors", "smoothed_confusion",
           "verdict_accuracy"]

#: Numbers of recorded animals of the M-animals table.
DEFAULT_ANIMALS = (1, 2, 3, 5, 10)
#: Largest number of count vectors enumerated exactly; above it :func:`verdict_accuracy` draws Monte Carlo
#: samples (``n_draws``) instead.
MAX_ENUMERATED = 200_000


def count_vectors(n_animals: int, n_classes: int) -> np.ndarray:
    """Every way ``n_animals`` predictions fall on ``n_classes`` rules, as count vectors.

    Returns
    -------
    ndarray of int64, shape (comb(n_animals + n_classes - 1, n_classes - 1), n_classes)
        Each row sums to ``n_animals``.

    Examples
    --------
    >>> count_vectors(2, 2).tolist()
    [[2, 0], [1, 1], [0, 2]]
    """
    rows = [np.bincount(np.array(c, dtype=np.int64), minlength=n_classes)
            for c in itertools.combinations_with_replacement(range(n_classes), n_animals)]
    return np.array(rows, dtype=np.int64).reshape(-1, n_classes)


def _check_stochastic(name: str, matrix: Any) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ValueError(f"{name} must be a square (k, k) matrix with k >= 2, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0) or not np.allclose(matrix.sum(axis=1), 1.0):
        raise ValueError(f"{name} must hold non-negative rows that sum to 1 (P(predicted | true))")
    return matrix


def _correct_given(log_likelihood: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, V, k): for model b, count vector v and true rule r, the probability that the verdict names r (ties
    shared). ``log_likelihood`` has shape (B, k, k), ``counts`` (V, k)."""
    log_posterior = _log_terms(counts, log_likelihood)  # (B, V, k rules)
    best = log_posterior.max(axis=2, keepdims=True)
    tied = np.isclose(log_posterior, best, rtol=1e-12, atol=1e-9) | (log_posterior == best)
    return tied / tied.sum(axis=2, keepdims=True)


def _log_terms(counts: np.ndarray, log_matrix: np.ndarray) -> np.ndarray:
    """(B, V, k): ``sum_j counts[v, j] * log_matrix[b, r, j]``, with 0 * log 0 = 0 (a rule that never predicts
    j is not penalized by j's absence)."""
    with np.errstate(invalid="ignore"):
        terms = np.where(counts[None, :, None, :] > 0, counts[None, :, None, :] * log_matrix[:, None, :, :], 0.0)
    return terms.sum(axis=3)


@functools.lru_cache(maxsize=64)
def _enumeration(n_animals: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Count vectors and their log multinomial coefficients (cached: the bootstrap asks for them often)."""
    from scipy.special import gammaln

    counts = count_vectors(n_animals, n_classes)
    counts.setflags(write=False)
    log_coefficient = gammaln(n_animals + 1) - gammaln(counts + 1).sum(axis=1)
    log_coefficient.setflags(write=False)
    return counts, log_coefficient


def _verdict_batch(truth: np.ndarray, model: np.ndarray, n_animals: int, n_draws: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(B, k): P(right | true rule) for B pairs of (truth, model) matrices of shape (B, k, k)."""
    n_batch, k = truth.shape[0], truth.shape[1]
    with np.errstate(divide="ignore"):
        log_model, log_truth = np.log(model), np.log(truth)
    if math.comb(n_animals + k - 1, k - 1) <= MAX_ENUMERATED:
        counts, log_coefficient = _enumeration(n_animals, k)
        out = np.empty((n_batch, k))
        chunk = max(1, int(4_000_000 // max(1, counts.shape[0] * k * k)))  # bounded temporary arrays
        for start in range(0, n_batch, chunk):
            part = slice(start, start + chunk)
            probability = np.exp(log_coefficient[None, :, None] + _log_terms(counts, log_truth[part]))  # (b, V, k)
            out[part] = (probability * _correct_given(log_model[part], counts)).sum(axis=1)
        return np.clip(out, 0.0, 1.0)
    out = np.empty((n_batch, k))
    for b in range(n_batch):
        for r in range(k):
            counts = rng.multinomial(n_animals, truth[b, r], size=n_draws)
            out[b, r] = _correct_given(log_model[b:b + 1], counts)[0, :, r].mean()
    return out


def verdict_accuracy(confusion: Any, n_animals: int, *, likelihood: Any = None, n_draws: int = 100_000,
                     seed: int | np.random.Generator | None = 0, per_rule: bool = False) -> float | np.ndarray:
    """Probability that the posterior verdict over ``n_animals`` animals sharing one rule is right.

    Parameters
    ----------
    confusion : array-like, shape (k, k)
        ``P(predicted = j | true = i)`` of one animal (rows sum to 1): how the animals' predictions are drawn.
    n_animals : int
        Animals recorded, >= 1; their predictions are independent given the rule.
    likelihood : array-like, shape (k, k), optional
        The matrix the posterior uses (default: ``confusion`` itself). A zero cell makes that prediction
        impossible under that rule.
    n_draws : int, default=100_000
        Monte Carlo draws per true rule when the count vectors number more than :data:`MAX_ENUMERATED`.
    seed : int, Generator or None, default=0
        Seed of the Monte Carlo draws (unused when the answer is exact).
    per_rule : bool, default=False
        Return the probability for each true rule instead of their mean (the uniform prior).

    Returns
    -------
    float, or ndarray of float64 with shape (k,) when ``per_rule``

    Examples
    --------
    Two rules, each animal's prediction right with probability 0.8: one animal is right 80% of the time,
    three animals (a majority vote) ``0.8**3 + 3 * 0.8**2 * 0.2``.

    >>> c = [[0.8, 0.2], [0.2, 0.8]]
    >>> round(verdict_accuracy(c, 1), 6), round(verdict_accuracy(c, 3), 6)
    (0.8, 0.896)
    """
    truth = _check_stochastic("confusion", confusion)
    model = truth if likelihood is None else _check_stochastic("likelihood", likelihood)
    if model.shape != truth.shape:
        raise ValueError(f"likelihood has shape {model.shape}, confusion {truth.shape}")
    n_animals = _check_animals(n_animals)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    values = _verdict_batch(truth[None], model[None], n_animals, int(n_draws), rng)[0]
    return values if per_rule else float(values.mean())


def _check_animals(n_animals: Any) -> int:
    if isinstance(n_animals, bool) or not isinstance(n_animals, numbers.Integral) or n_animals < 1:
        raise ValueError(f"n_animals must be an integer >= 1, got {n_animals!r}")
    return int(n_animals)


def smoothed_confusion(counts: Any, pseudo_count: float | None = None) -> np.ndarray:
    """Row-normalized confusion with ``pseudo_count`` added to every cell (Dirichlet smoothing).

    Parameters
    ----------
    counts : array-like, shape (k, k)
        Predictions (possibly fractional: networks weighted by the fraction of rig repeats) per true rule
        (rows) and predicted rule (columns).
    pseudo_count : float, optional
        Added to every cell. Default ``1 / k``: one pseudo-observation per row spread evenly over the ``k``
        rules (the Perks prior), so that no cell is zero while a perfect row of ``n`` networks moves only
        to ``(n + 1/k) / (n + 1)``. ``1`` is add-one (a uniform Dirichlet prior): with 4 rules it adds three
        pseudo-errors per row, pulling a perfect row of 12 networks down to 0.81.

    Returns
    -------
    ndarray of float64, shape (k, k)
        Rows sum to 1.

    Examples
    --------
    >>> smoothed_confusion([[4, 0], [1, 3]], pseudo_count=1).round(3).tolist()
    [[0.833, 0.167], [0.333, 0.667]]
    """
    counts = np.asarray(counts, dtype=np.float64)
    pseudo = _pseudo_count(pseudo_count, counts.shape[-1])
    smoothed = counts + pseudo
    totals = smoothed.sum(axis=-1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError("smoothed_confusion: a row without predictions needs pseudo_count > 0")
    return smoothed / totals


def _pseudo_count(pseudo_count: float | None, n_classes: int) -> float:
    if pseudo_count is None:
        return 1.0 / n_classes
    return check_real("pseudo_count", pseudo_count, low=0)


def animals_table(per_network: np.ndarray, rules: Sequence[str] | np.ndarray, classes: Sequence[str], *,
                  animals: Sequence[int] = DEFAULT_ANIMALS, pseudo_count: float | None = None,
                  n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """P(the combined verdict is right) for each number of animals, with a bootstrap interval over networks.

    The point estimate uses the smoothed confusion of every test network (:func:`smoothed_confusion`) as
    both the animals' distribution of predictions and the posterior's likelihood. The interval: the test
    networks are resampled with replacement within their rule, and each replicate's rows are drawn from
    their Dirichlet posterior (resampled counts + ``pseudo_count``); without that draw, a confusion in which
    every network was decoded right would give a zero-width interval however few the networks. The two
    steps together make the interval conservative (about 1.4 times as wide as either alone).

    Parameters
    ----------
    per_network : ndarray, shape (n_networks, k)
        Each test network's predictions: the fraction of its decodings (rig repeats) that named each class.
    rules : array-like of str, shape (n_networks,)
        The true rule of each network.
    classes : sequence of str, length k
        Column order of ``per_network`` and of the confusion.
    animals : sequence of int, default=DEFAULT_ANIMALS
    pseudo_count : float, optional
        See :func:`smoothed_confusion` (default ``1 / k``).
    n_bootstrap : int, default=2000
    confidence : float, default=0.95
    seed : int, default=0

    Returns
    -------
    list of dict
        One per number of animals: ``animals``, ``p_correct``, ``ci`` (percentile interval of the
        replicates) and ``per_rule`` (probability per true rule).
    """
    per_network = np.asarray(per_network, dtype=np.float64)
    rules = np.asarray(rules).astype(str)
    classes = list(classes)
    k = len(classes)
    pseudo = _pseudo_count(pseudo_count, k)
    index = np.array([classes.index(r) for r in rules.tolist()], dtype=np.int64)

    def counts_of(rows: np.ndarray) -> np.ndarray:
        counts = np.zeros((k, k))
        np.add.at(counts, index[rows], per_network[rows])
        return counts

    point = smoothed_confusion(counts_of(np.arange(len(rules))), pseudo)
    rng = np.random.default_rng(seed)
    draws = stratified_bootstrap_indices(rules, int(n_bootstrap), rng, classes=sorted(set(rules.tolist())))
    concentration = np.stack([counts_of(row) for row in draws]) + pseudo  # (B, k, k)
    gamma = rng.standard_gamma(np.maximum(concentration, 1e-12))
    replicates = gamma / gamma.sum(axis=2, keepdims=True)
    table = []
    for m in animals:
        m = _check_animals(m)
        boot = _verdict_batch(replicates, replicates, m, 20_000, rng).mean(axis=1)
        low, high = percentile_interval(boot, confidence)
        per_rule = _verdict_batch(point[None], point[None], m, 100_000, rng)[0]
        table.append({"animals": m, "p_correct": float(per_rule.mean()), "ci": [float(low), float(high)],
                      "per_rule": dict(zip(classes, per_rule.tolist()))})
    return table
