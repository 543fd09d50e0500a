"""Defining behaviour of the rig's modality models: spiking, sorting, calcium, tracking, synapses."""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from virtual_lab.rig import (INDICATORS, Recording, apply_preset, calcium_imaging, calcium_kernel, em_snapshot,
                             keep_checkpoints, keep_units, load_preset, sort_spikes, spike_counts, spine_imaging,
                             track_units)
from virtual_lab.rig.calcium import kernel_peak_time
from virtual_lab.testing import mock_ground_truth


def constant_ground_truth(value=1.0, n_units=50, n_stimuli=200, n_checkpoints=4):
    gt = mock_ground_truth(layer_sizes=(16, n_units), n_checkpoints=n_checkpoints, n_stimuli=n_stimuli)
    act = np.full((n_checkpoints, n_stimuli, n_units), value, dtype=np.float32)
    return dataclasses.replace(gt, activations={"fc1": act})


@pytest.fixture(scope="module")
def gt():
    return mock_ground_truth(layer_sizes=(16, 40, 30, 4), n_checkpoints=8, n_stimuli=30)


def test_poisson_counts_have_mean_equal_variance_at_the_requested_rate():
    rec = spike_counts(Recording.from_ground_truth(constant_ground_truth()), max_rate_median_hz=20.0,
                       max_rate_log_sd=0.0, baseline_rate_hz=0.5, gain=1.0, window_s=0.5, seed=3)
    counts = rec.activations("fc1").ravel().astype(np.float64)
    # constant activation, zero spread: every unit fires at 0.5 + 19.5 * (1 - e^-1) Hz (layer SD 0 -> scale 1)
    expected = (0.5 + 19.5 * (1 - np.exp(-1.0))) * 0.5
    n = counts.size
    assert abs(counts.mean() - expected) < 4 * np.sqrt(expected / n)
    assert abs(counts.var() / counts.mean() - 1.0) < 4 * np.sqrt(2 / n)  # Fano factor of a Poisson count
    assert rec.measures == ("act",) and rec.activity_kind == "spike_count"


def test_gamma_counts_keep_the_rate_and_are_more_regular():
    rec = spike_counts(Recording.from_ground_truth(constant_ground_truth()), max_rate_median_hz=40.0,
                       max_rate_log_sd=0.0, baseline_rate_hz=40.0, window_s=1.0, process="gamma", gamma_shape=2, seed=1)
    counts = rec.activations("fc1").ravel().astype(np.float64)
    assert abs(counts.mean() - 40.0) < 4 * np.sqrt(40.0 / counts.size)
    assert 0.45 < counts.var() / counts.mean() < 0.6  # Fano -> 1/k for a gamma renewal process of shape k


def test_max_rates_are_log_normal_across_units():
    rec = spike_counts(Recording.from_ground_truth(constant_ground_truth(n_units=2000, n_stimuli=2, n_checkpoints=1)),
                       max_rate_median_hz=20.0, max_rate_log_sd=0.8, seed=5)
    rates = rec.activity_steps[-1].max_rates(2000, 0)
    assert stats.kstest((np.log(rates) - np.log(20.0)) / 0.8, "norm").pvalue > 1e-3


def test_sorting_merges_add_the_neighbours_spikes_and_low_snr_units_are_lost(gt):
    spikes = spike_counts(Recording.from_ground_truth(gt), seed=2)
    merged = sort_spikes(spikes, snr_median=100.0, contamination=0.0, merge_probability=1.0, split_probability=0.0,
                         seed=4)
    raw = spikes.activations("fc2")
    np.testing.assert_array_equal(merged.activations("fc2"), raw + np.roll(raw, -1, axis=2))
    lost = sort_spikes(spikes, snr_median=1.0, snr_log_sd=0.0, snr_half_recall=5.0, merge_probability=0.0,
                       split_probability=0.0, seed=4)
    assert lost.n_units("fc1") < 0.1 * 40
    with pytest.raises(ValueError, match="needs spike counts"):
        sort_spikes(Recording.from_ground_truth(gt))


