"""Decoders that name the learning rule from a feature table, by name.

Every decoder is a scikit-learn :class:`~sklearn.pipeline.Pipeline` whose last step is called
``"classifier"`` (so hyperparameter grids read ``"classifier__C"`` whatever the decoder), fits on string
labels, and uses one core (``n_jobs=1``) so that parallelism stays at the level of splits.

The paper's three decoders are here (linear SVM, random forest, and the Conv1D MLP over time of
:mod:`virtual_lab.analysis.conv1d`), plus logistic regression. :data:`PAPER_PARAM_GRIDS` holds the paper's
hyperparameter grids and :data:`SMALL_PARAM_GRIDS` a small everyday grid, both for nested model selection
(``evaluate(..., param_grid="paper")``).

scikit-learn is imported only when a decoder is made, so importing this module (e.g. for
:data:`DECODERS`) stays cheap.
"""

from __future__ import annotations

from typing import Any, Callable

from virtual_lab.validation import check_choice, check_int, did_you_mean

__all__ = ["DECODERS", "PAPER_PARAM_GRIDS", "SMALL_PARAM_GRIDS", "make_decoder", "resolve_param_grid"]


def _random_forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline([("classifier", RandomForestClassifier(n_estimators=300, n_jobs=1, random_state=seed))])


def _linear_svm(seed: int) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    # random_state only matters for probability=True; kept so that every decoder takes its seed.
    # "reduce" is a no-op step that the paper grid may replace by PCA.
    return Pipeline([("scale", StandardScaler()), ("reduce", "passthrough"),
                     ("classifier", SVC(kernel="linear", C=1.0, decision_function_shape="ovr", random_state=seed))])


def _logistic(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()),
                     ("classifier", LogisticRegression(C=1.0, max_iter=5_000, random_state=seed))])


def _conv1d(seed: int) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from virtual_lab.analysis.conv1d import Conv1DClassifier

    return Pipeline([("scale", StandardScaler()), ("classifier", Conv1DClassifier(random_state=seed))])


DECODERS: dict[str, Callable[[int], Any]] = {
    "random_forest": _random_forest,
    "linear_svm": _linear_svm,
    "logistic": _logistic,
    "conv1d": _conv1d,
}
"""Decoder name -> factory ``f(seed) -> unfitted Pipeline``.

- ``random_forest``: RandomForestClassifier, 300 trees, ``n_jobs=1``; has ``predict_proba``.
- ``linear_svm``: StandardScaler + ``SVC(kernel="linear", C=1)`` (libsvm: hinge loss, one-vs-one,
  ``decision_function`` in one-vs-rest shape). The paper's code used liblinear's ``LinearSVC``
  (squared hinge, one-vs-rest); on feature tables of this kind (n_examples ~ n_features = 507, strongly
  correlated columns) its dual solver needed thousands of iterations (~1 s per fit at 225 examples,
  minutes without converging at 1,800 pure-noise examples) where ``SVC`` took 0.01-0.25 s with signal
  present and about as long as primal ``LinearSVC`` without. Pass ``LinearSVC`` yourself to
  :func:`~virtual_lab.analysis.evaluation.evaluate` for the paper's exact loss. No ``predict_proba``
  (``probability=False``): evaluation combines layers through ``decision_function``.
- ``logistic``: StandardScaler + multinomial LogisticRegression (C=1); has ``predict_proba``.
- ``conv1d``: StandardScaler + :class:`~virtual_lab.analysis.conv1d.Conv1DClassifier` (the paper's Conv1D
  MLP over the timepoints of a feature table; torch, imported when fitted); has ``predict_proba``.
  :func:`~virtual_lab.analysis.evaluation.evaluate` tells it the table's layout (timepoints, static
  depth features).
"""

