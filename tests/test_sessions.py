"""Tests of virtual_lab.sessions: NWB round trip, validators, neo, naming, determinism, atomic writes."""

import os

os.environ.setdefault("PYNWB_NO_CACHE_DIR", "1")

import dataclasses  # noqa: E402
import filecmp  # noqa: E402
import shutil  # noqa: E402
from datetime import timezone  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pynwb  # noqa: E402
import pytest  # noqa: E402

from virtual_lab import sessions  # noqa: E402
from virtual_lab.testing import mock_ground_truth  # noqa: E402

BAD_IMPORTANCE = {"ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION"}


@pytest.fixture(scope="module")
def ground_truth():
    gt = mock_ground_truth()
    metadata = dict(gt.metadata)
    metadata.update({
        "tricky_float": 0.1 + 0.2,
        "tiny_float": 1e-300,
        "whole_float": 2.0,
        "big_int": 2**62,
        "negative_int": -7,
        "flag_true": True,
        "empty_text": "",
        "text_like_number": "1.0",
        "text_like_bool": "True",
    })
    return dataclasses.replace(gt, metadata=metadata)


@pytest.fixture(scope="module")
def session_file(ground_truth, tmp_path_factory):
    root = tmp_path_factory.mktemp("recordings")
    path = sessions.session_path(root, ground_truth.run_id, sessions.GROUND_TRUTH_SESSION_ID)
    return sessions.write_session(ground_truth, path, protocol_name="quickstart",
                                  experimenter="Doe, Jane")


def assert_same_ground_truth(expected, actual):
    assert actual.layer_names == expected.layer_names
    assert actual.depth_positions == expected.depth_positions
    for name in ("checkpoint_steps", "train_loss", "test_accuracy", "probe_stimuli", "probe_labels"):
        want, got = np.asarray(getattr(expected, name)), getattr(actual, name)
        assert isinstance(got, np.ndarray), name
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    for table in ("activations", "weights", "activity_change"):
        assert list(getattr(actual, table)) == list(expected.layer_names)
        for layer in expected.layer_names:
            want, got = getattr(expected, table)[layer], getattr(actual, table)[layer]
            assert isinstance(got, np.ndarray) and got.dtype == np.float32
            assert got.shape == want.shape, (table, layer)
            np.testing.assert_array_equal(got, want, err_msg=f"{table}[{layer}]")
    assert list(actual.metadata) == list(expected.metadata)
    for key, value in expected.metadata.items():
        assert type(actual.metadata[key]) is type(value), key
        assert actual.metadata[key] == value, key


# ----------------------------------------------------------------------------------------------- naming


def test_sanitize_id_keeps_only_letters_digits_and_dashes():
    assert sessions.sanitize_id("run_01/sgdm lr.0.1") == "run-01-sgdm-lr-0-1"
    assert sessions.sanitize_id("__a__") == "a"
    assert sessions.sanitize_id("mock0sgdm") == "mock0sgdm"
    safe = sessions.sanitize_id("ü/x_y.z  w")
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in safe)
    assert sessions.sanitize_id(safe) == safe
    with pytest.raises(ValueError, match="no ASCII letters or digits"):
        sessions.sanitize_id("_/. ")


def test_session_path_follows_dandi_naming(tmp_path):
    path = sessions.session_path(tmp_path, "net_01", "ground.truth")
    assert path == tmp_path / "sub-net-01" / "sub-net-01_ses-ground-truth.nwb"


def test_written_file_ids_match_dandi_path(session_file, ground_truth):
    subject = session_file.parent.name.removeprefix("sub-")
    assert session_file.name == f"sub-{subject}_ses-{sessions.GROUND_TRUTH_SESSION_ID}.nwb"
    with pynwb.NWBHDF5IO(str(session_file), "r") as io:
        nwbfile = io.read()
        assert nwbfile.subject.subject_id == subject == sessions.sanitize_id(ground_truth.run_id)
        assert nwbfile.session_id == sessions.GROUND_TRUTH_SESSION_ID


# ----------------------------------------------------------------------------------------------- content


def test_round_trip_restores_every_array_and_metadata_type(session_file, ground_truth):
    assert_same_ground_truth(ground_truth, sessions.read_session(session_file))


def test_round_trip_vector_stimuli_and_unsafe_layer_names(tmp_path):
    gt = mock_ground_truth(layer_sizes=(16, 6, 3), n_checkpoints=3, n_stimuli=20)
    rename = {"fc1": "layer1.0/conv", "fc2": "head out"}
    gt = dataclasses.replace(
        gt,
        layer_names=tuple(rename[x] for x in gt.layer_names),
        activations={rename[k]: v for k, v in gt.activations.items()},
        weights={rename[k]: v for k, v in gt.weights.items()},
        activity_change={rename[k]: v for k, v in gt.activity_change.items()},
        probe_stimuli=gt.probe_stimuli.reshape(20, 16),
    )
    path = sessions.write_session(gt, tmp_path / "s.nwb")
    assert_same_ground_truth(gt, sessions.read_session(path))
    assert sessions.is_complete_session(path)