def test_calcium_kernel_rise_and_decay_match_the_preset():
    preset = load_preset("2p-gcamp6s")
    rec = apply_preset(mock_ground_truth(n_checkpoints=8), preset, seed=0)
    step = rec.activity_steps[-1]
    assert step.indicator == preset.stages["calcium"]["indicator"] == "GCaMP6s"
    assert (step.tau_rise_s, step.tau_decay_s) == (INDICATORS["GCaMP6s"]["tau_rise_s"], INDICATORS["GCaMP6s"]["tau_decay_s"])
    t = np.arange(0, 3.0, 0.001)
    k = calcium_kernel(t, step.tau_rise_s, step.tau_decay_s)
    assert abs(t[np.argmax(k)] - kernel_peak_time(step.tau_rise_s, step.tau_decay_s)) <= 0.001
    tail = t > 1.0  # decay constant from the log-slope of the tail
    decay = -1.0 / np.polyfit(t[tail], np.log(k[tail]), 1)[0]
    assert abs(decay - step.tau_decay_s) < 0.005
    peak_norm = np.exp(-kernel_peak_time(step.tau_rise_s, step.tau_decay_s) / step.tau_decay_s) - \
        np.exp(-kernel_peak_time(step.tau_rise_s, step.tau_decay_s) / step.tau_rise_s)
    early = (t > 0.005) & (t < 0.15)
    residual = np.exp(-t[early] / step.tau_decay_s) - k[early] * peak_norm  # = exp(-t / tau_rise)
    rise = -1.0 / np.polyfit(t[early], np.log(residual), 1)[0]
    assert abs(rise - step.tau_rise_s) < 0.002
    # single-AP amplitude and saturation
    trace = step.trace(np.array([0.0]), t)
    assert abs(trace.max() - INDICATORS["GCaMP6s"]["dff_1ap"]) < 1e-3
    max_dff = 1.0 / step._hill(step.ca_rest_nm) - 1.0
    assert step.response(np.array([200]))[0] < 0.8 * 200 * step.response(np.array([1]))[0]  # saturating
    assert step.response(np.array([5000]))[0] < max_dff


def test_calcium_shot_noise_has_the_cascade_scale():
    rec = spike_counts(Recording.from_ground_truth(constant_ground_truth(value=-1.0, n_units=100, n_stimuli=400)),
                       baseline_rate_hz=0.0, seed=0)
    for_noise = calcium_imaging(rec, indicator="GCaMP6f", noise_level=3.0, neuropil_r_sd=0.0, seed=1)
    dff = for_noise.activations("fc1").ravel()  # no spikes: pure shot noise at rest
    step = for_noise.activity_steps[-1]
    # CASCADE: nu = 100 * median|dF/F[t+1] - dF/F[t]| / sqrt(fps) in %/sqrt(s); white frame noise of SD s has
    # median|difference| = sqrt(2) * 0.6745 * s, so s = nu * sqrt(fps) / 95.39 (dF/F units, not percent)
    frame_sd = 3.0 * np.sqrt(30.0) / 95.39
    expected_sd = frame_sd / np.sqrt(30)  # the mean of the 30 frames of a 1 s response window
    assert abs(dff.std() / expected_sd - 1) < 0.03 and abs(dff.mean()) < 4 * expected_sd / np.sqrt(dff.size)
    assert step.frame_noise_sd == pytest.approx(frame_sd)
    frames = np.random.default_rng(2).normal(0.0, step.frame_noise_sd, 200_000)
    assert 100 * np.median(np.abs(np.diff(frames))) / np.sqrt(30.0) == pytest.approx(3.0, rel=0.01)
    with pytest.raises(ValueError, match=r"indicator='GCaMP6x' is not available; did you mean 'GCaMP6s'"):
        calcium_imaging(rec, indicator="GCaMP6x")


def test_tracking_loses_the_requested_fraction_per_session():
    gt = constant_ground_truth(n_units=4000, n_stimuli=2, n_checkpoints=3)
    rec = Recording.from_ground_truth(gt)
    two = track_units(keep_checkpoints(rec, steps=[0, 100]), found_probability=0.7, seed=1)
    three = track_units(rec, found_probability=0.7, seed=1)
    for tracked, p in ((two, 0.7), (three, 0.49)):
        kept = tracked.n_units("fc1") / 4000
        assert abs(kept - p) < 4 * np.sqrt(p * (1 - p) / 4000)
    assert set(three.unit_indices["fc1"]) <= set(two.unit_indices["fc1"])  # same draws, one more session


