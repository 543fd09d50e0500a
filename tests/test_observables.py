"""Observables (known values for every statistic) and the feature table."""

from __future__ import annotations

import dataclasses
import logging
import math
import subprocess
import sys

import numpy as np
import pytest

from virtual_lab.analysis.observables import (
    ADMISSIBLE_OBSERVABLES, ALL_OBSERVABLES, FEATURE_NAME_DTYPE, FeatureTable, Observable, build_feature_table,
    compute_observables, compute_statistics, select,
)
from virtual_lab.rig import Recording, observe
from virtual_lab.testing import mock_ground_truth


def _recording(rule="sgdm", seed=0, **kwargs) -> Recording:
    return Recording.from_ground_truth(mock_ground_truth(rule=rule, seed=seed, **kwargs))


def _hand_recording(weights, activations, change) -> Recording:
    """One layer "fc1", one checkpoint, with the given (out, in) weights, (S, U) outputs and (S,) g_b."""
    weights, activations, change = (np.asarray(a, dtype=np.float32) for a in (weights, activations, change))
    n_out, n_in = weights.shape
    gt = mock_ground_truth(layer_sizes=(n_in, n_out), n_checkpoints=1, n_stimuli=activations.shape[0],
                           image_shape=(1, n_in))
    gt = dataclasses.replace(gt, weights={"fc1": weights[None]}, activations={"fc1": activations[None]},
                             activity_change={"fc1": change[None]})
    return Recording.from_ground_truth(gt)


def _value(values, name):
    return values[:, [obs.name for obs in ALL_OBSERVABLES].index(name)]


# -- statistics: known values ------------------------------------------------------------------------
X = np.array([1.0, 2.0, 3.0, 4.0, 10.0])


@pytest.mark.parametrize("statistic, expected", [
    ("norm", math.sqrt(130.0)),
    ("mean", 4.0),
    ("median", 3.0),
    ("thirdquartile", 4.0),                      # nearest rank: position round(0.75 * 4) = 3
    ("var", 10.0),                               # (9 + 4 + 1 + 0 + 36) / 5
    ("skew", 3.0 * (4.0 - 3.0) / math.sqrt(10.0)),
    ("kurtosis", (81 + 16 + 1 + 0 + 1296) / 5 / 100.0),  # E[(x-4)^4] / var^2 = 278.8 / 100
])
def test_statistic_known_values(statistic, expected):
    assert compute_statistics(X, [statistic])[statistic] == pytest.approx(expected, rel=1e-12)


def test_statistics_even_length_and_rounding_match_numpy():
    even = np.array([4.0, 1.0, 3.0, 2.0])
    stats = compute_statistics(even, ["median", "thirdquartile"])
    assert stats["median"] == 2.5  # average of the two middle values, like np.median
    assert stats["thirdquartile"] == 3.0  # position 2.25 -> 2
    rng = np.random.default_rng(0)
    for n in range(1, 12):
        x = rng.normal(size=(3, n))
        stats = compute_statistics(x, ["median", "thirdquartile"])
        np.testing.assert_array_equal(stats["median"], np.median(x, axis=-1))
        np.testing.assert_array_equal(stats["thirdquartile"], np.percentile(x, 75, axis=-1, method="nearest"))


def test_statistics_vectorized_match_reference():
    x = np.random.default_rng(1).gamma(2.0, size=(4, 6, 33))
    stats = compute_statistics(x)
    mean, median, std = x.mean(-1), np.median(x, -1), x.std(-1)
    np.testing.assert_allclose(stats["norm"], np.linalg.norm(x, axis=-1))
    np.testing.assert_allclose(stats["var"], x.var(-1))
    np.testing.assert_allclose(stats["skew"], 3 * (mean - median) / std)
    np.testing.assert_allclose(stats["kurtosis"], ((x - mean[..., None]) ** 4).mean(-1) / std ** 4)


def test_constant_vector_has_zero_skew_and_kurtosis():
    for value in (0.0, 0.1, 7.3):
        stats = compute_statistics(np.full((2, 7), value))
        assert np.all(stats["skew"] == 0) and np.all(stats["kurtosis"] == 0) and np.all(stats["var"] == 0)
        assert np.allclose(stats["mean"], value) and np.allclose(stats["median"], value)


def test_nan_propagates_into_every_statistic():
    stats = compute_statistics(np.array([1.0, np.nan, 3.0]))
    assert all(np.isnan(v) for v in stats.values())


def test_only_requested_statistics_are_computed():
    assert set(compute_statistics(X, ["mean", "norm"])) == {"mean", "norm"}
    with pytest.raises(ValueError, match="did you mean 'median'"):
        compute_statistics(X, ["medain"])


