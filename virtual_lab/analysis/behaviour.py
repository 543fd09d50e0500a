"""What the recording adds over behaviour: the observables against the learning curves they come with.

An experimenter always has a network's behaviour, its loss and accuracy over training; a recording is only
worth making if it tells the rule better. :func:`beyond_behaviour` decodes, with one decoder and the same
network-grouped splits:

- the **learning curves alone** (:func:`~virtual_lab.analysis.controls.performance_table`: log loss and
  probe accuracy at each observed checkpoint, one example per network);
- the **observables alone** (the decoding every report leads with);
- **both together** (:func:`curves_with_observables`: every layer example also gets its network's curves);
- the observables and the curves within the **performance-matched** subset
  (:func:`~virtual_lab.analysis.controls.performance_matched`: networks whose final accuracy overlaps
  across rules, with equal accuracy histograms per rule).

The tables hold the same networks, so :func:`~virtual_lab.analysis.splits.grouped_splits` (which depends
only on the networks and the seed) draws the same splits for all of them, and the differences are paired:
per network, correct-minus-correct averaged over splits, with a bootstrap interval over networks resampled
within their rule.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from virtual_lab.analysis.controls import _time_blocks, final_accuracy, performance_matched, performance_table
from virtual_lab.analysis.evaluation import EvaluationResult, evaluate
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.stats import percentile_interval, stratified_bootstrap_indices

logger = logging.getLogger(__name__)

__all__ = ["BEHAVIOUR_ROWS", "BehaviourComparison", "beyond_behaviour", "curves_with_observables"]

CURVES, OBSERVABLES, BOTH = "learning curves alone", "observables alone", "learning curves + observables"
MATCHED_OBSERVABLES = "observables, performance-matched"
MATCHED_CURVES = "learning curves alone, performance-matched"
#: Row labels of :class:`BehaviourComparison`, in order.
BEHAVIOUR_ROWS = (CURVES, OBSERVABLES, BOTH, MATCHED_OBSERVABLES, MATCHED_CURVES)
#: Paired differences reported: (label, minuend row, subtrahend row).
DIFFERENCES = (("observables - curves", OBSERVABLES, CURVES),
               ("curves + observables - curves", BOTH, CURVES),
               ("performance-matched: observables - curves", MATCHED_OBSERVABLES, MATCHED_CURVES))


def curves_with_observables(table: FeatureTable, curves: FeatureTable) -> FeatureTable:
    """Every example of ``table`` with its network's learning-curve features beside its observables.

    Parameters
    ----------
    table : FeatureTable
        Observables, timepoint-major (T blocks, then the depth one-hot).
    curves : FeatureTable
        :func:`~virtual_lab.analysis.controls.performance_table` of the same networks at the same T
        checkpoints.

    Returns
    -------
    FeatureTable
        In each timepoint block, the observables then the curves' log loss and accuracy; the depth one-hot
        last. Examples of networks without curves (e.g. non-finite ones) are dropped.

    Raises
    ------
    ValueError
        Different numbers of timepoints, or no network in common.
    """
    if curves.n_timepoints != table.n_timepoints:
        raise ValueError(f"the learning curves have {curves.n_timepoints} timepoints and the observables "
                         f"{table.n_timepoints}; both must come from the same checkpoints")
    row_of = {n: i for i, n in enumerate(curves.network_id.tolist())}
    keep = np.array([n in row_of for n in table.network_id.tolist()])
    if not keep.any():
        raise ValueError("the learning curves and the observables share no network")
    table = table.subset(keep) if not keep.all() else table
    obs_names, static_names, n_obs = _time_blocks(table)
    n, n_t = table.n_examples, table.n_timepoints
    series = table.X[:, : n_t * n_obs].reshape(n, n_t, n_obs)
    rows = np.array([row_of[i] for i in table.network_id.tolist()])
    perf = curves.X[rows].reshape(n, n_t, -1)
    names = np.concatenate([obs_names.reshape(n_t, n_obs), curves.feature_names.reshape(n_t, -1)], axis=1)
    X = np.hstack([np.concatenate([series, perf], axis=2).reshape(n, -1), table.X[:, n_t * n_obs:]])
    return dataclasses.replace(table, X=X, feature_names=np.concatenate([names.reshape(-1), static_names]))


def _by_prediction(result: EvaluationResult) -> dict[tuple[int, str], tuple[str, float]]:
    return {(row["split"], row["network_id"]): (row["rule"], float(row["correct"])) for row in result.predictions}


def _paired_difference(a: EvaluationResult, b: EvaluationResult, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Pooled accuracy of ``a`` minus ``b``; a bootstrap interval when both tested the same (split, network)s."""
    left, right = _by_prediction(a), _by_prediction(b)
    difference = float(np.mean([v for _, v in left.values()]) - np.mean([v for _, v in right.values()]))
    out: dict[str, Any] = {"difference": difference, "paired": left.keys() == right.keys(), "bootstrap95": None}
    if not out["paired"] or n_bootstrap < 1:
        return out
    per_network: dict[str, list[float]] = {}
    rules: dict[str, str] = {}
    for key, (rule, correct) in left.items():
        per_network.setdefault(key[1], []).append(correct - right[key][1])
        rules[key[1]] = rule
    ids = sorted(per_network)
    values = np.array([np.mean(per_network[i]) for i in ids])
    draws = stratified_bootstrap_indices([rules[i] for i in ids], n_bootstrap, np.random.default_rng(seed))
    low, high = percentile_interval(values[draws].mean(axis=1))
    out["bootstrap95"] = [float(low), float(high)]
    return out


