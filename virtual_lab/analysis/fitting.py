"""One split of a cross-validation: fit the decoder, predict the test layers, combine them per network.

:func:`class_scores` turns a fitted decoder's output into class scores for each test example (one layer of
one network): ``predict_proba`` where the decoder has it, the softmax of ``decision_function`` where it has
only that, one-hot votes otherwise. :func:`network_predictions` averages the scores of a network's layers
into one prediction per network. The private helpers build (or clone) the decoder of a split, tell
time-series decoders the table's layout, fit on one BLAS thread (with nested model selection when a grid
is given), read feature importances, and run every split of a cross-validation in parallel.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.decoders import make_decoder
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.validation import check_int

__all__ = ["COMBINATIONS", "class_scores", "network_predictions"]


COMBINATIONS = ("mean_proba", "mean_softmax_decision", "vote")
"""How :func:`class_scores` scores a decoder's test examples (the ``method`` it returns)."""


def class_scores(estimator: Any, X: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, str]:
    """Per-example class scores used to combine the layers of one network.

    Parameters
    ----------
    estimator : fitted classifier
        Must have ``classes_`` and ``predict``.
    X : ndarray, shape (n_examples, n_features)
    classes : sequence of str, length n_classes
        Column order of the result (classes the estimator never saw get score 0).

    Returns
    -------
    scores : ndarray of float64, shape (n_examples, n_classes)
        Non-negative, each row sums to 1.
    method : {"mean_proba", "mean_softmax_decision", "vote"}
        ``predict_proba`` when the estimator has it; otherwise the softmax over classes of
        ``decision_function`` (binary: ``[0, d]``, i.e. a logistic of the margin); otherwise the one-hot
        of ``predict``.
    """
    estimator_classes = np.asarray(estimator.classes_).astype(str)
    if hasattr(estimator, "predict_proba"):
        raw, method = np.asarray(estimator.predict_proba(X), dtype=np.float64), "mean_proba"
    elif hasattr(estimator, "decision_function"):
        decision = np.asarray(estimator.decision_function(X), dtype=np.float64)
        if decision.ndim == 1:
            decision = np.column_stack([np.zeros_like(decision), decision])
        decision = decision - decision.max(axis=1, keepdims=True)
        raw = np.exp(decision)
        raw /= raw.sum(axis=1, keepdims=True)
        method = "mean_softmax_decision"
    else:
        predicted = np.asarray(estimator.predict(X)).astype(str)
        raw, method = (predicted[:, None] == estimator_classes[None, :]).astype(np.float64), "vote"
    classes = np.asarray(classes).astype(str)
    scores = np.zeros((raw.shape[0], len(classes)))
    position = {c: i for i, c in enumerate(classes.tolist())}
    for column, name in enumerate(estimator_classes.tolist()):
        if name in position:
            scores[:, position[name]] = raw[:, column]
    return scores, method


