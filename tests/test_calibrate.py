"""``virtual-lab calibrate``: pilot NWB files written here with pynwb (as another lab's tools would write them),
whose ground truth the test sets, are read back into a rig preset within stated tolerances."""

from __future__ import annotations

import datetime as dt
import math

import h5py
import numpy as np
import pytest

from virtual_lab.rig.calibrate import calibrate, cascade_noise_level, split_half_reliability, write_calibrated_preset
from virtual_lab.rig.presets import load_preset
from virtual_lab.sessions.pilot import UnusablePilot, read_pilot

START = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
DAYS = (0.0, 2.0, 7.0)
RATE_HZ = 30.0
#: median |x(t+1) - x(t)| of iid Gaussian frames of SD s is sqrt(2) * 0.6745 * s (0.6745: the normal's 75th
#: percentile), so CASCADE's nu = 100 * median / sqrt(rate) has this expected value per unit of s.
NU_PER_SD = 100 * math.sqrt(2) * 0.67449 / math.sqrt(RATE_HZ)


def _nwbfile(day: float, subject: str, identifier: str):
    from pynwb import NWBFile
    from pynwb.file import Subject

    nwbfile = NWBFile(session_description="pilot session", identifier=identifier,
                      session_start_time=START + dt.timedelta(days=day), session_id=identifier)
    nwbfile.subject = Subject(subject_id=subject, species="Mus musculus", sex="F", age="P90D")
    return nwbfile


def _write(nwbfile, path) -> None:
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)