@dataclass(frozen=True, eq=False)
class BehaviourComparison:
    """Outcome of :func:`beyond_behaviour`.

    Attributes
    ----------
    decoder : str
    rig : str
    results : dict of str to EvaluationResult
        Row label (:data:`BEHAVIOUR_ROWS`) -> result, for the rows that could be run.
    skipped : dict of str to str
        Row label -> why it was not run (e.g. no overlap in final accuracy).
    differences : dict of str to dict
        ``difference`` (pooled network accuracy), ``paired`` and ``bootstrap95`` ([low, high] or None) of
        each of :data:`DIFFERENCES` whose rows both ran.
    matched_note : str
        How many networks the performance-matched subset keeps, and its accuracy range.
    """

    decoder: str
    rig: str
    results: dict[str, EvaluationResult] = field(repr=False)
    skipped: dict[str, str]
    differences: dict[str, dict[str, Any]]
    matched_note: str = ""

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row of :data:`BEHAVIOUR_ROWS`: label, networks, network accuracy (mean, s.e.m. over
        splits, pooled, Wilson 95%), chance, or the reason it was skipped."""
        out = []
        for label in BEHAVIOUR_ROWS:
            if label not in self.results:
                out.append({"what": label, "skipped": self.skipped.get(label, "not run")})
                continue
            s = self.results[label].summary()
            out.append({"what": label, "n_networks": s["n_networks"],
                        "n_features": int(self.results[label].feature_names.shape[0]),
                        "network_accuracy_mean": s["network_accuracy_mean"],
                        "network_accuracy_sem": s["network_accuracy_sem"],
                        "network_accuracy_pooled": s["network_accuracy_pooled"],
                        "network_accuracy_wilson95": s["network_accuracy_wilson95"], "chance": s["chance"]})
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``decoder``, ``rig``, ``rows``, ``differences``, ``matched_note``."""
        return {"decoder": self.decoder, "rig": self.rig, "rows": self.rows(), "differences": self.differences,
                "matched_note": self.matched_note}


