"""Decoders that name the learning rule from a feature table, by name.

Every decoder is a scikit-learn :class:`~sklearn.pipeline.Pipeline` whose last step is called
``"classifier"`` (so hyperparameter grids read ``"classifier__C"`` whatever the decoder), fits on string
labels, and uses one core (``n_jobs=1``) so that parallelism stays at the level of splits.

scikit-learn is imported only when a decoder is made, so importing this module (e.g. for
:data:`DECODERS`) stays cheap.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Callable

__all__ = ["DECODERS", "PAPER_PARAM_GRIDS", "make_decoder"]


def _random_forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline([("classifier", RandomForestClassifier(n_estimators=300, n_jobs=1, random_state=seed))])


def _linear_svm(seed: int) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    # random_state only matters for probability=True; kept so that every decoder takes its seed
    return Pipeline([("scale", StandardScaler()),
                     ("classifier", SVC(kernel="linear", C=1.0, decision_function_shape="ovr", random_state=seed))])


def _logistic(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()),
                     ("classifier", LogisticRegression(C=1.0, max_iter=5_000, random_state=seed))])


DECODERS: dict[str, Callable[[int], Any]] = {
    "random_forest": _random_forest,
    "linear_svm": _linear_svm,
    "logistic": _logistic,
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
"""

PAPER_PARAM_GRIDS: dict[str, list[dict[str, list]]] = {
    "random_forest": [{"classifier__max_features": ["sqrt", "log2", None],
                       "classifier__n_estimators": [20, 50, 100, 500, 1000]}],
    "linear_svm": [{"classifier__C": [1.0, 5e1, 5e2, 5e3, 5e4, 5e5, 5e6]}],
}
"""Hyperparameter grids of the paper's ``cls_cv_params.py`` in this package's step names, for
:class:`sklearn.model_selection.GridSearchCV` (the paper also tried PCA before the SVM; not included). The C
grid was the paper's for ``LinearSVC``; with the ``SVC`` used here, very large C makes libsvm slow."""


def make_decoder(name: str, seed: int = 0) -> Any:
    """An unfitted decoder.

    Parameters
    ----------
    name : {"random_forest", "linear_svm", "logistic"}
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
    if not isinstance(name, str) or name not in DECODERS:
        close = difflib.get_close_matches(str(name), list(DECODERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"The 'decoder' parameter must be one of {{{', '.join(map(repr, DECODERS))}}}. "
                         f"Got {name!r} instead.{hint}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return DECODERS[name](int(seed) % 2**32)