PAPER_PARAM_GRIDS: dict[str, list[dict[str, list]]] = {
    "random_forest": [{"classifier__max_features": ["sqrt", "log2", None],
                       "classifier__n_estimators": [20, 50, 100, 500, 1000]}],
    "linear_svm": [{"classifier__C": [1.0, 5e1, 5e2, 5e3, 5e4, 5e5, 5e6], "reduce": ["passthrough", "pca"]}],
    "logistic": [{"classifier__C": [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2]}],
    "conv1d": [{"classifier__learning_rate": [1e-3, 1e-2], "classifier__kernel_size": [2, 3, 5],
                "classifier__stride": [1, 2], "classifier__n_filters": [8, 16, 32],
                "classifier__pooling": ["max", "avg", "none"], "classifier__weight_decay": [0.0, 1e-4, 1e-3],
                "classifier__batch_size": [32, 128]}],
}
"""Hyperparameter grids of the paper's ``cls_cv_params.py`` in this package's step names, for
:class:`sklearn.model_selection.GridSearchCV`. The SVM grid includes the paper's optional PCA before the
SVM (``"pca"`` stands for ``PCA(n_components=0.95, svd_solver="full")``, resolved by
:func:`resolve_param_grid`). The C grid was the paper's for ``LinearSVC``; with the ``SVC`` used here, very
large C makes libsvm slow. The Conv1D grid spans the axes the paper searched (learning rate, kernel size,
stride, filters, pooling, weight decay, batch size); it has 648 points, so use it on a cluster, not a
laptop. The logistic-regression grid is this package's (the paper had no logistic decoder)."""

SMALL_PARAM_GRIDS: dict[str, list[dict[str, list]]] = {
    "random_forest": [{"classifier__max_features": ["sqrt", 0.2]}],
    "linear_svm": [{"classifier__C": [0.01, 1.0]}],
    "logistic": [{"classifier__C": [0.1, 1.0]}],
    "conv1d": [{"classifier__learning_rate": [3e-3, 1e-2]}],
}
"""Two-point grids for everyday nested model selection (about 2 x inner_splits extra fits per split)."""

GRID_NAMES = ("none", "small", "paper")


def _resolve_value(value: Any) -> Any:
    if isinstance(value, str) and value == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=0.95, svd_solver="full")
    return value


def resolve_param_grid(param_grid: Any, decoder: str | None) -> tuple[list[dict[str, list]] | None, str]:
    """A grid for :class:`~sklearn.model_selection.GridSearchCV` from a name or a user grid.

    Parameters
    ----------
    param_grid : {"none", "small", "paper"}, dict, list of dict or None
        A name looks up :data:`SMALL_PARAM_GRIDS` / :data:`PAPER_PARAM_GRIDS` for ``decoder``.
    decoder : str or None
        Decoder name (None for a user estimator, which needs an explicit grid).

    Returns
    -------
    grid : list of dict or None
        None when no model selection is asked for.
    name : str
        ``"none"``, ``"small"``, ``"paper"`` or ``"custom"``.
    """
    if param_grid is None or (isinstance(param_grid, str) and param_grid == "none"):
        return None, "none"
    if isinstance(param_grid, str):
        if param_grid not in GRID_NAMES:
            raise ValueError(f"param_grid={param_grid!r} is not available{did_you_mean(param_grid, GRID_NAMES)} "
                             f"(available: {', '.join(GRID_NAMES)}, a dict or a list of dicts)")
        if decoder is None:
            raise ValueError(f"param_grid={param_grid!r} names a grid of a built-in decoder; pass an explicit "
                             f"grid (dict of parameter -> values) for a custom estimator")
        table = SMALL_PARAM_GRIDS if param_grid == "small" else PAPER_PARAM_GRIDS
        grid = table[decoder]
        name = param_grid
    elif isinstance(param_grid, dict):
        grid, name = [param_grid], "custom"
    elif isinstance(param_grid, (list, tuple)) and all(isinstance(g, dict) for g in param_grid) and param_grid:
        grid, name = list(param_grid), "custom"
    else:
        raise TypeError(f"param_grid must be None, 'small', 'paper', a dict or a list of dicts, got "
                        f"{type(param_grid).__name__}")
    return [{key: [_resolve_value(v) for v in values] for key, values in g.items()} for g in grid], name


def make_decoder(name: str, seed: int = 0) -> Any:
    """An unfitted decoder.

    Parameters
    ----------
    name : {"random_forest", "linear_svm", "logistic", "conv1d"}
    seed : int, default=0
        ``random_state`` of the classifier (taken modulo 2**32, the range scikit-learn accepts).

    Returns
    -------
    sklearn.pipeline.Pipeline
        Final step named ``"classifier"``.

    Raises
    ------
    ValueError
        Unknown name (the message suggests the closest valid one).

    Examples
    --------
    >>> make_decoder("random_forest", seed=1)[-1].random_state
    1
    """
    check_choice("decoder", name, DECODERS)
    seed = check_int("seed", seed, low=0)
    return DECODERS[name](seed % 2**32)