def beyond_behaviour(table: FeatureTable, recordings: Sequence[Any], decoder: str | Any = "random_forest", *,
                     rig: str = "full", observables_result: EvaluationResult | None = None,
                     curves_result: EvaluationResult | None = None,
                     matched_result: EvaluationResult | None = None, n_splits: int = 10,
                     test_fraction: float = 0.25, seed: int = 0, n_jobs: int = 1, param_grid: Any = None,
                     n_bootstrap: int = 2000) -> BehaviourComparison:
    """Decode the rule from the learning curves, the observables, both, and both within matched performance.

    Parameters
    ----------
    table : FeatureTable
        The observables (one example per layer of a network).
    recordings : sequence
        The recordings (or curve records) of the same networks: ``run_id``, ``rule``, ``metadata``,
        ``source.train_loss`` / ``source.test_accuracy`` and ``checkpoint_indices``, as
        :func:`~virtual_lab.analysis.controls.performance_table` reads them.
    decoder : str or estimator, default="random_forest"
    rig : str, default="full"
        A label stored in the result.
    observables_result, curves_result, matched_result : EvaluationResult, optional
        Cross-validations already run with ``decoder`` and the same splits (reused, not re-run): of the
        observables, of the curves alone, of the performance-matched observables (the
        ``performance_matched`` control with the same ``seed``).
    n_splits, test_fraction, seed, n_jobs, param_grid
        As in :func:`~virtual_lab.analysis.evaluation.evaluate`.
    n_bootstrap : int, default=2000
        Resamples of the paired-difference intervals (0: none).

    Returns
    -------
    BehaviourComparison
        A row the data cannot support (e.g. final accuracies that do not overlap across rules) is in
        ``skipped`` with the reason.
    """
    kwargs = dict(n_splits=n_splits, test_fraction=test_fraction, seed=seed, n_jobs=n_jobs, param_grid=param_grid)
    results: dict[str, EvaluationResult] = {}
    skipped: dict[str, str] = {}

    def run(label: str, make: Any) -> None:
        try:
            results[label] = make()
        except ValueError as error:
            logger.warning("%s skipped: %s", label, error)
            skipped[label] = str(error)

    recordings = list(recordings)
    try:
        curves = performance_table(recordings)
    except ValueError as error:
        curves = None
        for label in (CURVES, BOTH, MATCHED_CURVES):
            skipped[label] = str(error)
    run(OBSERVABLES, lambda: observables_result or evaluate(table, decoder, **kwargs))
    matched_note = ""
    if curves is not None:
        run(CURVES, lambda: curves_result or evaluate(curves, decoder, **kwargs))
        run(BOTH, lambda: evaluate(curves_with_observables(table, curves), decoder, **kwargs))
    try:
        matched = performance_matched(table, final_accuracy(recordings), seed=seed)
        low, high = matched.metadata[0]["performance_range"]
        kept = sorted(set(matched.network_id.tolist()))
        matched_note = (f"{len(kept)} of {len(np.unique(table.network_id))} networks, final accuracy "
                        f"{low:.3f}-{high:.3f}")
        run(MATCHED_OBSERVABLES, lambda: matched_result or evaluate(matched, decoder, **kwargs))
        if curves is not None:
            run(MATCHED_CURVES, lambda: evaluate(curves.subset(np.isin(curves.network_id, kept)), decoder, **kwargs))
    except ValueError as error:
        logger.warning("performance matching skipped: %s", error)
        skipped[MATCHED_OBSERVABLES] = skipped.setdefault(MATCHED_CURVES, str(error))
    differences = {label: _paired_difference(results[a], results[b], n_bootstrap, seed)
                   for label, a, b in DIFFERENCES if a in results and b in results}
    name = next(iter(results.values())).decoder if results else str(decoder)
    return BehaviourComparison(decoder=name, rig=rig, results=results, skipped=skipped, differences=differences,
                               matched_note=matched_note)


def behaviour_markdown(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """The section "What the recording adds over behaviour" (Markdown lines) from
    :meth:`BehaviourComparison.summary` dicts (one per decoder); empty without any."""
    summaries = [s for s in summaries if s]
    if not summaries:
        return []
    lines = ["## What the recording adds over behaviour", "",
             "Decoding the rule from the learning curves alone (log training loss and probe accuracy at every "
             "observed checkpoint, one example per network), from the observables alone, from both together "
             "(each layer also sees its network's curves), and within the performance-matched subset (networks "
             "whose final accuracy overlaps across rules, equal accuracy histograms per rule). Same decoder and "
             "same network-grouped splits in every row; network accuracy, mean ± s.e.m. over splits, and the "
             "Wilson 95% interval over the distinct test networks.", "",
             "| decoder | rig | decoded from | networks | network accuracy | Wilson 95% | chance |",
             "|---|---|---|---|---|---|---|"]
    reasons: dict[str, str] = {}
    for s in summaries:
        for row in s["rows"]:
            if "skipped" in row:
                lines.append(f"| {s['decoder']} | {s['rig']} | {row['what']} | - | skipped (below) | - | - |")
                reasons.setdefault(row["what"], row["skipped"])
                continue
            low, high = row["network_accuracy_wilson95"]
            lines.append(f"| {s['decoder']} | {s['rig']} | {row['what']} | {row['n_networks']} | "
                         f"{row['network_accuracy_mean']:.3f} ± {row['network_accuracy_sem'] or 0:.3f} | "
                         f"[{low:.2f}, {high:.2f}] | {row['chance']:.2f} |")
    lines.append("")
    for s in summaries:
        parts = []
        for label, d in s["differences"].items():
            interval = (f" [{d['bootstrap95'][0]:+.3f}, {d['bootstrap95'][1]:+.3f}]" if d["bootstrap95"] else
                        " (different networks: no paired interval)")
            parts.append(f"{label}: {d['difference']:+.3f}{interval}")
        if parts:
            lines.append(f"- **{s['decoder']}** (paired over the same splits and networks, bootstrap 95% over "
                         f"networks): " + "; ".join(parts) + "."
                         + (f" Performance-matched subset: {s['matched_note']}." if s["matched_note"] else ""))
    lines += [f"- *{what}* skipped: {reason}" for what, reason in reasons.items()]
    return lines + [""]