# -- measures and functions ------------------------------------------------------------------------
WEIGHTS = [[-2.0, 1.0, 0.0, 3.0], [-1.0, 4.0, -3.0, 2.0]]


def test_weight_functions_on_negative_values():
    rec = _hand_recording(WEIGHTS, [[0.0, 1.0], [1.0, 0.0]], [0.0, 0.0])
    values = compute_observables(rec)["fc1"]
    assert values.shape == (1, 45) and values.dtype == np.float64
    expected = {
        "weightraw_mean": 0.5, "weightsq_mean": 5.5, "weightabs_mean": 2.0,
        "weightraw_median": 0.5, "weightsq_median": 4.0, "weightabs_median": 2.0,
        "weightraw_norm": math.sqrt(44.0), "weightsq_norm": math.sqrt(452.0), "weightabs_norm": math.sqrt(44.0),
        "weightraw_thirdquartile": 2.0, "weightsq_thirdquartile": 9.0, "weightabs_thirdquartile": 3.0,
        "weightraw_var": 44 / 8 - 0.25, "weightabs_var": 44 / 8 - 4.0,
    }
    for name, value in expected.items():
        assert _value(values, name)[0] == pytest.approx(value), name


def test_act_statistics_are_per_stimulus_then_averaged():
    acts = [[0.0, 0.0, 6.0], [1.0, 2.0, 3.0]]
    rec = _hand_recording(np.ones((3, 2)), acts, [0.0, 0.0])
    values = compute_observables(rec)["fc1"]
    # median per stimulus 0 and 2 -> 1 (pooling all six values would give 1.5)
    assert _value(values, "actraw_median")[0] == pytest.approx(1.0)
    assert _value(values, "actraw_norm")[0] == pytest.approx((6.0 + math.sqrt(14.0)) / 2)  # pooled: sqrt(50)
    assert _value(values, "actraw_skew")[0] == pytest.approx((3 * 2 / math.sqrt(8.0) + 0.0) / 2)
    assert _value(values, "actsq_mean")[0] == pytest.approx((36 / 3 + 14 / 3) / 2)
    assert _value(values, "actraw_thirdquartile")[0] == pytest.approx((6.0 + 3.0) / 2)


def test_gradavg_id_is_function_averaged_over_stimuli():
    rec = _hand_recording(np.ones((2, 2)), [[0.0, 1.0], [1.0, 0.0]], [-1.0, 3.0])
    values = compute_observables(rec)["fc1"]
    assert _value(values, "gradavgraw_id")[0] == pytest.approx(1.0)
    assert _value(values, "gradavgsq_id")[0] == pytest.approx(5.0)
    assert _value(values, "gradavgabs_id")[0] == pytest.approx(2.0)


def _reference_observables(rec: Recording, layer: str) -> np.ndarray:
    """Slow, obvious implementation with np.median / np.percentile and a loop over stimuli."""
    functions = {"raw": lambda x: x, "sq": np.square, "abs": np.abs}

    def stat(x, s):
        mean, median, var = x.mean(), np.median(x), x.var()
        return {"norm": np.linalg.norm(x), "mean": mean, "median": median,
                "thirdquartile": np.percentile(x, 75, method="nearest"), "var": var,
                "skew": 3 * (mean - median) / np.sqrt(var) if var > 0 else 0.0,
                "kurtosis": ((x - mean) ** 4).mean() / var ** 2 if var > 0 else 0.0}[s]

    w = rec.weights(layer).astype(np.float64)
    a = rec.activations(layer).astype(np.float64)
    g = rec.activity_change(layer).astype(np.float64)
    out = np.empty((rec.n_checkpoints, len(ALL_OBSERVABLES)))
    for t in range(rec.n_checkpoints):
        for k, obs in enumerate(ALL_OBSERVABLES):
            f = functions[obs.function]
            if obs.measure == "weight":
                out[t, k] = stat(f(w[t]), obs.statistic)
            elif obs.measure == "act":
                out[t, k] = np.mean([stat(f(a[t, s]), obs.statistic) for s in range(a.shape[1])])
            else:
                out[t, k] = f(g[t]).mean()
    return out


@pytest.mark.parametrize("noise_sd", [0.0, 0.05])  # without noise ReLU outputs are >= 0 (shared sort path)
def test_compute_observables_matches_slow_reference_on_observed_recording(noise_sd):
    gt = mock_ground_truth(seed=3, layer_sizes=(16, 9, 6), n_stimuli=7)
    rec = observe(gt, unit_fraction=0.7, synapse_fraction=0.5, noise_sd=noise_sd, n_checkpoints=3, seed=1)
    values = compute_observables(rec)
    for layer in rec.layer_names:
        np.testing.assert_allclose(values[layer], _reference_observables(rec, layer), rtol=1e-9, atol=1e-12)


