"""Train/test splits for decoding the learning rule: over networks (leak-free) or over layers (the paper's).

Every split of :func:`grouped_splits` is drawn at the level of *networks*: all layers (examples) of one
network fall on the same side, so a decoder can never recognise a network it has already seen instead of
its learning rule. Splits are stratified by rule (each rule's networks are split ~75/25), as the paper's
category-balanced splits were, but over networks rather than layers. The paper's own splits, drawn per
*layer* (:func:`layer_splits`), are available with ``evaluate(..., split="layer")`` for comparison: they
let layers of one network sit on both sides, so a decoder can profit from recognising the network.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from virtual_lab.validation import check_fraction, check_int

__all__ = ["SPLIT_KINDS", "grouped_splits", "layer_splits"]


SPLIT_KINDS = ("grouped", "layer")
"""``"grouped"``: splits over networks (the default, leak-free); ``"layer"``: the paper's category-balanced
splits over layers (examples), where one network's layers can sit on both sides."""


def _check_rule_counts(labels: np.ndarray, what: str) -> np.ndarray:
    """The distinct rules of ``labels``; raises unless there are 2+ rules with 2+ items each.

    ``what`` completes "every rule needs at least 2 ..." and names the items, e.g. ``"examples for
    layer-level splits; too few"``.
    """
    rules, counts = np.unique(labels, return_counts=True)
    if len(rules) < 2:
        raise ValueError(f"need at least 2 rules to decode, got only {rules.tolist()}")
    too_few = [f"{rule!r} ({count})" for rule, count in zip(rules.tolist(), counts.tolist()) if count < 2]
    if too_few:
        raise ValueError(f"every rule needs at least 2 {what} for: {', '.join(too_few)}")
    return rules


def _check_int(name: str, value: object, minimum: int) -> int:
    """Kept only for :mod:`virtual_lab.analysis.generalization`; new code calls :func:`check_int`."""
    return check_int(name, value, low=minimum)


def _n_test(test_fraction: float, n: int) -> int:
    return min(max(int(math.floor(test_fraction * n + 0.5)), 1), n - 1)


def grouped_splits(groups: Sequence[str] | np.ndarray, labels: Sequence[str] | np.ndarray, n_splits: int = 10,
                   test_fraction: float = 0.25, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random train/test splits at the network level, stratified by rule.

    In every split, each rule's networks are shuffled and ``round(test_fraction * n_networks_of_rule)``
    of them (at least 1, at most all but 1) go to the test side; every example (layer) of a network goes
    where its network goes.

    Parameters
    ----------
    groups : array-like of str, shape (n_examples,)
        Network id of each example.
    labels : array-like of str, shape (n_examples,)
        Rule of each example; must be constant within a network.
    n_splits : int, default=10
    test_fraction : float, default=0.25
        Fraction of each rule's networks held out, in (0, 1).
    seed : int, default=0
        Seed of ``np.random.default_rng``; the splits depend only on the set of (network, rule) pairs and
        the seed, not on the order of the examples.

    Returns
    -------
    list of (ndarray of int64, ndarray of int64), length n_splits
        ``(train_indices, test_indices)``: sorted example positions.

    Raises
    ------
    ValueError
        Mismatched lengths, a network with two rules, fewer than two rules, or a rule with fewer than two
        networks (one is needed on each side).
    """
    groups = np.asarray(groups).astype(str)
    labels = np.asarray(labels).astype(str)
    if groups.ndim != 1 or groups.shape != labels.shape:
        raise ValueError(f"groups and labels must be 1-D of equal length, got shapes {groups.shape} and "
                         f"{labels.shape}")
    if groups.size == 0:
        raise ValueError("cannot split an empty table")
    n_splits = check_int("n_splits", n_splits, low=1)
    test_fraction = check_fraction("test_fraction", test_fraction)

    network_ids, network_of_example = np.unique(groups, return_inverse=True)
    network_rule = np.empty(len(network_ids), dtype=labels.dtype)
    network_rule[network_of_example] = labels
    conflicting = np.flatnonzero(network_rule[network_of_example] != labels)
    if conflicting.size:
        bad = groups[conflicting[0]]
        rules = sorted(set(labels[groups == bad].tolist()))
        raise ValueError(f"network {bad!r} has examples labelled with different rules {rules}; each network "
                         f"must have a single rule")
    rules = _check_rule_counts(network_rule, "networks (one for training, one for testing); too few networks")

    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(network_rule == rule) for rule in rules]
    splits = []
    for _ in range(n_splits):
        test_networks = []
        for member in members:
            n_test = _n_test(test_fraction, len(member))
            test_networks.append(rng.permutation(member)[:n_test])
        is_test = np.zeros(len(network_ids), dtype=bool)
        is_test[np.concatenate(test_networks)] = True
        test_example = is_test[network_of_example]
        splits.append((np.flatnonzero(~test_example).astype(np.int64), np.flatnonzero(test_example).astype(np.int64)))
    return splits


def layer_splits(labels: Sequence[str] | np.ndarray, n_splits: int = 10, test_fraction: float = 0.25,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The paper's category-balanced splits, drawn over examples (layers), not networks.

    In every split each rule's examples are shuffled and ``round(test_fraction * n_examples_of_rule)`` of
    them (at least 1, at most all but 1) go to the test side, whatever network they come from. Offered to
    compare with :func:`grouped_splits`: layers of one network can fall on both sides, so a decoder may
    recognise the network rather than its rule.

    Parameters
    ----------
    labels : array-like of str, shape (n_examples,)
    n_splits : int, default=10
    test_fraction : float, default=0.25
    seed : int, default=0

    Returns
    -------
    list of (ndarray of int64, ndarray of int64), length n_splits
        ``(train_indices, test_indices)``, sorted.

    Raises
    ------
    ValueError
        Fewer than two rules, or a rule with fewer than two examples.
    """
    labels = np.asarray(labels).astype(str)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    n_splits = check_int("n_splits", n_splits, low=1)
    test_fraction = check_fraction("test_fraction", test_fraction)
    rules = _check_rule_counts(labels, "examples for layer-level splits; too few")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == rule) for rule in rules]
    splits = []
    for _ in range(n_splits):
        is_test = np.zeros(labels.size, dtype=bool)
        for member in members:
            is_test[rng.permutation(member)[:_n_test(test_fraction, len(member))]] = True
        splits.append((np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)))
    return splits