def test_round_trip_colour_stimuli_passes_the_inspector(tmp_path):
    gt = mock_ground_truth(layer_sizes=(48, 6, 3), n_checkpoints=3, n_stimuli=20, image_shape=(4, 4, 3))
    assert gt.probe_stimuli.shape == (20, 4, 4, 3)  # CIFAR-like, channels-last
    path = sessions.write_session(gt, tmp_path / "s.nwb")
    for engine in ("pynwb", "h5py"):
        assert_same_ground_truth(gt, sessions.read_session(path, engine=engine))
    assert not [m for m in sessions.inspect_sessions(path, config="dandi")
                if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")]


def test_layout_and_general_metadata(session_file, ground_truth):
    n_t, n_s = ground_truth.n_checkpoints, ground_truth.n_stimuli
    with pynwb.NWBHDF5IO(str(session_file), "r") as io:
        nwbfile = io.read()
        assert nwbfile.identifier == ground_truth.run_id
        assert nwbfile.session_start_time == sessions.SESSION_START_TIME
        assert nwbfile.session_start_time.tzinfo is not None
        assert nwbfile.session_start_time.utcoffset() == timezone.utc.utcoffset(None)
        assert nwbfile.protocol == "quickstart"
        assert "in silico" in nwbfile.session_description.lower()
        assert nwbfile.keywords is None  # neo crashes on keywords
        subject = nwbfile.subject
        assert subject.species == "http://purl.obolibrary.org/obo/NCBITaxon_32630"
        assert subject.sex == "O"
        assert subject.strain == ground_truth.metadata["architecture"]
        assert subject.date_of_birth == nwbfile.session_start_time
        assert "in silico" in subject.description.lower()
        assert "virtual probe" in nwbfile.devices
        for layer in ground_truth.layer_names:
            series = nwbfile.acquisition[f"activations_{layer}"]
            n_units = ground_truth.activations[layer].shape[2]
            assert series.data.shape == (n_t * n_s, n_units) and series.data.dtype == np.float32
            assert series.data.compression == "gzip" and series.data.compression_opts == 1
            assert series.data.chunks == (n_s, n_units)
            assert series.rate == sessions.CLOCK_RATE_HZ and series.starting_time == 0.0
        epochs = nwbfile.epochs
        assert len(epochs) == n_t
        assert epochs["tags"][3] == ["checkpoint_03"]
        np.testing.assert_array_equal(epochs["training_step"].data[:], ground_truth.checkpoint_steps)
        np.testing.assert_allclose(epochs["start_time"].data[:], np.arange(n_t) * n_s / 10)
        trials = nwbfile.trials
        assert len(trials) == n_t * n_s
        assert set(trials.colnames) >= {"checkpoint_index", "stimulus_index", "label"}
        assert trials["checkpoint_index"][n_s] == 1 and trials["stimulus_index"][n_s + 2] == 2
        probe = nwbfile.stimulus_template["probe_stimuli"]
        assert isinstance(probe, pynwb.image.ImageSeries) and probe.data.shape == ground_truth.probe_stimuli.shape
        network = nwbfile.processing["network"]
        assert set(network.data_interfaces) == {"layers", "units", "weights", "activity_change", "training"}
        assert network["weights"]["fc1"].data.shape == ground_truth.weights["fc1"].shape
        assert len(network["units"]) == sum(a.shape[2] for a in ground_truth.activations.values())
        assert "performance" in nwbfile.processing["behavior"].data_interfaces


# ----------------------------------------------------------------------------------------------- validators


@pytest.mark.parametrize("config", [None, "dandi"])
def test_nwbinspector_finds_no_critical_or_violation(session_file, config):
    messages = sessions.inspect_sessions(session_file, config=config)
    bad = [(m.importance.name, m.check_function_name, m.location, m.message) for m in messages
           if m.importance.name in BAD_IMPORTANCE]
    assert bad == []


def test_inspect_sessions_on_a_folder_skips_temporary_files(session_file):
    junk = session_file.parent / f".{session_file.name}.tmp"
    junk.write_bytes(b"half-written")
    try:
        messages = sessions.inspect_sessions(session_file.parent.parent)
    finally:
        junk.unlink()
    assert {m.file_path for m in messages} == {str(session_file)}
    assert not [m for m in messages if m.importance.name in BAD_IMPORTANCE]


def test_pynwb_validation_has_no_errors(session_file):
    assert sessions.validate_session(session_file) == []


def test_neo_reads_activations_and_epochs(session_file, ground_truth):
    n_t, n_s = ground_truth.n_checkpoints, ground_truth.n_stimuli
    block = sessions.read_neo(session_file)
    segment = block.segments[0]
    signals = {sig.name: sig for sig in segment.analogsignals}
    assert set(signals) == {f"activations_{layer}" for layer in ground_truth.layer_names}
    for layer in ground_truth.layer_names:
        sig = signals[f"activations_{layer}"]
        assert float(sig.sampling_rate.rescale("Hz").magnitude) == sessions.CLOCK_RATE_HZ
        values = np.asarray(sig.magnitude).reshape(n_t, n_s, -1)
        np.testing.assert_array_equal(values, ground_truth.activations[layer])
    (epoch,) = segment.epochs
    assert len(epoch) == n_t
    assert "checkpoint_00" in str(epoch.labels[0])
    np.testing.assert_allclose(epoch.times.rescale("s").magnitude, np.arange(n_t) * n_s / 10)


# ----------------------------------------------------------------------------------------------- determinism


def test_identical_inputs_give_identical_files(ground_truth, session_file, tmp_path):
    again = sessions.write_session(ground_truth, tmp_path / session_file.name, protocol_name="quickstart",
                                   experimenter="Doe, Jane")
    with h5py.File(session_file, "r") as first, h5py.File(again, "r") as second:
        for layer in ground_truth.layer_names:
            key = f"acquisition/activations_{layer}/data"
            np.testing.assert_array_equal(first[key][()], second[key][()])
        assert first.attrs["object_id"] == second.attrs["object_id"]
    assert filecmp.cmp(session_file, again, shallow=False)


# ----------------------------------------------------------------------------------------------- atomicity


def test_failed_write_leaves_no_final_and_no_temporary_file(ground_truth, tmp_path, monkeypatch):
    original = pynwb.NWBHDF5IO.write
    seen = []

    def write_then_fail(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.extend(tmp_path.rglob("*.tmp"))  # the temporary file exists mid-write
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pynwb.NWBHDF5IO, "write", write_then_fail)
    path = tmp_path / "sub-x" / "sub-x_ses-y.nwb"
    with pytest.raises(RuntimeError, match="disk on fire"):
        sessions.write_session(ground_truth, path)
    assert seen and seen[0].name == ".sub-x_ses-y.nwb.tmp"
    assert list(path.parent.iterdir()) == []


def test_failed_overwrite_keeps_previous_file(ground_truth, session_file, tmp_path, monkeypatch):
    path = tmp_path / session_file.name
    shutil.copyfile(session_file, path)

    def fail(*args, **kwargs):
        raise OSError("rename failed")

    monkeypatch.setattr(sessions.os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        sessions.write_session(mock_ground_truth(seed=1, run_id=ground_truth.run_id), path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert filecmp.cmp(session_file, path, shallow=False)


def test_bad_metadata_type_is_rejected_before_writing(tmp_path):
    gt = mock_ground_truth()
    gt = dataclasses.replace(gt, metadata={**gt.metadata, "layers": [1, 2]})
    with pytest.raises(TypeError, match=r"metadata\['layers'\] must be a str, int, float or bool"):
        sessions.write_session(gt, tmp_path / "s.nwb")
    assert list(tmp_path.iterdir()) == []


def test_empty_run_id_is_rejected(tmp_path):
    gt = mock_ground_truth()
    gt = dataclasses.replace(gt, metadata={**gt.metadata, "run_id": ""})
    with pytest.raises(ValueError, match="run_id"):
        sessions.write_session(gt, tmp_path / "s.nwb")


# ----------------------------------------------------------------------------------------------- completeness


def test_is_complete_session(session_file, tmp_path):
    assert sessions.is_complete_session(session_file)

    truncated = tmp_path / "truncated.nwb"
    data = session_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert not sessions.is_complete_session(truncated)

    random_file = tmp_path / "random.nwb"
    random_file.write_bytes(np.random.default_rng(0).bytes(4096))
    assert not sessions.is_complete_session(random_file)

    empty = tmp_path / "empty.nwb"
    empty.touch()
    assert not sessions.is_complete_session(empty)

    assert not sessions.is_complete_session(tmp_path / "missing.nwb")
    assert not sessions.is_complete_session(tmp_path)


def test_foreign_nwb_file_is_not_a_complete_session(tmp_path):
    from pynwb.testing.mock.file import mock_NWBFile

    path = tmp_path / "foreign.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(mock_NWBFile())
    assert not sessions.is_complete_session(path)