def test_subset_of_observables_in_requested_order():
    rec = _recording()
    chosen = [Observable("act", "abs", "kurtosis"), "weightraw_mean", Observable("gradavg", "sq", "id")]
    full = compute_observables(rec)
    part = compute_observables(rec, chosen)
    names = [obs.name for obs in ALL_OBSERVABLES]
    for layer in rec.layer_names:
        np.testing.assert_array_equal(
            part[layer], full[layer][:, [names.index("actabs_kurtosis"), names.index("weightraw_mean"),
                                         names.index("gradavgsq_id")]])


def test_each_observable_alone_matches_the_full_computation():
    rec = observe(mock_ground_truth(seed=4), noise_sd=0.1, seed=0)  # noisy: act has both signs
    full = compute_observables(rec)
    for k, obs in enumerate(ALL_OBSERVABLES):
        alone = compute_observables(rec, [obs])
        for layer in rec.layer_names:
            np.testing.assert_allclose(alone[layer][:, 0], full[layer][:, k], rtol=1e-12, err_msg=obs.name)


# -- observable lists --------------------------------------------------------------------------------
def test_observable_counts_and_names():
    assert len(ALL_OBSERVABLES) == 45 and len(set(ALL_OBSERVABLES)) == 45
    assert len(ADMISSIBLE_OBSERVABLES) == 24
    assert [o.name for o in ADMISSIBLE_OBSERVABLES] == [
        "weightabs_mean", "weightabs_median", "weightabs_norm", "weightabs_thirdquartile", "weightabs_var",
        "weightraw_mean", "weightraw_median", "weightraw_norm", "weightraw_thirdquartile", "weightraw_var",
        "weightsq_mean", "weightsq_median", "weightsq_thirdquartile",
        "actabs_mean", "actabs_median", "actabs_norm", "actabs_thirdquartile",
        "actraw_mean", "actraw_median", "actraw_norm", "actraw_thirdquartile",
        "gradavgabs_id", "gradavgraw_id", "gradavgsq_id",
    ]
    names = [o.name for o in ALL_OBSERVABLES]
    assert names[:8] == ["weightraw_norm", "weightraw_mean", "weightraw_median", "weightraw_thirdquartile",
                         "weightraw_var", "weightraw_skew", "weightraw_kurtosis", "weightsq_norm"]
    assert names[21] == "actraw_norm" and names[-3:] == ["gradavgraw_id", "gradavgsq_id", "gradavgabs_id"]
    assert set(ADMISSIBLE_OBSERVABLES) <= set(ALL_OBSERVABLES)


def test_observable_validation_and_lookup():
    assert Observable.from_name("actraw_norm") == Observable("act", "raw", "norm")
    with pytest.raises(ValueError, match="did you mean 'weightabs_mean'"):
        Observable.from_name("weightabs_maen")
    with pytest.raises(ValueError, match="statistic"):
        Observable("gradavg", "raw", "mean")
    with pytest.raises(ValueError, match="did you mean 'act'"):
        Observable("actt", "raw", "mean")


# -- feature table -----------------------------------------------------------------------------------
def test_feature_table_shape_names_and_depth():
    recs = [_recording(rule=rule, seed=seed, n_checkpoints=4) for rule in ("sgdm", "fa") for seed in (0, 1)]
    table = build_feature_table(recs)
    n_t, n_obs = 4, 24
    assert table.X.shape == (4 * 3, n_obs * n_t + 3) and table.X.dtype == np.float64
    assert table.feature_names.dtype == FEATURE_NAME_DTYPE
    names = table.feature_names
    assert list(names["timepoint"][:n_obs]) == [0] * n_obs and list(names["timepoint"][n_obs:2 * n_obs]) == [1] * n_obs
    assert list(names["measure"][-3:]) == ["depth"] * 3 and list(names["statistic"][-3:]) == ["early", "middle", "deep"]
    assert list(names["timepoint"][-3:]) == [-1] * 3
    assert table.feature_labels[0] == "weightabs_mean_t00" and table.feature_labels[-1] == "depth_deep"
    assert table.observables == ADMISSIBLE_OBSERVABLES and table.n_timepoints == n_t
    onehot = {"early": [1, 0, 0], "middle": [0, 1, 0], "deep": [0, 0, 1]}
    for row, position in zip(table.X[:, -3:], table.depth_position):
        assert row.tolist() == onehot[position]
    assert table.layer[:3].tolist() == ["fc1", "fc2", "fc3"]
    assert table.depth_position[:3].tolist() == ["early", "middle", "deep"]
    assert table.rule.tolist() == ["sgdm"] * 6 + ["fa"] * 6
    assert table.network_id.tolist()[:3] == [recs[0].run_id] * 3
    assert table.metadata[0]["rule"] == "sgdm" and table.metadata[0] is not recs[0].metadata
    assert table.metadata_column("seed").tolist() == [0, 0, 0, 1, 1, 1] * 2


