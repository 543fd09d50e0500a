"""Network-level permutation test of decoding accuracy.

:func:`permutation_test` shuffles the rule labels across networks and re-runs the whole cross-validation
of :func:`~virtual_lab.analysis.evaluation.evaluate` for each shuffle; the p-value counts the shuffles
that score at least as well as the true labels.

References
----------
Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Stat. Appl. Genet. Mol.
Biol. 9(1). doi:10.2202/1544-6115.1585
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from virtual_lab.analysis.evaluation import EvaluationResult, evaluate
from virtual_lab.analysis.fitting import _check_n_jobs
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.stats import permutation_p_value
from virtual_lab.validation import check_choice, check_int

__all__ = ["PERMUTATION_METRICS", "PermutationResult", "permutation_test"]


PERMUTATION_METRICS = ("network_accuracy", "layer_accuracy", "network_balanced_accuracy",
                       "layer_balanced_accuracy")


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`permutation_test`.

    Attributes
    ----------
    metric : str
        Which accuracy (mean over splits) was compared.
    observed : float
        The metric with the true labels.
    null : ndarray of float64, shape (n_permutations,)
        The metric with rule labels shuffled across networks, whole cross-validation re-run each time.
    p_value : float
        ``(b + 1) / (m + 1)``, ``b`` = permutations scoring >= observed, ``m`` = permutations.
    seed : int
    """

    metric: str
    observed: float
    null: np.ndarray = field(repr=False)
    p_value: float
    seed: int

    @property
    def n_permutations(self) -> int:
        return len(self.null)

    @property
    def null_mean(self) -> float:
        """Empirical chance level."""
        return float(np.mean(self.null))

    def summary(self) -> dict[str, Any]:
        """JSON-serializable: ``metric``, ``observed``, ``p_value``, ``n_permutations``, ``null_mean``,
        ``null_sd``, ``null_95th_percentile``, ``seed``, ``null`` (list)."""
        return {"metric": self.metric, "observed": self.observed, "p_value": self.p_value,
                "n_permutations": self.n_permutations, "null_mean": self.null_mean,
                "null_sd": float(np.std(self.null, ddof=1)) if self.n_permutations > 1 else None,
                "null_95th_percentile": float(np.percentile(self.null, 95)), "seed": self.seed,
                "null": [float(v) for v in self.null]}


def _permuted_rules(table: FeatureTable, seed: int, index: int) -> np.ndarray:
    networks, inverse = np.unique(np.asarray(table.network_id).astype(str), return_inverse=True)
    labels = np.empty(len(networks), dtype=object)
    labels[inverse] = np.asarray(table.rule).astype(str)
    rng = np.random.default_rng(np.random.SeedSequence((seed, 7919, index)))
    return labels[rng.permutation(len(networks))][inverse].astype(str)


def _null_score(table: FeatureTable, decoder: Any, seed: int, index: int, metric: str, kwargs: dict) -> float:
    import dataclasses

    from virtual_lab.progress import quiet

    shuffled = dataclasses.replace(table, rule=_permuted_rules(table, seed, index))
    with quiet():  # one bar over the shuffles, not one per shuffle
        result = evaluate(shuffled, decoder, seed=seed, n_jobs=1, **kwargs)
    return float(np.mean(getattr(result, metric)))


def permutation_test(table: FeatureTable, decoder: str | Any = "random_forest", n_permutations: int = 100, *,
                     metric: str = "network_accuracy", seed: int = 0, n_jobs: int = 1,
                     observed: EvaluationResult | None = None, **evaluate_kwargs: Any) -> PermutationResult:
    """Network-level permutation test of decoding accuracy.

    Rule labels are shuffled *across networks* (every layer of a network keeps one label; the number of
    networks per rule is preserved) and the whole cross-validation of
    :func:`~virtual_lab.analysis.evaluation.evaluate` is re-run for each shuffle.
    (:func:`sklearn.model_selection.permutation_test_score` with ``groups`` permutes labels *within*
    groups, which is a no-op when a network has a single label.)

    Parameters
    ----------
    table : FeatureTable
    decoder : str or estimator, default="random_forest"
    n_permutations : int, default=100
    metric : {"network_accuracy", "layer_accuracy", "network_balanced_accuracy", "layer_balanced_accuracy"}
        Mean over splits.
    seed : int, default=0
        Seed of the splits and decoders (as in :func:`~virtual_lab.analysis.evaluation.evaluate`) and
        of the shuffles.
    n_jobs : int, default=1
        Permutations run in parallel.
    observed : EvaluationResult, optional
        The unpermuted result, if already computed with the same arguments.
    **evaluate_kwargs
        ``n_splits``, ``test_fraction``, ``split``, ``param_grid``, ``inner_splits`` for
        :func:`~virtual_lab.analysis.evaluation.evaluate`.

    Returns
    -------
    PermutationResult
        ``p_value = (b + 1) / (m + 1)`` (Phipson & Smyth 2010).
    """
    from joblib import Parallel, delayed

    n_permutations = check_int("n_permutations", n_permutations, low=1)
    check_choice("metric", metric, PERMUTATION_METRICS)
    n_jobs = _check_n_jobs(n_jobs)
    seed = check_int("seed", seed, low=0)
    if observed is None:
        observed = evaluate(table, decoder, seed=seed, n_jobs=n_jobs, **evaluate_kwargs)
    value = float(np.mean(getattr(observed, metric)))
    from virtual_lab.progress import progress_bar

    null = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_null_score)(table, decoder, seed, index, metric, evaluate_kwargs) for index in range(n_permutations))
    null = list(progress_bar(null, total=n_permutations, desc="permutation test", unit="shuffles"))
    null = np.asarray(null, dtype=np.float64)
    return PermutationResult(metric=metric, observed=value, null=null, p_value=permutation_p_value(null, value),
                             seed=seed)
