"""`virtual-lab identify`: the decoder's verdict on a recording exported by `record --rig 2p-gcamp6s`, the
out-of-distribution report first for one far outside the training population, and one line (exit 2) for a
recording that lacks what the model needs."""

import datetime as dt
import json

import h5py
import numpy as np
import pytest

from virtual_lab.testing import mock_ground_truth

pytest.importorskip("skops")
pynwb = pytest.importorskip("pynwb")

RIG = "2p-gcamp6s"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two rules x three networks; a logistic decoder saved through rig 2p-gcamp6s; the sessions recorded
    through the same rig."""
    from virtual_lab.cli import main
    from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, session_path, write_session

    root = tmp_path_factory.mktemp("identify")
    sessions = root / "sessions"
    for r, rule in enumerate(("sgdm", "adam")):
        for k in range(3):
            gt = mock_ground_truth(rule=rule, seed=10 * r + k, run_id=f"m{r}x{k}", n_checkpoints=9)
            write_session(gt, session_path(sessions, gt.run_id, GROUND_TRUTH_SESSION_ID), protocol_name="mock")
    model = root / "model.skops"
    assert main(["decode", str(sessions), "--rig", RIG, "--decoder", "logistic", "--n-splits", "2", "--jobs", "1",
                 "--no-behaviour", "-q", "--output-dir", str(root / "decode"), "--save", str(model)]) == 0
    assert main(["record", str(sessions), "--rig", RIG, "--out", str(root / "rec"), "-q"]) == 0
    return {"root": root, "sessions": sessions, "model": model,
            "recording": {run: root / "rec" / f"sub-{run}" / f"sub-{run}_ses-{RIG}.nwb" for run in ("m0x0", "m1x1")}}


def _identify(capsys, *args):
    from virtual_lab.cli import main

    code = main(["identify", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _missing(capsys, *args):
    code, out, err = _identify(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("virtual-lab: error: "), err
    return lines[0]


def test_identify_gives_the_decoders_verdict(lab, tmp_path, capsys):
    from virtual_lab.analysis.identify import read_trial_responses, recording_features
    from virtual_lab.analysis.saved_model import load_model
    from virtual_lab.analysis.session_tables import rig_observables, tables_from_sessions

    code, out, err = _identify(capsys, *lab["recording"].values(), "--model", lab["model"], "--output-dir", tmp_path)
    assert code == 0, err
    report = json.loads((tmp_path / "identify.json").read_text())
    model = load_model(lab["model"])
    kept = rig_observables(str(lab["sessions"]), [RIG])[RIG][0]
    table = tables_from_sessions(str(lab["sessions"]), [RIG], {RIG: kept})[0][RIG]
    for run, result in zip(lab["recording"], report["recordings"]):
        rows = table.X[table.network_id == run]
        [recording] = read_trial_responses([str(lab["recording"][run])], "dff")
        features, notes = recording_features(model, recording)
        np.testing.assert_allclose(features.X, rows, rtol=1e-12, atol=1e-12)  # what decode saw of this network
        assert notes == [] and features.depth_position.tolist() == ["early", "middle", "deep"]
        expected = model.posterior(rows)
        assert result["subject"] == run and result["verdict"] == max(expected, key=expected.get)
        assert result["posterior"] == pytest.approx(expected, abs=1e-12)
        assert result["out_of_distribution"]["in_distribution"] and result["n_sessions"] == 7
    for block in out.split("\n\n")[1:]:
        lines = block.splitlines()
        assert lines[1].startswith("within the simulated range: score ")
        assert lines[2].startswith("posterior over rules: ") and lines[3].startswith("verdict: ")
    assert out.startswith(f"model: logistic decoder, rig {RIG}, 7 sessions x 8 observables")


def test_a_recording_far_outside_the_training_population_is_reported_first(lab, tmp_path, capsys):
    scaled = tmp_path / "scaled.nwb"
    scaled.write_bytes(lab["recording"]["m0x0"].read_bytes())
    with h5py.File(scaled, "r+") as f:  # dF/F in units a thousand times too large
        for name in f["processing/ophys/DfOverF"]:
            data = f[f"processing/ophys/DfOverF/{name}/data"]
            data[...] = data[...] * 1e3
    code, out, err = _identify(capsys, scaled, "--model", lab["model"], "--output-dir", tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("m0x0: "))
    assert lines[first + 1].startswith("OUT OF DISTRIBUTION: the recording's observables lie outside the simulated")
    assert not any(line.startswith("verdict:") for line in lines)
    assert lines[first + 3].startswith("most probable (out of distribution): ")
    [result] = json.loads((tmp_path / "identify.json").read_text())["recordings"]
    ood = result["out_of_distribution"]
    assert not ood["in_distribution"] and ood["score"] > 10 * ood["threshold"] and ood["percentile_of_held_out"] == 100


def _edited(source, target, edit):
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as f:
        edit(f)
    return target


def test_a_recording_without_what_the_model_needs_is_refused(lab, tmp_path, capsys):
    from virtual_lab.cli import main

    source = lab["recording"]["m0x0"]
    no_trials = _edited(source, tmp_path / "no-trials.nwb", lambda f: f.__delitem__("intervals/trials"))
    assert "no-trials.nwb: no trials table" in _missing(capsys, no_trials, "--model", lab["model"])

    def distinct(f):  # every presentation a different stimulus: nothing repeated across sessions
        column = f["intervals/trials/stimulus_index"]
        column[...] = np.arange(column.shape[0])

    unrepeated = _edited(source, tmp_path / "unrepeated.nwb", distinct)
    assert "no stimulus is presented in every one of its 7 sessions" in _missing(capsys, unrepeated, "--model",
                                                                                  lab["model"])
    session = lab["sessions"] / "sub-m0x0" / "sub-m0x0_ses-groundtruth.nwb"
    for n, message in ((1, "one session only"), (4, "4 sessions, but the model was trained on 7")):
        assert main(["record", str(session), "--rig", RIG, "--set", f"n_checkpoints={n}", "--out",
                     str(tmp_path / f"n{n}"), "-q"]) == 0
        capsys.readouterr()
        [recorded] = (tmp_path / f"n{n}").rglob("*.nwb")
        assert message in _missing(capsys, recorded, "--model", lab["model"])
    assert "no recorded activity" in _missing(capsys, session, "--model", lab["model"])  # a ground-truth session
    assert main(["record", str(session), "--rig", "neuropixels-chronic", "--out", str(tmp_path / "np"), "-q"]) == 0
    capsys.readouterr()
    [spikes] = (tmp_path / "np").rglob("*.nwb")  # units, no imaging: not what a two-photon model was trained on
    assert "no dF/F (no RoiResponseSeries" in _missing(capsys, spikes, "--model", lab["model"])


def test_a_model_of_weights_cannot_be_asked_about_a_recording(lab):
    import dataclasses

    from virtual_lab.analysis.identify import MissingForModel, activity_kind
    from virtual_lab.analysis.saved_model import load_model

    model = load_model(lab["model"])
    assert activity_kind(model) == "dff"
    weights = dataclasses.replace(model, metadata={**model.metadata, "observables": ["weightabs_mean", "actraw_mean"]})
    with pytest.raises(MissingForModel, match=r"no recording file carries \(weightabs_mean; rig 2p-gcamp6s"):
        activity_kind(weights)


def _write_ophys(path, responses, subject, day, rate_hz=10.0):
    """A foreign-style session file: frame-by-frame dF/F (one ImagingPlane without depth), trials with a
    ``stimulus`` column, one file per session. ``responses``: (n_trials, n_rois) response of each trial."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject
    from pynwb.ophys import DfOverF, ImageSegmentation, OpticalChannel, RoiResponseSeries

    n_trials, n_rois = responses.shape
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=day)
    nwb = NWBFile(session_description="mock", identifier=f"{subject}-{day}", session_start_time=start,
                  subject=Subject(subject_id=subject, species="Mus musculus", sex="U", age="P90D"))
    device = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(name="plane", optical_channel=OpticalChannel(name="g", description="g",
                                                                                  emission_lambda=510.0),
                                     device=device, excitation_lambda=920.0, imaging_rate=rate_hz,
                                     indicator="GCaMP6s", location="V1", description="plane")
    segmentation = ImageSegmentation()
    rois = segmentation.create_plane_segmentation(name="cells", description="rois", imaging_plane=plane)
    for k in range(n_rois):
        rois.add_roi(pixel_mask=[(k, 0, 1.0)])
    frames = np.repeat(responses, int(rate_hz), axis=0)  # each trial: 1 s of frames at its response
    module = nwb.create_processing_module(name="ophys", description="ophys")
    module.add(segmentation)
    dff = DfOverF()
    module.add(dff)
    dff.add_roi_response_series(RoiResponseSeries(
        name="dff", data=frames, rois=rois.create_roi_table_region(region=list(range(n_rois)), description="all"),
        unit="n.a.", rate=rate_hz, starting_time=0.0))
    nwb.add_trial_column(name="stimulus", description="image shown")
    for t in range(n_trials):
        nwb.add_trial(start_time=float(t), stop_time=t + 0.5, stimulus=f"img{t % 4}")
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_sessions_of_one_subject_in_separate_files(lab, tmp_path, capsys):
    rng = np.random.default_rng(0)
    files = [_write_ophys(tmp_path / f"day{d}.nwb", rng.gamma(2.0, 0.05, size=(8, 6)), "mouse1", d)
             for d in (3, 0, 1, 2, 4, 5, 6)]  # given out of order: sorted by session start
    code, out, err = _identify(capsys, *files, "--model", lab["model"], "--output-dir", tmp_path)
    assert code == 0, err
    [result] = json.loads((tmp_path / "identify.json").read_text())["recordings"]
    assert result["subject"] == "mouse1" and result["n_sessions"] == 7 and result["n_stimuli"] == 4
    assert result["files"] == [str(f.resolve()) for f in sorted(files, key=lambda f: int(f.stem[3:]))]
    assert "depth unknown, class scores averaged over early, middle, deep" in out
    assert sum(result["posterior"].values()) == pytest.approx(1.0)
    assert "one session only" in _missing(capsys, files[0], "--model", lab["model"])