def test_feature_table_is_timepoint_major():
    rec = _recording(n_checkpoints=3)
    table = build_feature_table([rec])
    values = compute_observables(rec, ADMISSIBLE_OBSERVABLES)
    for i, layer in enumerate(rec.layer_names):
        for t in range(3):
            for k in range(24):
                assert table.X[i, t * 24 + k] == values[layer][t, k]
    seq = table.as_sequence()
    assert seq.shape == (3, 3, 27)
    np.testing.assert_array_equal(seq[:, :, :24], np.stack([values[layer] for layer in rec.layer_names]))
    np.testing.assert_array_equal(seq[:, 1, 24:], table.X[:, -3:])


def test_paper_default_feature_count():
    table = build_feature_table([_recording(n_checkpoints=21, n_stimuli=4)])
    assert table.n_features == 507 and table.as_sequence().shape == (3, 21, 27)


def test_diverged_and_nonfinite_examples_are_dropped(caplog):
    good = _recording(seed=0)
    gt = mock_ground_truth(seed=1)
    diverged = Recording.from_ground_truth(dataclasses.replace(gt, metadata={**gt.metadata, "diverged": True}))
    gt = mock_ground_truth(seed=2)
    bad_weights = dict(gt.weights)
    bad_weights["fc2"] = bad_weights["fc2"].copy()
    bad_weights["fc2"][3, 0, 0] = np.nan
    nan_layer = Recording.from_ground_truth(dataclasses.replace(gt, weights=bad_weights))
    with caplog.at_level(logging.WARNING, logger="virtual_lab.analysis.observables"):
        table = build_feature_table([good, diverged, nan_layer])
    assert table.n_examples == 3 + 2
    assert diverged.run_id not in set(table.network_id.tolist())
    assert (nan_layer.run_id, "fc2") not in set(zip(table.network_id.tolist(), table.layer.tolist()))
    assert np.isfinite(table.X).all()
    assert "1 diverged" in caplog.text and "1 example(s) with non-finite" in caplog.text


def test_feature_table_errors():
    with pytest.raises(ValueError, match="same number of checkpoints"):
        build_feature_table([_recording(n_checkpoints=3), _recording(seed=1, n_checkpoints=4)])
    with pytest.raises(ValueError, match="at least one recording"):
        build_feature_table([])
    with pytest.raises(TypeError, match="Recording.from_ground_truth"):
        build_feature_table([mock_ground_truth()])


def test_subset_and_select():
    table = build_feature_table([_recording(seed=s) for s in range(3)])
    sub = table.subset(table.layer == "fc2")
    assert isinstance(sub, FeatureTable) and sub.n_examples == 3 and set(sub.layer.tolist()) == {"fc2"}
    np.testing.assert_array_equal(sub.X, table.X[table.layer == "fc2"])
    picked = select(table, [0, 4])
    assert picked.network_id.tolist() == [table.network_id[0], table.network_id[4]]
    assert picked.metadata[1] is table.metadata[4]
    with pytest.raises(ValueError, match="shape"):
        table.subset(np.ones(2, dtype=bool))


def test_analysis_imports_stay_light():
    code = ("import sys, virtual_lab.analysis, virtual_lab.analysis.observables, virtual_lab.analysis.decoders;"
            "bad = [m for m in ('torch', 'sklearn', 'pynwb') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_layer_without_units_has_undefined_statistics():
    from virtual_lab.analysis.observables import compute_observables
    from virtual_lab.rig import Recording
    from virtual_lab.testing import mock_ground_truth

    rec = Recording.from_ground_truth(mock_ground_truth())
    empty = rec.with_(unit_indices={**rec.unit_indices, "fc2": np.arange(0)})
    values = compute_observables(empty, ["actraw_mean", "actsq_median", "weightraw_mean"])
    assert np.isnan(values["fc2"][:, :2]).all() and np.isfinite(values["fc2"][:, 2]).all()
    assert np.isfinite(values["fc1"]).all()