def network_predictions(scores: np.ndarray, network_ids: Sequence[str] | np.ndarray,
                        classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Combine layer-level class scores into one prediction per network.

    The scores of a network's layers are averaged and the class with the highest mean wins (ties go to
    the earliest class in ``classes``).

    Parameters
    ----------
    scores : ndarray, shape (n_examples, n_classes)
        E.g. from :func:`class_scores`.
    network_ids : array-like of str, shape (n_examples,)
    classes : sequence of str, length n_classes

    Returns
    -------
    networks : ndarray of str, shape (n_networks,)
        Sorted distinct network ids.
    predicted : ndarray of str, shape (n_networks,)
        Predicted class of each network.

    Examples
    --------
    >>> scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    >>> network_predictions(scores, ["a", "a", "b"], ["fa", "sgd"])[1].tolist()
    ['fa', 'sgd']
    """
    scores = np.asarray(scores, dtype=np.float64)
    networks, inverse = np.unique(np.asarray(network_ids).astype(str), return_inverse=True)
    totals = np.zeros((len(networks), scores.shape[1]))
    np.add.at(totals, inverse, scores)
    means = totals / np.bincount(inverse, minlength=len(networks))[:, None]
    return networks, np.asarray(classes).astype(str)[np.argmax(means, axis=1)]


def _decoder_seed(seed: int, split: int) -> int:
    return int(np.random.SeedSequence((seed, split)).generate_state(1)[0])


def _table_layout(table: FeatureTable) -> dict[str, int]:
    """``n_timepoints`` and ``n_static`` of a table whose time-varying columns are timepoint-major."""
    names = table.feature_names
    n_static = int(np.sum(names["timepoint"] < 0))
    n_varying = table.n_features - n_static
    n_t = table.n_timepoints
    if n_t < 1 or n_varying % n_t or not np.all(names["timepoint"][:n_varying] >= 0):
        return {}
    return {"n_timepoints": n_t, "n_static": n_static}


def _configure(estimator: Any, layout: Mapping[str, int]) -> Any:
    """Tell time-series decoders (parameters ``*n_timepoints`` / ``*n_static`` left at None) the layout."""
    if not layout or not hasattr(estimator, "get_params"):
        return estimator
    params = estimator.get_params(deep=True)
    updates = {}
    for key, value in params.items():
        for name in ("n_timepoints", "n_static"):
            if (key == name or key.endswith("__" + name)) and value is None:
                updates[key] = layout[name]
    return estimator.set_params(**updates) if updates else estimator


def _importances(estimator: Any, n_features: int) -> np.ndarray | None:
    est = getattr(estimator, "best_estimator_", estimator)
    final = est[-1] if hasattr(est, "steps") else est
    if hasattr(est, "steps"):
        for _, step in est.steps[:-1]:
            if step not in (None, "passthrough") and type(step).__name__ not in ("StandardScaler", "RobustScaler",
                                                                                 "MinMaxScaler"):
                return None  # a step that changes the feature space (e.g. PCA)
    if hasattr(final, "feature_importances_"):
        values = np.asarray(final.feature_importances_, dtype=np.float64)
    elif hasattr(final, "coef_"):
        coef = np.asarray(final.coef_, dtype=np.float64)
        values = np.abs(coef.reshape(-1, coef.shape[-1])).mean(axis=0)
    else:
        return None
    if values.shape != (n_features,):
        return None
    total = values.sum()
    return values / total if total > 0 else values


def _run_split(decoder: Any, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
               classes: tuple[str, ...], seed: int, layout: Mapping[str, int] | None = None,
               grid: list | None = None, inner: list | None = None) -> dict[str, Any]:
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    estimator = make_decoder(decoder, seed=seed) if isinstance(decoder, str) else clone(decoder)
    estimator = _configure(estimator, layout or {})
    best_params: dict[str, Any] = {}
    # one BLAS thread per fit: parallelism is across splits (n_jobs); on these small matrices threaded BLAS
    # was up to 10x slower than one thread when another process shared the cores
    with threadpool_limits(limits=1):
        if grid:
            from sklearn.model_selection import GridSearchCV

            search = GridSearchCV(estimator, grid, cv=inner, scoring="accuracy", n_jobs=1, refit=True,
                                  error_score="raise")
            search.fit(X[train], y[train])
            best_params = dict(search.best_params_)
            estimator = search.best_estimator_
        else:
            estimator.fit(X[train], y[train])
        predicted = np.asarray(estimator.predict(X[test])).astype(str)
        scores, method = class_scores(estimator, X[test], classes)
    return {"estimator": estimator, "predicted": predicted, "scores": scores, "method": method,
            "importances": _importances(estimator, X.shape[1]), "best_params": best_params}


def _decoder_name(decoder: Any) -> str:
    if isinstance(decoder, str):
        make_decoder(decoder)  # fail early with a did-you-mean message
        return decoder
    if hasattr(decoder, "fit") and hasattr(decoder, "predict"):
        return type(decoder).__name__
    raise TypeError(f"decoder must be a decoder name or a scikit-learn classifier, got {type(decoder).__name__}")


def _check_n_jobs(n_jobs: object) -> int:
    """``n_jobs`` as an int; any non-zero integer is allowed (joblib's convention: -1 is all cores)."""
    n_jobs = check_int("n_jobs", n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs=0 is out of range (allowed: a non-zero integer; -1: all cores)")
    return n_jobs


def _fit_splits(table: FeatureTable, decoder: Any, decoder_name: str, y: np.ndarray,
                splits: Sequence[tuple[np.ndarray, np.ndarray]], classes: tuple[str, ...], seed: int, n_jobs: int,
                grid: list | None, inner: Sequence[list | None]) -> list[dict[str, Any]]:
    """Fit every split (in parallel over splits, one progress bar) and predict its test side, in split order."""
    from joblib import Parallel, delayed

    from virtual_lab.progress import progress_bar

    X = np.asarray(table.X, dtype=np.float64)
    layout = _table_layout(table)
    outputs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_run_split)(decoder, X, y, train, test, classes, _decoder_seed(seed, index), layout, grid,
                            inner[index])
        for index, (train, test) in enumerate(splits))
    return list(progress_bar(outputs, total=len(splits), desc=f"decoding ({decoder_name})", unit="splits"))
