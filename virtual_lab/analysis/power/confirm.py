"""Selection and confirmation: the protocol is chosen on one part of the networks and confirmed on another.

Choosing the smallest grid point whose cross-validated accuracy reaches the target, and quoting that
accuracy, is optimistic: of many grid points with the same true accuracy, the one that looks best is the one
whose estimate happened to be high (and the bias grows with the grid). So the networks are split once,
stratified by rule (and by the held-out axis when there is one), into a *selection* part, on which the grid
is cross-validated and the protocol chosen, and a disjoint *confirmation* part, which takes no part in the
choice. At the chosen protocol a decoder trained on the selection networks decodes every confirmation
network; that accuracy, with its interval over confirmation networks, is what the recommendation reports.

:func:`split_networks` draws the split; :func:`fit_once` is one decoder trained on some networks and
scored on others (confirmation, held-out condition, one pair of rules); :func:`confirmed_accuracy` turns its
per-network predictions into an accuracy with a Wilson and a bootstrap interval.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from virtual_lab.stats import percentile_interval, stratified_bootstrap_indices, wilson_interval

__all__ = ["confirmed_accuracy", "fit_once", "split_networks"]


def split_networks(rules: Sequence[str] | np.ndarray, fraction: float, seed: int,
                   strata: Sequence[Any] | np.ndarray | None = None, min_selection: int = 2,
                   min_confirmation: int = 1) -> np.ndarray:
    """Which networks confirm (True) and which select (False): a seeded split stratified by rule.

    Within each rule the networks are ordered by stratum (e.g. the learning-rate multiplier; random order
    within a stratum) and every ``1 / fraction``-th one, from a random offset, confirms: each rule gets
    ``round(n * fraction)`` confirmation networks (kept between ``min_confirmation`` and
    ``n - min_selection``), spread evenly over the strata.

    Parameters
    ----------
    rules : array-like of str, shape (n_networks,)
    fraction : float
        Fraction of each rule's networks that confirm, in (0, 1).
    seed : int
    strata : array-like, shape (n_networks,), optional
        A second variable to balance (sortable values).
    min_selection, min_confirmation : int, default=2, 1
        Networks each rule keeps on each side.

    Returns
    -------
    ndarray of bool, shape (n_networks,)

    Raises
    ------
    ValueError
        A rule with fewer than ``min_selection + min_confirmation`` networks.

    Examples
    --------
    >>> int(split_networks(["a"] * 4 + ["b"] * 4, 0.5, seed=0).sum())
    4
    """
    rules = np.asarray(rules).astype(str)
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise ValueError(f"confirm_fraction must be a number strictly between 0 and 1, got {fraction!r}")
    strata = np.zeros(len(rules)) if strata is None else np.asarray(strata)
    rng = np.random.default_rng(seed)
    confirm = np.zeros(len(rules), dtype=bool)
    for rule in sorted(set(rules.tolist())):
        members = np.flatnonzero(rules == rule)
        n = len(members)
        if n < min_selection + min_confirmation:
            raise ValueError(f"rule {rule!r} has {n} network(s); choosing on one part and confirming on another "
                             f"needs at least {min_selection + min_confirmation} per rule ({min_selection} to "
                             f"cross-validate, {min_confirmation} to confirm)")
        n_confirm = int(min(max(round(n * fraction), min_confirmation), n - min_selection))
        order = members[np.lexsort((rng.random(n), strata[members]))]
        offset = rng.random()
        picks = np.floor((np.arange(n_confirm) + offset) * n / n_confirm).astype(int)
        confirm[order[picks]] = True
    return confirm


def fit_once(X: np.ndarray, rule: np.ndarray, network: np.ndarray, layer: np.ndarray, depth: np.ndarray,
             feature_names: np.ndarray, decoder: Any, train_rows: np.ndarray, test_rows: np.ndarray,
             seed: int) -> dict[str, Any]:
    """Train the decoder on some networks' layers and predict other networks (one split, no resampling).

    Parameters
    ----------
    X : ndarray, shape (n_examples, n_features)
    rule, network, layer, depth : ndarray of str, shape (n_examples,)
    feature_names : ndarray of str
    decoder : str or estimator
    train_rows, test_rows : ndarray of bool, shape (n_examples,)
        Examples on each side (disjoint networks).
    seed : int
        Seed of the decoder.

    Returns
    -------
    dict
        ``predictions``: (network id, predicted rule, correct) per test network; ``n_dropped``: examples with
        non-finite features left out.
    """
    from virtual_lab.analysis.evaluation import cross_validate
    from virtual_lab.analysis.observables import FeatureTable
    from virtual_lab.progress import quiet

    finite = np.isfinite(X).all(axis=1)
    keep = finite & (train_rows | test_rows)
    table = FeatureTable(X=X[keep].astype(np.float64), rule=rule[keep], network_id=network[keep],
                         layer=layer[keep], depth_position=depth[keep],
                         metadata=tuple({} for _ in range(int(keep.sum()))), feature_names=feature_names)
    train, test = np.flatnonzero(train_rows[keep]), np.flatnonzero(test_rows[keep])
    with quiet():
        result = cross_validate(table, decoder, [(train, test)], seed=seed, n_jobs=1, split_kind="confirmation")
    return {"predictions": [(p["network_id"], p["predicted_rule"], bool(p["correct"])) for p in result.predictions],
            "n_dropped": int((~finite & (train_rows | test_rows)).sum())}


def confirmed_accuracy(predictions: Sequence[Sequence[tuple[str, str, bool]]], network_ids: Sequence[str],
                       network_rules: Sequence[str], classes: Sequence[str], *, confidence: float = 0.95,
                       n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy of the test networks over the repeats (rig seeds) that decoded them, with its intervals.

    Parameters
    ----------
    predictions : sequence (one per repeat) of (network id, predicted rule, correct)
    network_ids, network_rules : sequence of str
        The test networks and their rules (those never predicted are left out).
    classes : sequence of str
    confidence : float, default=0.95
    n_bootstrap : int, default=2000
    seed : int, default=0

    Returns
    -------
    dict
        ``accuracy`` (mean over networks of each one's fraction correct), ``n`` (networks), ``wilson``
        (Wilson interval over the ``n`` networks, ``accuracy * n`` successes: a network is one trial),
        ``bootstrap`` (percentile interval, networks resampled within rule), ``balanced_accuracy``,
        ``confusion`` (k x k, networks weighted by the fraction of repeats naming each rule),
        ``per_network`` (n x k of those fractions), ``networks`` and ``rules`` (in that order),
        ``per_rule`` (accuracy per true rule).
    """
    classes = list(classes)
    tally: dict[str, np.ndarray] = {}
    for repeat in predictions:
        for network, guess, _ in repeat:
            tally.setdefault(network, np.zeros(len(classes)))[classes.index(guess)] += 1
    rule_of = dict(zip(map(str, network_ids), map(str, network_rules)))
    ids = [n for n in map(str, network_ids) if n in tally]
    if not ids:
        return {"accuracy": None, "n": 0, "wilson": [None, None], "bootstrap": [None, None],
                "balanced_accuracy": None, "confusion": np.zeros((len(classes), len(classes))).tolist(),
                "per_network": [], "networks": [], "rules": [], "per_rule": {}}
    rules = np.array([rule_of[n] for n in ids])
    fractions = np.stack([tally[n] / tally[n].sum() for n in ids])  # (n, k)
    truth = np.array([classes.index(r) for r in rules.tolist()])
    correct = fractions[np.arange(len(ids)), truth]
    accuracy = float(correct.mean())
    n = len(ids)
    low, high = wilson_interval(accuracy * n, n, confidence)
    draws = stratified_bootstrap_indices(rules, int(n_bootstrap), np.random.default_rng(seed))
    b_low, b_high = percentile_interval(correct[draws].mean(axis=1), confidence)
    confusion = np.zeros((len(classes), len(classes)))
    np.add.at(confusion, truth, fractions)
    per_rule = {c: float(correct[rules == c].mean()) for c in classes if np.any(rules == c)}
    return {"accuracy": accuracy, "n": n, "wilson": [float(low), float(high)],
            "bootstrap": [float(b_low), float(b_high)], "balanced_accuracy": float(np.mean(list(per_rule.values()))),
            "confusion": confusion.tolist(), "per_network": fractions.tolist(), "networks": ids,
            "rules": rules.tolist(), "per_rule": per_rule}
