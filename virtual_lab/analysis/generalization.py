"""Generalization tests of rule decoding: train on some examples, test on others, no network on both sides.

- :func:`generalize` trains on examples matching one metadata filter and tests on examples matching
  another (held-out architecture, task, hyperparameter value, rig preset), never letting one network sit on
  both sides (filters: :func:`virtual_lab.analysis.tables.parse_filter`);
- :func:`held_out_generalization` holds out each value of a metadata key in turn;
- :func:`compare_splits`: grouped splits vs the paper's layer-level splits on the same table.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from virtual_lab.analysis.evaluation import EvaluationResult, cross_validate, evaluate
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.analysis.splits import _check_int, _n_test
from virtual_lab.analysis.tables import Filter, filter_mask, parse_filter

__all__ = ["HELD_OUT_KEYS", "compare_splits", "generalize", "held_out_generalization"]


def _generalization_splits(table: FeatureTable, train_side: np.ndarray, test_side: np.ndarray, n_splits: int,
                           test_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    networks, inverse = np.unique(table.network_id, return_inverse=True)
    on_train = np.zeros(len(networks), dtype=bool)
    on_test = np.zeros(len(networks), dtype=bool)
    on_train[inverse[train_side]] = True
    on_test[inverse[test_side]] = True
    rule = np.empty(len(networks), dtype=object)
    rule[inverse] = table.rule
    both = on_train & on_test
    train_only = on_train & ~on_test
    test_rules = sorted(set(table.rule[test_side].tolist()))
    train_rules = sorted(set(table.rule[train_side].tolist()))
    unseen = [r for r in test_rules if r not in train_rules]
    if unseen:
        raise ValueError(f"the test filter selects rule(s) {unseen} that the training filter leaves out; the "
                         f"decoder cannot name a rule it never saw (training rules: {train_rules})")
    if len(train_rules) < 2:
        raise ValueError(f"the training filter leaves a single rule {train_rules}; need at least 2")
    for r in test_rules:
        if not np.any((both | train_only) & (rule == r)):
            raise ValueError(f"no training network for rule {r!r}")
        if np.sum(both & (rule == r)) == 1 and not np.any(train_only & (rule == r)):
            raise ValueError(f"rule {r!r} has a single network on both sides of the filters; it cannot be "
                             f"tested without also being trained on (need >= 2 networks)")
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        test_network = np.zeros(len(networks), dtype=bool)
        train_network = np.zeros(len(networks), dtype=bool)
        for r in np.unique(rule).tolist():
            shared = np.flatnonzero(both & (rule == r))
            only = np.flatnonzero(train_only & (rule == r))
            if len(shared) >= 2:
                held = rng.permutation(shared)[:_n_test(test_fraction, len(shared))]
                test_network[held] = True
                train_network[np.setdiff1d(shared, held)] = True
            elif len(shared) == 1:
                train_network[shared] = True
            if len(only) >= 2:  # same training-set size as in-distribution cross-validation
                train_network[rng.permutation(only)[: len(only) - _n_test(test_fraction, len(only))]] = True
            else:
                train_network[only] = True
        test_network |= on_test & ~on_train
        train_rows = np.flatnonzero(train_side & train_network[inverse])
        test_rows = np.flatnonzero(test_side & test_network[inverse])
        if test_rows.size == 0:
            raise ValueError("the filters leave an empty test set (every test-side network is also needed "
                             "for training); use disjoint filters or more networks")
        splits.append((train_rows, test_rows))
    return splits


def generalize(table: FeatureTable, train_filter: Sequence[str | Filter] | str | None,
               test_filter: Sequence[str | Filter] | str | None, decoder: str | Any = "random_forest", *,
               n_splits: int = 10, test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1,
               param_grid: Any = None) -> EvaluationResult:
    """Train on the examples matching ``train_filter``, test on those matching ``test_filter``.

    No network is ever on both sides of a split. Networks only the training filter selects are training
    networks (a random ``1 - test_fraction`` of each rule per split, so the training set has the size of
    in-distribution cross-validation); networks only the test filter selects are tested in every split;
    networks both select (e.g. one network observed by two rig presets) are split per rule, trained on
    through their training-side examples and tested through their test-side examples.

    Parameters
    ----------
    table : FeatureTable
        E.g. :func:`~virtual_lab.analysis.tables.concat_tables` of one table per rig preset, each tagged with
        :func:`~virtual_lab.analysis.tables.with_metadata`.
    train_filter, test_filter : str, Filter, sequence of them, or None
        Metadata conditions (see :func:`~virtual_lab.analysis.tables.parse_filter`); None selects everything.
    decoder : str or estimator, default="random_forest"
    n_splits : int, default=10
    test_fraction : float, default=0.25
    seed : int, default=0
    n_jobs : int, default=1
    param_grid : optional
        Nested model selection (see :func:`~virtual_lab.analysis.evaluation.cross_validate`).

    Returns
    -------
    EvaluationResult
        ``split_kind == "generalization"``; ``notes`` name the filters and the sizes of both sides.

    Raises
    ------
    ValueError
        A filter matching nothing, an empty test set, a test rule absent from training, or a single
        training rule.
    """
    n_splits = _check_int("n_splits", n_splits, 1)
    train_side = filter_mask(table, train_filter)
    test_side = filter_mask(table, test_filter)
    splits = _generalization_splits(table, train_side, test_side, n_splits, test_fraction, seed)
    n_train_networks = len(np.unique(table.network_id[train_side]))
    n_test_networks = len(np.unique(table.network_id[test_side]))
    notes = (f"train filter: {_describe(train_filter)} ({n_train_networks} networks); test filter: "
             f"{_describe(test_filter)} ({n_test_networks} networks)",)
    return cross_validate(table, decoder, splits, seed=seed, n_jobs=n_jobs, param_grid=param_grid,
                          test_fraction=test_fraction, split_kind="generalization", notes=notes)


def _describe(filters: Any) -> str:
    if filters is None:
        return "all"
    if isinstance(filters, (str, Filter)):
        filters = [filters]
    return " & ".join(str(parse_filter(f)) for f in filters)


def compare_splits(table: FeatureTable, decoder: str | Any = "random_forest", **kwargs: Any
                   ) -> dict[str, Any]:
    """Grouped splits vs the paper's layer-level splits on the same table.

    Returns
    -------
    dict
        ``grouped`` and ``layer`` (EvaluationResult), and ``difference``: layer minus grouped mean
        accuracy, ``{"layer_accuracy": ..., "network_accuracy": ...}``. A positive difference is what the
        layer-level splits gain by letting one network's layers sit on both sides.
    """
    grouped = evaluate(table, decoder, split="grouped", **kwargs)
    layer = evaluate(table, decoder, split="layer", **kwargs)
    return {"grouped": grouped, "layer": layer,
            "difference": {name: float(np.mean(getattr(layer, name)) - np.mean(getattr(grouped, name)))
                           for name in ("layer_accuracy", "network_accuracy")}}


#: Metadata whose values a standard report holds out one at a time (when the sessions vary in them).
HELD_OUT_KEYS = ("architecture", "task", "paradigm")
#: How a held-out key is named in labels: the paradigm (supervised / contrastive) is the task's objective,
#: what the paper calls a different task (ImageNet categorization vs SimCLR).
_HELD_OUT_NAMES = {"paradigm": "task (paradigm)"}


def held_out_generalization(table: FeatureTable, key: str, decoder: str | Any = "random_forest", **kwargs: Any
                            ) -> list[tuple[str, EvaluationResult]]:
    """Leave one value of a metadata key out: train on every other value, test on the held-out one.

    Parameters
    ----------
    table : FeatureTable
    key : str
        E.g. ``"architecture"``: with sessions of mlp, cnn and resnet networks, three results (train on
        cnn + resnet, test on mlp; ...).
    decoder : str or estimator
    **kwargs
        Passed to :func:`generalize` (``n_splits``, ``test_fraction``, ``seed``, ``n_jobs``, ``param_grid``).

    Returns
    -------
    list of (label, EvaluationResult)
        Label ``"held-out <key>: <value>"`` (``"held-out task (paradigm): <value>"`` for the paradigm), one per
        value.

    Raises
    ------
    ValueError
        Fewer than two values of ``key`` in the table.
    """
    values = sorted({str(v) for v in table.metadata_column(key)})
    if len(values) < 2:
        raise ValueError(f"held-out {key}: the sessions have a single {key} ({', '.join(values) or 'none'}); "
                         f"holding one out needs at least two")
    results = []
    for value in values:
        others = [v for v in values if v != value]
        result = generalize(table, f"{key}={','.join(others)}", f"{key}={value}", decoder, **kwargs)
        results.append((f"held-out {_HELD_OUT_NAMES.get(key, key)}: {value}", result))
    return results
