"""Decoders: scikit-learn compatibility (estimator checks), the Conv1D MLP, grids and nested selection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from virtual_lab.analysis.conv1d import Conv1DClassifier
from virtual_lab.analysis.decoders import (DECODERS, PAPER_PARAM_GRIDS, SMALL_PARAM_GRIDS, make_decoder,
                                           resolve_param_grid)


# small and quick, yet able to pass check_classifiers_train (accuracy > 0.83 on blobs)
@parametrize_with_checks([Conv1DClassifier(n_filters=4, hidden_size=16, n_epochs=15, random_state=0)])
def test_conv1d_passes_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _sequences(n_per_class=30, n_t=6, n_channels=2, seed=0):
    """Class 1 rises over time in channel 0, class 0 falls; same time average (only the order differs)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, n_t)
    X, y = [], []
    for label, shape in ((0, -ramp), (1, ramp)):
        for _ in range(n_per_class):
            series = rng.normal(0, 0.3, (n_t, n_channels))
            series[:, 0] += shape
            X.append(np.concatenate([series.reshape(-1), [1.0, 0.0, 0.0]]))
            y.append(f"r{label}")
    return np.array(X), np.array(y)


def test_conv1d_reads_time_order_and_static_features():
    X, y = _sequences()
    clf = Conv1DClassifier(n_timepoints=6, n_static=3, n_epochs=40, random_state=1).fit(X, y)
    assert clf.layout_ == (6, 2, 3)
    assert clf.score(*_sequences(seed=5)) > 0.9
    proba = clf.predict_proba(X[:4])
    assert proba.shape == (4, 2) and np.allclose(proba.sum(axis=1), 1)
    # deterministic under the same random_state; the global torch RNG is untouched
    import torch

    state = torch.random.get_rng_state()
    again = Conv1DClassifier(n_timepoints=6, n_static=3, n_epochs=40, random_state=1).fit(X, y)
    assert torch.equal(state, torch.random.get_rng_state())
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("pooling", ["max", "avg", "none"])
def test_conv1d_pooling_options(pooling):
    X, y = _sequences(n_per_class=10)
    clf = Conv1DClassifier(n_timepoints=6, n_static=3, pooling=pooling, kernel_size=5, stride=2, n_epochs=5)
    assert clf.fit(X, y).predict(X).shape == (20,)


def test_conv1d_errors_are_clear():
    X, y = _sequences(n_per_class=5)
    with pytest.raises(ValueError, match="n_timepoints=5"):
        Conv1DClassifier(n_timepoints=5, n_static=3).fit(X, y)
    with pytest.raises(ValueError, match="pooling"):
        Conv1DClassifier(pooling="mean").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Conv1DClassifier(n_timepoints=6, n_static=3).fit(X[:5], y[:5])


def test_every_decoder_is_a_clonable_pipeline_with_a_classifier_step():
    assert set(DECODERS) == {"random_forest", "linear_svm", "logistic", "conv1d"}
    for name in DECODERS:
        decoder = make_decoder(name, seed=3)
        assert decoder.steps[-1][0] == "classifier"
        clone(decoder)
        assert set(PAPER_PARAM_GRIDS[name][0]) <= set(decoder.get_params())
        assert set(SMALL_PARAM_GRIDS[name][0]) <= set(decoder.get_params())


def test_param_grids_resolve():
    grid, name = resolve_param_grid("paper", "linear_svm")
    assert name == "paper" and grid[0]["classifier__C"][0] == 1.0
    assert type(grid[0]["reduce"][1]).__name__ == "PCA"
    assert resolve_param_grid(None, "logistic") == (None, "none")
    assert resolve_param_grid({"classifier__C": [1.0]}, None)[1] == "custom"
    with pytest.raises(ValueError, match=r"^param_grid='smal' is not available; did you mean 'small'\? "
                                         r"\(available: none, small, paper, a dict or a list of dicts\)$"):
        resolve_param_grid("smal", "logistic")
    with pytest.raises(ValueError, match="explicit grid"):
        resolve_param_grid("small", None)
