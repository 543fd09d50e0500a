"""The paper's Conv1D MLP decoder: a 1-D convolution over timepoints, pooling, then an MLP (torch).

Nayebi et al. (2020) fed this decoder each example as a time series, shape (T, n_observables + 3): the
observables at each of T timepoints plus the layer's depth one-hot, repeated at every timepoint
(:meth:`virtual_lab.analysis.observables.FeatureTable.as_sequence`). :class:`Conv1DClassifier` takes the
flat rows of a feature table (timepoint-major, static features last) and reshapes them itself, so it
works inside a scikit-learn :class:`~sklearn.pipeline.Pipeline` and under ``clone`` / ``GridSearchCV``.

torch is imported only when the decoder is fitted. It computes in float64 (these models are tiny), so
predictions do not depend on how a test set is batched. Every random draw (initialization, minibatch order)
comes from a local :class:`torch.Generator` seeded by ``random_state``; the global torch RNG is never used.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["Conv1DClassifier", "POOLING"]

POOLING = ("max", "avg", "none")


class Conv1DClassifier(ClassifierMixin, BaseEstimator):
    """1-D convolution over time + pooling + one hidden layer, trained with Adam on cross-entropy.

    Each row of ``X`` holds ``n_timepoints * n_channels`` time-varying features, timepoint-major (feature
    ``t * n_channels + c``), followed by ``n_static`` features that do not change over time (e.g. the
    depth one-hot); the static features are repeated at every timepoint as extra input channels, as in
    the paper. Architecture: ``Conv1d(n_channels + n_static -> n_filters, kernel_size, stride)`` -> ReLU ->
    pooling over time (window ``pool_size``; ``"none"`` keeps every position) -> flatten ->
    ``Linear(hidden_size)`` -> ReLU -> ``Linear(n_classes)``.

    Parameters
    ----------
    n_timepoints : int or None, default=None
        Timepoints per example. None: every time-varying feature is its own timepoint (one channel).
        :func:`virtual_lab.analysis.evaluation.evaluate` sets it from the feature table.
    n_static : int or None, default=None
        Trailing static features (None: 0; ``evaluate`` sets 3 for the depth one-hot).
    n_filters : int, default=16
    kernel_size : int, default=3
        Clipped to the number of timepoints.
    stride : int, default=1
    pooling : {"max", "avg", "none"}, default="max"
    pool_size : int, default=2
        Clipped to the convolution's output length.
    hidden_size : int, default=64
    learning_rate : float, default=1e-2
    weight_decay : float, default=0.0
        L2 penalty (Adam's ``weight_decay``).
    batch_size : int, default=64
    n_epochs : int, default=60
    random_state : int or None, default=None
        Seed of initialization and minibatch order (None: 0).

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    n_features_in_ : int
    loss_curve_ : list of float
        Mean training loss of each epoch.

    Examples
    --------
    >>> X = np.r_[np.zeros((10, 6)), np.ones((10, 6))]
    >>> clf = Conv1DClassifier(n_timepoints=3, n_epochs=30, random_state=0).fit(X, [0] * 10 + [1] * 10)
    >>> clf.predict(X[[0, -1]]).tolist()
    [0, 1]
    """

    _parameter_constraints: dict = {
        "n_timepoints": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "n_static": [Interval(numbers.Integral, 0, None, closed="left"), None],
        "n_filters": [Interval(numbers.Integral, 1, None, closed="left")],
        "kernel_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "stride": [Interval(numbers.Integral, 1, None, closed="left")],
        "pooling": [StrOptions(set(POOLING))],
        "pool_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_timepoints: int | None = None, n_static: int | None = None, n_filters: int = 16,
                 kernel_size: int = 3, stride: int = 1, pooling: str = "max", pool_size: int = 2,
                 hidden_size: int = 64, learning_rate: float = 1e-2, weight_decay: float = 0.0,
                 batch_size: int = 64, n_epochs: int = 60, random_state: int | None = None):
        self.n_timepoints = n_timepoints
        self.n_static = n_static
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.pooling = pooling
        self.pool_size = pool_size
        self.hidden_size = hidden_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.random_state = random_state

    # -- layout ---------------------------------------------------------------------------------
    def _layout(self, n_features: int) -> tuple[int, int, int]:
        n_static = self.n_static or 0
        n_varying = n_features - n_static
        if n_varying < 1:
            raise ValueError(f"n_static={n_static} leaves no time-varying features out of {n_features}")
        n_t = self.n_timepoints or n_varying
        if n_varying % n_t:
            raise ValueError(f"{n_varying} time-varying features do not split into n_timepoints={n_t} "
                             f"timepoints (n_static={n_static})")
        return n_t, n_varying // n_t, n_static

    def _sequence(self, X: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n, channels, T) float64."""
        n_t, n_channels, n_static = self.layout_
        n = X.shape[0]
        series = X[:, : n_t * n_channels].reshape(n, n_t, n_channels)
        if n_static:
            static = np.broadcast_to(X[:, None, n_t * n_channels:], (n, n_t, n_static))
            series = np.concatenate([series, static], axis=2)
        return np.ascontiguousarray(series.transpose(0, 2, 1), dtype=np.float64)

    def _seed(self) -> int:
        if self.random_state is None:
            return 0
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(0, 2**31 - 1))
        return int(self.random_state) % 2**63

    # -- torch model ----------------------------------------------------------------------------
    @staticmethod
    def _one_thread():
        """Run torch on one thread inside the block (restored after): these tensors are tiny, and torch's
        thread pool made them ~30x slower on a shared 2-core machine."""
        import contextlib

        import torch

        @contextlib.contextmanager
        def block():
            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                yield
            finally:
                torch.set_num_threads(previous)

        return block()

    def _forward(self, params: dict, x):
        import torch.nn.functional as F

        h = F.relu(F.conv1d(x, params["conv_w"], params["conv_b"], stride=self.stride_))
        if self.pooling == "max":
            h = F.max_pool1d(h, self.pool_)
        elif self.pooling == "avg":
            h = F.avg_pool1d(h, self.pool_)
        h = F.relu(F.linear(h.flatten(1), params["w1"], params["b1"]))
        return F.linear(h, params["w2"], params["b2"])

    def fit(self, X: Any, y: Any) -> "Conv1DClassifier":
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,); returns self."""
        import torch

        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"Conv1DClassifier needs samples of at least 2 classes; got 1 class "
                             f"({self.classes_[0]!r})")
        self.layout_ = self._layout(X.shape[1])
        n_t, n_channels, n_static = self.layout_
        kernel = min(self.kernel_size, n_t)
        self.stride_ = self.stride
        n_conv = (n_t - kernel) // self.stride_ + 1
        self.pool_ = min(self.pool_size, n_conv) if self.pooling != "none" else 1
        n_pooled = n_conv // self.pool_ if self.pooling != "none" else n_conv
        n_in = n_channels + n_static
        generator = torch.Generator().manual_seed(self._seed())

        def uniform(shape, fan_in):
            bound = 1.0 / np.sqrt(fan_in)
            return ((torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound).requires_grad_()

        params = {
            "conv_w": uniform((self.n_filters, n_in, kernel), n_in * kernel),
            "conv_b": uniform((self.n_filters,), n_in * kernel),
            "w1": uniform((self.hidden_size, self.n_filters * n_pooled), self.n_filters * n_pooled),
            "b1": uniform((self.hidden_size,), self.n_filters * n_pooled),
            "w2": uniform((len(self.classes_), self.hidden_size), self.hidden_size),
            "b2": uniform((len(self.classes_),), self.hidden_size),
        }
        with self._one_thread():
            self._train(params, X, codes, generator)
        return self

    def _train(self, params: dict, X: np.ndarray, codes: np.ndarray, generator) -> None:
        import torch
        import torch.nn.functional as F

        optimizer = torch.optim.Adam(list(params.values()), lr=self.learning_rate, weight_decay=self.weight_decay)
        inputs = torch.from_numpy(self._sequence(X))
        targets = torch.from_numpy(codes.astype(np.int64))
        n = inputs.shape[0]
        batch = min(self.batch_size, n)
        self.loss_curve_ = []
        for _ in range(self.n_epochs):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, batch):
                index = order[start:start + batch]
                loss = F.cross_entropy(self._forward(params, inputs[index]), targets[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(index)
            self.loss_curve_.append(total / n)
        self.params_ = {name: value.detach().clone() for name, value in params.items()}

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        import torch

        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with torch.no_grad(), self._one_thread():
            logits = self._forward(self.params_, torch.from_numpy(self._sequence(X)))
            return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each sample, shape (n_samples,)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