def test_acute_tracking_resamples_units_each_session(gt):
    rec = track_units(Recording.from_ground_truth(gt), found_probability=1.0, swap_probability=1.0, seed=3)
    values, truth = rec.activations("fc1"), gt.activations["fc1"]
    np.testing.assert_array_equal(values[0], truth[0])  # the reference session is the true identity
    for t in range(1, gt.n_checkpoints):  # later sessions: a permutation of the layer's units
        columns = {tuple(c) for c in truth[t].T}
        assert all(tuple(c) in columns for c in values[t].T)
        assert not np.array_equal(values[t], truth[t])


def test_em_snapshot_is_one_timepoint_without_sign(gt):
    rec = em_snapshot(Recording.from_ground_truth(gt), recall=0.9, precision=0.8, size_log_sd=0.3, seed=2)
    assert rec.n_checkpoints == 1 and rec.checkpoint_steps.tolist() == [100] and rec.measures == ("weight",)
    sizes = rec.weights("fc2")
    n_true = len(rec.synapse_indices["fc2"])
    assert sizes.shape == (1, n_true + round(n_true * 0.2 / 0.8)) and (sizes >= 0).all()
    truth = gt.weights["fc2"][-1].ravel()[rec.synapse_indices["fc2"]]
    log_error = np.log(sizes[0, :n_true] / np.abs(truth))
    assert abs(log_error.std() - 0.3) < 0.05 and abs(log_error.mean()) < 0.05
    for measure in (rec.activations, rec.activity_change):
        with pytest.raises(ValueError, match="does not measure"):
            measure("fc1")


def test_spine_imaging_sees_positive_weights_at_every_session(gt):
    rec = spine_imaging(keep_checkpoints(Recording.from_ground_truth(gt), 4), dendrite_fraction=0.5,
                        spine_fraction=0.5, size_log_sd=0.2, seed=1)
    sizes, syn = rec.weights("fc1"), rec.synapse_indices["fc1"]
    truth = gt.weights["fc1"].reshape(8, -1)[rec.checkpoint_indices][:, syn]
    assert sizes.shape == truth.shape and (sizes[truth <= 0] == 0).all() and (sizes[truth > 0] > 0).all()


def test_modality_values_do_not_depend_on_slicing(gt):
    def chain(rec):
        return calcium_imaging(spike_counts(rec, seed=1), indicator="jGCaMP8m", seed=2)

    full = chain(Recording.from_ground_truth(gt))
    sliced_after = keep_units(keep_checkpoints(full, steps=[14, 71]), n_units=7, seed=5, layers=["fc1", "fc2"])
    sliced_before = chain(keep_units(keep_checkpoints(Recording.from_ground_truth(gt), steps=[14, 71]), n_units=7,
                                     seed=5, layers=["fc1", "fc2"]))
    for layer in gt.layer_names:
        np.testing.assert_array_equal(sliced_after.activations(layer), sliced_before.activations(layer))
    full_units = full.activations("fc1")
    np.testing.assert_array_equal(sliced_after.activations("fc1"),
                                  full_units[[1, 5]][:, :, sliced_after.unit_indices["fc1"]])


@pytest.mark.parametrize("name", ["neuropixels-acute", "neuropixels-chronic", "2p-gcamp6f", "em-snapshot",
                                  "spine-imaging", "paper-gaussian"])
def test_presets_are_deterministic(gt, name):
    a, b = apply_preset(gt, name, seed=9), apply_preset(gt, name, seed=9)
    c = apply_preset(gt, name, seed=10)
    assert a.provenance == b.provenance
    accessor = "activations" if "act" in a.measures else "weights"
    for layer in gt.layer_names:
        np.testing.assert_array_equal(getattr(a, accessor)(layer), getattr(b, accessor)(layer))
    assert any(not np.array_equal(getattr(a, accessor)(layer), getattr(c, accessor)(layer)) for layer in gt.layer_names)


def test_information_loss_report_degrades_with_each_random_stage(gt):
    from virtual_lab.analysis.information import information_loss

    rows = information_loss(gt, load_preset("paper-gaussian").with_params({"noise_sd": 3.0}), n_repeats=3, seed=1)
    assert [row["stage"] for row in rows] == ["checkpoints", "units", "synapses", "noise"]
    assert rows[0]["median_snr"] == np.inf  # even spacing is deterministic
    assert rows[-1]["median_snr"] < rows[-2]["median_snr"]
    with pytest.raises(ValueError, match="n_repeats=1 is out of range"):
        information_loss(gt, "paper-gaussian", n_repeats=1)