def write_2p(path, *, n_rois: int, noise_sd: float, day: float = 0.0, subject: str = "m1", n_frames: int = 3000,
             seed: int = 0, stimuli: tuple[int, int] | None = None, response_sd: float = 0.0,
             slow_amplitude: float = 0.5, indicator: str = "GCaMP6f (Ai148)", container: str = "DfOverF",
             timestamps: bool = False) -> None:
    """A two-photon pilot session: dF/F = slow drift + Gaussian frame noise of SD ``noise_sd`` (+ a response of
    SD ``response_sd`` per (ROI, stimulus) during the trials of ``stimuli = (n_stimuli, n_repeats)``)."""
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    rng = np.random.default_rng(seed)
    nwbfile = _nwbfile(day, subject, f"{subject}-2p-{day:g}")
    device = nwbfile.create_device(name="Microscope", description="resonant two-photon microscope")
    plane = nwbfile.create_imaging_plane(
        name="ImagingPlane", optical_channel=OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0),
        device=device, excitation_lambda=920.0, imaging_rate=RATE_HZ, indicator=indicator, location="V1",
        description="layer 2/3")
    module = nwbfile.create_processing_module(name="ophys", description="processed two-photon data")
    segmentation = ImageSegmentation(name="ImageSegmentation")
    module.add(segmentation)
    rois = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="suite2p ROIs",
                                                  imaging_plane=plane)
    for k in range(n_rois):
        rois.add_roi(pixel_mask=[(k % 32, k // 32, 1.0)])
    t = np.arange(n_frames) / RATE_HZ
    phase = rng.uniform(0, 2 * np.pi, n_rois)
    dff = slow_amplitude * np.sin(2 * np.pi * t[:, None] / 30.0 + phase) + rng.normal(0, noise_sd, (n_frames, n_rois))
    if stimuli is not None:
        n_stimuli, n_repeats = stimuli
        order = np.tile(np.arange(n_stimuli), n_repeats)
        rng.shuffle(order)
        mu = rng.normal(0, response_sd, (n_stimuli, n_rois))
        nwbfile.add_trial_column(name="stimulus_index", description="index of the image shown")
        for i, stimulus in enumerate(order):
            start = 1.0 + 2.0 * i
            dff[(t >= start) & (t < start + 1.0)] += mu[stimulus]
            nwbfile.add_trial(start_time=start, stop_time=start + 1.0, stimulus_index=int(stimulus))
    region = rois.create_roi_table_region(region=list(range(n_rois)), description="all ROIs")
    holder = DfOverF(name="DfOverF") if container == "DfOverF" else Fluorescence(name="Fluorescence")
    module.add(holder)
    values = dff if container == "DfOverF" else 500.0 * (1.0 + dff)  # raw F, baseline 500
    timing = {"timestamps": t} if timestamps else {"rate": RATE_HZ}
    holder.add_roi_response_series(RoiResponseSeries(name="RoiResponseSeries", data=values.astype(np.float32),
                                                     rois=region, unit="n.a.", **timing))
    _write(nwbfile, path)


def write_units(path, *, rates_hz: dict[int, float], day: float = 0.0, subject: str = "m2", duration_s: float = 300.0,
                seed: int = 0, snr: float | None = 7.0, stimuli: tuple[int, int, float] | None = None,
                obs_intervals: bool = True) -> None:
    """An ecephys pilot session: Poisson spike trains of the given rates, units numbered by a tracked id; with
    ``stimuli = (n_stimuli, n_repeats, driven_hz)``, 0.5 s image presentations (Allen-style
    ``intervals/image_presentations``) during which unit u fires ``driven_hz`` more for image ``u % n_stimuli``."""
    from pynwb.epoch import TimeIntervals

    rng = np.random.default_rng(seed)
    nwbfile = _nwbfile(day, subject, f"{subject}-np-{day:g}")
    extra_spikes: dict[int, np.ndarray] = {}
    if stimuli is not None:
        n_stimuli, n_repeats, driven = stimuli
        order = np.tile(np.arange(n_stimuli), n_repeats)
        rng.shuffle(order)
        table = TimeIntervals(name="image_presentations", description="flashed images")
        table.add_column(name="image_index", description="index of the image")
        for i, image in enumerate(order):
            table.add_row(start_time=1.0 + 2.0 * i, stop_time=1.5 + 2.0 * i, image_index=int(image))
        nwbfile.add_time_intervals(table)
        for unit_id in rates_hz:
            starts = 1.0 + 2.0 * np.flatnonzero(order == unit_id % n_stimuli)
            n = rng.poisson(driven * 0.5, len(starts))
            extra_spikes[unit_id] = np.repeat(starts, n) + rng.uniform(0, 0.5, int(n.sum()))
    device = nwbfile.create_device(name="Neuropixels", description="Neuropixels 1.0")
    group = nwbfile.create_electrode_group(name="shank0", description="probe", location="V1", device=device)
    for _ in range(8):
        nwbfile.add_electrode(group=group, location="V1")
    if snr is not None:
        nwbfile.add_unit_column(name="snr", description="peak / noise SD")
    for unit_id, rate in rates_hz.items():
        times = np.sort(np.concatenate([rng.uniform(0, duration_s, rng.poisson(rate * duration_s)),
                                        extra_spikes.get(unit_id, np.zeros(0))]))
        extra = {} if snr is None else {"snr": float(snr * np.exp(rng.normal(0, 0.3)))}
        if obs_intervals:
            extra["obs_intervals"] = [[0.0, duration_s]]
        nwbfile.add_unit(spike_times=times, id=int(unit_id), **extra)
    _write(nwbfile, path)


# -- two-photon: ROI count, sessions, noise level -----------------------------------------------------------------
@pytest.mark.parametrize("noise_sd", [0.03, 0.08, 0.2])
def test_two_photon_roi_count_sessions_and_cascade_noise_level(tmp_path, noise_sd):
    # Tolerance 3% of nu: the sample median of |diff| over 3000 frames x 40 ROIs has a relative SD of about
    # 1.17 / sqrt(120000) = 0.3% (consecutive differences share a frame, which adds a little); the slow drift
    # adds at most 0.5 * 2 pi / 30 s / 30 Hz = 0.0035 per frame to each difference, a bias of < 0.4% at the
    # smallest noise (0.03 * sqrt(2) = 0.042 per difference). 3% is ~10x both.
    paths = []
    for k, day in enumerate(DAYS):
        paths.append(tmp_path / f"ses-{k}.nwb")
        write_2p(paths[-1], n_rois=40, noise_sd=noise_sd, day=day, seed=k)
    result = calibrate(paths)
    values = result.values
    expected = NU_PER_SD * noise_sd
    assert values["calcium.noise_level"].value == pytest.approx(expected, rel=0.03)
    assert values["calcium.noise_level"].origin == "measured"
    assert values["units.n_units"].value == 40 and values["checkpoints.n_checkpoints"].value == 3
    assert values["calcium.frame_rate_hz"].value == pytest.approx(RATE_HZ)
    assert values["calcium.indicator"].value == "GCaMP6f" and result.base == "2p-gcamp6f"
    assert result.measured["session_spacing_days"].value == [2.0, 5.0]
    # no trials: the response window stays the published one and says why
    assert values["calcium.response_window_s"].origin == "published"
    assert "no trials" in values["calcium.response_window_s"].method
    # ids 0..n-1 in every file say nothing about which ROI is which across days
    assert values["tracking.found_probability"].origin == "published"
    assert "--id-column" in values["tracking.found_probability"].method


def test_cascade_noise_level_matches_the_gaussian_expectation_and_fluorescence_is_converted(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.normal(0, 0.1, (200_000, 3))
    assert cascade_noise_level(frames, RATE_HZ) == pytest.approx(NU_PER_SD * 0.1, rel=0.01)
    # raw Fluorescence F = 500 (1 + noise): calibrate divides by F0 = its 10th percentile, 500 (1 - 1.2816 s),
    # so nu is that of noise of SD s / (1 - 1.2816 s); tolerance 3% as for dF/F (below)
    s = 0.08
    write_2p(tmp_path / "f.nwb", n_rois=20, noise_sd=s, slow_amplitude=0.0, container="Fluorescence",
             timestamps=True)
    assert read_pilot(tmp_path / "f.nwb").roi_series[0].rate_source == "timestamps"
    result = calibrate([tmp_path / "f.nwb"])
    assert result.values["calcium.frame_rate_hz"].value == pytest.approx(RATE_HZ)
    value = result.values["calcium.noise_level"]
    assert value.value == pytest.approx(NU_PER_SD * s / (1 - 1.2816 * s), rel=0.03)
    assert "10th percentile" in value.method


def test_trials_give_response_window_and_reliability(tmp_path):
    # responses of SD a = 0.02 per (ROI, stimulus) over 30 frames of frame noise s = 0.08: trial means have noise
    # SD b = s / sqrt(30) = 0.0146; with 8 repeats the reliability of the mean is a^2 / (a^2 + b^2 / 8) = 0.95,
    # and split-half estimates over 12 stimuli scatter by ~0.05 per ROI (median over 30 ROIs: < 0.02)
    for k in range(2):
        write_2p(tmp_path / f"t{k}.nwb", n_rois=30, noise_sd=0.08, day=k, stimuli=(12, 8), response_sd=0.02,
                 slow_amplitude=0.0, n_frames=6000, seed=10 + k)
    result = calibrate(sorted(tmp_path.glob("t*.nwb")))
    assert result.values["calcium.response_window_s"].value == pytest.approx(1.0)
    reliability = result.measured["response_reliability"].value
    assert 0.85 < reliability < 1.0
    assert "intervals/trials[stimulus_index]" in result.measured["response_reliability"].source


def test_split_half_reliability_known_values():
    rng = np.random.default_rng(2)
    stimulus = np.tile(np.arange(40), 10)
    signal = rng.normal(0, 1, (40, 200))
    noisy = signal[stimulus] + rng.normal(0, 2, (400, 200))  # reliability 1 / (1 + 4 / 10) = 0.714
    assert np.median(split_half_reliability(noisy, stimulus)) == pytest.approx(1 / 1.4, abs=0.05)
    assert np.isnan(split_half_reliability(noisy[:20], stimulus[:20] % 2)).all()  # 2 stimuli: not enough


# -- units: rates, dropout, SNR ------------------------------------------------------------------------------------
def test_units_rates_and_dropout_across_sessions(tmp_path):
    rng = np.random.default_rng(5)
    rates = dict(enumerate(np.exp(rng.normal(np.log(4.0), 0.8, 150))))
    kept = [sorted(rates)]
    for _ in DAYS[1:]:  # each unit of the first session is found again with probability 0.8
        kept.append([u for u in rates if rng.random() < 0.8])
    for k, (day, ids) in enumerate(zip(DAYS, kept)):
        newcomers = {1000 + 10 * k + j: 2.0 for j in range(5 if k else 0)}  # later sessions: units never seen before
        write_units(tmp_path / f"np-{k}.nwb", rates_hz={**{u: rates[u] for u in ids}, **newcomers}, day=day, seed=k)
    result = calibrate(sorted(tmp_path.glob("np-*.nwb")), id_column="id")
    values, measured = result.values, result.measured
    assert result.modality == "ecephys" and result.base == "neuropixels-chronic"
    assert values["units.n_units"].value == int(np.median([len(ids) + (5 if k else 0) for k, ids in enumerate(kept)]))
    assert values["checkpoints.n_checkpoints"].value == 3
    realized = np.mean([len(ids) / 150 for ids in kept[1:]])
    assert values["tracking.found_probability"].value == pytest.approx(realized, abs=1e-4)
    assert abs(values["tracking.found_probability"].value - 0.8) < 0.1  # 4 binomial SDs of a mean of 2 x 150
    every = len(set(kept[1]) & set(kept[2])) / 150
    assert measured["fraction_present_all_sessions"].value == pytest.approx(every, abs=1e-4)
    # rates: each estimate is a Poisson count over 300 s (relative SD 1 / sqrt(r * 300), ~3% at 4 Hz); the
    # median over units of those estimates is within 5% of the median of the true rates of each session
    truth = np.median([np.median([rates[u] for u in ids] + [2.0] * (5 if k else 0)) for k, ids in enumerate(kept)])
    assert measured["firing_rate_median_hz"].value == pytest.approx(truth, rel=0.05)
    assert measured["firing_rate_log_sd"].value == pytest.approx(0.8, abs=0.15)
    assert values["sorting.snr_median"].value == pytest.approx(7.0, rel=0.1)
    # no trials: driven rates keep the published numbers and say so
    assert values["spiking.max_rate_median_hz"].origin == "published"
    assert "stimulus column" in values["spiking.max_rate_median_hz"].method


def test_presented_stimuli_give_driven_and_baseline_rates(tmp_path):
    # 60 units at 1 Hz, +10 Hz during the 0.5 s presentations of their preferred image (5 images x 10 repeats):
    # the highest mean rate over images is 11 Hz (55 spikes per unit: 13% per unit, ~2% for the median over 60)
    # and the rate outside the 25 s of presentations is 1 Hz (275 s: 6% per unit); tolerance 10% for both
    # no obs_intervals: observed time = the span of all spikes (~300 s)
    write_units(tmp_path / "np.nwb", rates_hz={u: 1.0 for u in range(60)}, stimuli=(5, 10, 10.0), snr=None,
                obs_intervals=False)
    values = calibrate([tmp_path / "np.nwb"], base="neuropixels-acute").values
    assert values["spiking.max_rate_median_hz"].value == pytest.approx(11.0, rel=0.1)
    assert "intervals/image_presentations[image_index]" in values["spiking.max_rate_median_hz"].source
    assert values["spiking.baseline_rate_hz"].value == pytest.approx(1.0, rel=0.1)
    assert "span of all spike times" in values["spiking.baseline_rate_hz"].method
    assert values["spiking.window_s"].value == pytest.approx(0.5)
    assert values["sorting.snr_median"].origin == "published" and "tracking.found_probability" not in {
        k for k, v in values.items() if v.origin == "measured"}
    write_2p(tmp_path / "2p.nwb", n_rois=5, noise_sd=0.05, n_frames=300)
    with pytest.raises(ValueError, match="mix ophys and ecephys recordings; .* --modality"):
        calibrate([tmp_path / "np.nwb", tmp_path / "2p.nwb"])
    assert calibrate([tmp_path / "np.nwb", tmp_path / "2p.nwb"], modality="ophys").unusable == (
        f"{(tmp_path / 'np.nwb').resolve()}: no ophys data (it holds ecephys)",)
    with pytest.raises(ValueError, match="base preset '2p-gcamp6s' does not fit ecephys"):
        calibrate([tmp_path / "np.nwb"], base="2p-gcamp6s")


# -- files that cannot be used -------------------------------------------------------------------------------------
def test_files_without_data_damaged_or_newer_are_unusable_without_crashing(tmp_path):
    empty = tmp_path / "behaviour-only.nwb"
    _write(_nwbfile(0.0, "m3", "beh"), empty)
    with pytest.raises(UnusablePilot, match="no ophys data .* and no ecephys data"):
        read_pilot(empty)
    garbage = tmp_path / "garbage.nwb"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    newer = tmp_path / "newer.nwb"
    write_2p(newer, n_rois=5, noise_sd=0.05, n_frames=300)
    with h5py.File(newer, "r+") as f:
        f.attrs["nwb_version"] = "9.1.0"
    plain = tmp_path / "plain.nwb"
    with h5py.File(plain, "w") as f:
        f["x"] = np.arange(3)
    good = tmp_path / "good.nwb"
    write_2p(good, n_rois=7, noise_sd=0.05, n_frames=600)
    result = calibrate([empty, garbage, newer, plain, good])
    assert result.pilot_files == (str(good.resolve()),) and result.values["units.n_units"].value == 7
    lines = dict(line.split(": ", 1) for line in result.unusable)
    assert len(lines) == 4 and all("\n" not in line for line in result.unusable)
    assert "nothing to calibrate from" in lines[str(empty)]
    assert "not an HDF5 file" in lines[str(garbage)]
    assert "NWB schema 9.1.0, newer than" in lines[str(newer)]
    assert "not an NWB file" in lines[str(plain)]
    with pytest.raises(ValueError, match="no usable pilot recording among the 2 file"):
        calibrate([empty, garbage])


# -- the preset file, the command line, and power --rig my-rig.toml ------------------------------------------------
def test_cli_writes_a_preset_that_loads_with_its_provenance(tmp_path, capsys):
    from virtual_lab.cli import main

    for k, day in enumerate(DAYS[:2]):
        write_2p(tmp_path / f"ses-{k}.nwb", n_rois=12, noise_sd=0.08, day=day, seed=k, n_frames=900)
    _write(_nwbfile(0.0, "m1", "beh"), tmp_path / "behaviour.nwb")
    out = tmp_path / "rigs" / "my-rig.toml"
    assert main(["calibrate", str(tmp_path / "ses-0.nwb"), str(tmp_path / "ses-1.nwb"), str(tmp_path / "behaviour.nwb"),
                 "--output", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"-> {out}" in printed.out and "unusable" in printed.err and "behaviour.nwb" in printed.err
    preset = load_preset(out)
    assert preset.with_params({"noise_sd": 0.1}).provenance == preset.provenance
    assert preset.name == "my-rig" and preset.stages["calcium"]["noise_level"] == pytest.approx(
        NU_PER_SD * 0.08, rel=0.05)
    provenance = preset.provenance
    assert provenance["pilot_files"] == [str((tmp_path / f"ses-{k}.nwb").resolve()) for k in range(2)]
    entry = provenance["values"]["calcium.noise_level"]
    assert entry["origin"] == "measured" and entry["source"] == "processing/ophys/DfOverF/RoiResponseSeries"
    assert "CASCADE" in entry["method"] and len(entry["files"]) == 2
    assert provenance["values"]["calcium.neuropil_r_mean"]["origin"] == "published"
    text = out.read_text()
    assert "noise_level = " in text and "# measured: CASCADE noise level" in text
    assert "# published: published value of 2p-gcamp6f: mean true neuropil coefficient" in text
    assert len(provenance["sessions"]) == 2 and provenance["sessions"][0]["n_cells"] == 12
    assert not list(out.parent.glob(".*tmp*"))
    # bad input: one line, exit status 2, nothing written
    assert main(["calibrate", str(tmp_path / "behaviour.nwb"), "--output", str(tmp_path / "none.toml")]) == 2
    assert "no usable pilot recording" in capsys.readouterr().err and not (tmp_path / "none.toml").exists()
    assert main(["calibrate", str(tmp_path / "missing.nwb"), "--output", str(tmp_path / "none.toml")]) == 2
    assert main(["calibrate", str(tmp_path / "ses-0.nwb"), "--output", str(tmp_path / "x.json")]) == 2
    assert "must be a .toml file" in capsys.readouterr().err


def test_power_with_a_calibrated_rig_names_the_pilot_files(tmp_path, capsys):
    from test_power import synthetic_ground_truth

    from virtual_lab.cli import main
    from virtual_lab.sessions import session_path, write_session

    for k, day in enumerate(DAYS[:2]):
        write_2p(tmp_path / f"pilot-{k}.nwb", n_rois=10, noise_sd=0.05, day=day, seed=k, n_frames=600)
    rig = tmp_path / "my-rig.toml"
    assert main(["calibrate", str(tmp_path / "pilot-0.nwb"), str(tmp_path / "pilot-1.nwb"), "--output", str(rig),
                 "-q"]) == 0
    root = tmp_path / "sessions"
    for rule in "ab":
        for i in range(3):
            gt = synthetic_ground_truth(rule, i, layer_sizes=(16, 8, 4), n_checkpoints=4, n_stimuli=6)
            write_session(gt, session_path(root, gt.run_id, "groundtruth"), protocol_name="synthetic")
    out = tmp_path / "power"
    args = ["power", str(root), "--rig", str(rig), "--units", "4,8", "--noise", "0", "--sessions", "2",
            "--layers", "fc1", "--observables", "admissible", "--splits", "2", "--rig-seeds", "1",
            "--decoder", "logistic", "--jobs", "1", "--no-pairs", "--animals", "1,2", "-q", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    report = (out / "power_report.md").read_text()
    assert "calibrated from pilot recordings pilot-0.nwb, pilot-1.nwb" in report
    assert "pilot-0.nwb" in (out / "power_report.html").read_text()
    missing = ["--rig", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "none")]
    assert main(args[:2] + missing + args[4:-2]) == 2
    assert "rig preset file" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_the_calcium_rig_draws_frames_at_the_noise_level_calibrate_measures():
    # a calibrated preset carries nu measured as CASCADE defines it; the rig must draw frames at that nu
    from virtual_lab.rig.calcium import INDICATORS, CalciumStep

    step = CalciumStep(indicator="GCaMP6s", **INDICATORS["GCaMP6s"], ca_rest_nm=50.0, window_s=0.5,
                       frame_rate_hz=RATE_HZ, response_window_s=1.0, noise_level=2.0, neuropil_r_mean=0.7,
                       neuropil_r_sd=0.15, neuropil_r_subtract=0.7, seed=0)
    frames = np.random.default_rng(0).normal(0, step.frame_noise_sd, (100_000, 1))
    assert cascade_noise_level(frames, RATE_HZ)[0] == pytest.approx(2.0, rel=0.03)
