"""Tests of virtual_lab.sessions: NWB round trip, validators, neo, naming, determinism, atomic writes."""

import os

os.environ.setdefault("PYNWB_NO_CACHE_DIR", "1")

import dataclasses  # noqa: E402
import filecmp  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402
from datetime import timezone  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pynwb  # noqa: E402
import pytest  # noqa: E402

from virtual_lab import sessions  # noqa: E402
from virtual_lab.testing import mock_ground_truth  # noqa: E402

BAD_IMPORTANCE = {"ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION"}
#: The only nwbinspector suggestions a session may carry, and why each cannot be fixed.
UNFIXABLE_SUGGESTIONS = {
    # neo 0.14.6 cannot read any file with keywords: pynwb returns them as a lazy StrDataset and neo puts
    # it unconverted into the Block annotations, which it then rejects (see test_neo_cannot_read_keywords).
    "check_keywords": "general/keywords would make the file unreadable by neo.io.NWBIO",
}
#: Also allowed when the protocol names no institution: virtual_lab cannot know the user's.
NO_INSTITUTION = {"check_institution": "no institution given ([storage] institution)"}
#: What neo 0.14.6 logs for each dimensionless series: it strips the final "s" of unit names (meant for
#: "volts") and then finds no "dimensionles" in quantities; the unit it returns is right (dimensionless).
NEO_DIMENSIONLESS_MESSAGE = "Can't handle unit 'dimensionles'. Returning dimensionless"


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
                                  experimenter="Doe, Jane", institution="Virtual University", lab="Rule Lab")


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
        assert nwbfile.keywords is None  # neo cannot read keywords (test_neo_cannot_read_keywords)
        assert nwbfile.experimenter == ("Doe, Jane",)
        assert nwbfile.institution == "Virtual University" and nwbfile.lab == "Rule Lab"
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
            assert series.unit == "dimensionless" and "dimensionless" in series.description
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
        assert probe.unit == "dimensionless"
        assert set(nwbfile.processing) == {"misc", "behavior"}
        network = nwbfile.processing["misc"]
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


def inspector_findings(path, config):
    import nwbinspector

    if isinstance(config, str):
        config = nwbinspector.load_config(filepath_or_keyword=config)
    return sorted((m.importance.name, m.check_function_name)
                  for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(path), config=config) if m is not None)


@pytest.mark.parametrize("config", [None, "dandi"])
def test_nwbinspector_leaves_only_the_unfixable_suggestions(session_file, tmp_path, config):
    allowed = [("BEST_PRACTICE_SUGGESTION", name) for name in sorted(UNFIXABLE_SUGGESTIONS)]
    assert inspector_findings(session_file, config) == allowed
    # the defaults: the in-silico experimenter passes the DANDI name check; no institution is known
    default = sessions.write_session(mock_ground_truth(), tmp_path / "default.nwb")
    allowed = [("BEST_PRACTICE_SUGGESTION", name) for name in sorted({**UNFIXABLE_SUGGESTIONS, **NO_INSTITUTION})]
    assert inspector_findings(default, config) == allowed


def test_default_experimenter_is_the_in_silico_one(tmp_path):
    default = sessions.write_session(mock_ground_truth(), tmp_path / "default.nwb")
    nobody = sessions.write_session(mock_ground_truth(), tmp_path / "nobody.nwb", experimenter=())
    with pynwb.NWBHDF5IO(str(default), "r") as io:
        nwbfile = io.read()
        assert nwbfile.experimenter == (sessions.IN_SILICO_EXPERIMENTER,) == ("virtual_lab, in silico",)
        assert nwbfile.institution is None and nwbfile.lab is None
    with pynwb.NWBHDF5IO(str(nobody), "r") as io:
        assert io.read().experimenter is None
    assert sessions.read_session_attribution(default) == {
        "experimenter": ("virtual_lab, in silico",), "institution": "", "lab": ""}
    assert ("BEST_PRACTICE_SUGGESTION", "check_experimenter_exists") in inspector_findings(nobody, "dandi")
    with pytest.raises(TypeError, match="'institution' parameter must be a str"):
        sessions.write_session(mock_ground_truth(), tmp_path / "bad.nwb", institution=3)


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


class _NeoLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


def read_with_neo(path, reader="raw"):
    """Read a file with neo; returns (block, neo's WARNING+ log messages, Python warnings as text).

    neo reports unit problems through the "Neo" logger, not the warnings module, so both are captured.
    """
    from neo.io import NWBIO

    handler = _NeoLog()
    neo_logger = logging.getLogger("Neo")
    neo_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if reader == "raw":
                io = NWBIO(str(path), "r")
                try:
                    block = io.read()[0]
                finally:
                    io.close()
            else:
                block = sessions.read_neo(path)
    finally:
        neo_logger.removeHandler(handler)
    return block, handler.messages, [f"{w.category.__name__}: {w.message}" for w in caught]


def test_neo_reads_the_session_and_its_metadata_without_warnings(session_file, ground_truth):
    block, logged, caught = read_with_neo(session_file)
    assert caught == []
    # neo's only message: its false alarm on "dimensionless" (once per activation series); the unit is right
    assert logged == [NEO_DIMENSIONLESS_MESSAGE] * len(ground_truth.layer_names)
    assert block.annotations["experimenter"] == ("Doe, Jane",)
    assert block.annotations["institution"] == "Virtual University" and block.annotations["lab"] == "Rule Lab"
    signals = block.segments[0].analogsignals
    assert len(signals) == len(ground_truth.layer_names)
    assert all(sig.dimensionality.string == "dimensionless" for sig in signals)

    block, logged, caught = read_with_neo(session_file, reader="read_neo")
    assert logged == [] and caught == []  # read_neo drops exactly that false alarm
    assert all(sig.dimensionality.string == "dimensionless" for sig in block.segments[0].analogsignals)


def test_read_neo_lets_other_neo_messages_through(session_file, monkeypatch):
    import neo.io.nwbio

    original = neo.io.nwbio._recompose_unit

    def also_warn(unit, conversion):
        neo.io.nwbio.logger.warning("Can't handle unit 'a.u.'. Returning dimensionless")
        return original(unit, conversion)

    monkeypatch.setattr(neo.io.nwbio, "_recompose_unit", also_warn)
    _, logged, _ = read_with_neo(session_file, reader="read_neo")
    assert logged and set(logged) == {"Can't handle unit 'a.u.'. Returning dimensionless"}
    assert not logging.getLogger("Neo").filters  # the filter is removed again


def test_neo_cannot_read_keywords(tmp_path):
    """Why sessions carry no general/keywords: neo 0.14.6 cannot read a file that has them.

    pynwb returns keywords as a lazy StrDataset and neo passes it unconverted to the Block annotations, which
    accept only plain values. If this test fails, neo reads keywords and sessions can carry them.
    """
    from neo.io import NWBIO
    from pynwb.testing.mock.file import mock_NWBFile

    path = tmp_path / "keywords.nwb"
    nwbfile = mock_NWBFile(keywords=["in silico", "learning rules"])
    # neo builds a Block (and checks its annotations) only for a file with something to read
    nwbfile.add_acquisition(pynwb.TimeSeries(name="x", data=np.zeros((4, 2)), unit="volts", rate=10.0))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    reader = NWBIO(str(path), "r")
    try:
        with pytest.raises(ValueError, match="Invalid annotation.*StrDataset"):
            reader.read()
    finally:
        reader.close()


# ----------------------------------------------------------------------------------------------- determinism


def test_identical_inputs_give_identical_files(ground_truth, session_file, tmp_path):
    again = sessions.write_session(ground_truth, tmp_path / session_file.name, protocol_name="quickstart",
                                   experimenter="Doe, Jane", institution="Virtual University", lab="Rule Lab")
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

    monkeypatch.setattr(os, "replace", fail)  # the writer renames with os.replace
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


def test_sessions_with_the_legacy_network_module_are_still_read(ground_truth, session_file, tmp_path, monkeypatch):
    legacy = tmp_path / session_file.name
    shutil.copyfile(session_file, legacy)
    with h5py.File(legacy, "r+") as f:  # the layout before the rename: processing/network
        f.move("processing/misc", "processing/network")
    with pynwb.NWBHDF5IO(str(legacy), "r") as io:
        assert set(io.read().processing) == {"network", "behavior"}
    for engine in ("pynwb", "h5py"):
        assert_same_ground_truth(ground_truth, sessions.read_session(legacy, engine=engine))
    assert sessions.is_complete_session(legacy)
    kind, reason, metadata = sessions.describe_session_file(legacy)
    assert (kind, reason) == ("complete", "") and metadata == dict(ground_truth.metadata)
    assert sessions.read_session_metadata(legacy) == dict(ground_truth.metadata)

    from virtual_lab.analysis.power import read_session_arrays

    def no_fallback(*args, **kwargs):
        raise AssertionError("read_session_arrays fell back to read_session")

    monkeypatch.setattr(sessions, "read_session", no_fallback)  # the fast h5py path must find the module
    fast = read_session_arrays(legacy)
    for layer in ground_truth.layer_names:
        np.testing.assert_array_equal(fast.weights[layer], ground_truth.weights[layer])


def test_protocol_attribution_reaches_the_sessions_and_never_changes_run_ids(tmp_path):
    from virtual_lab.sweeps.plan import plan_sweep
    from virtual_lab.sweeps.run import run_sweep
    from virtual_lab.sweeps.storage import check_run_file
    from virtual_lab.protocol import parse_protocol

    def protocol(storage):
        return parse_protocol({
            "name": "attr", "output_dir": str(tmp_path), "task": {"n_probe": 20},
            "network": {"hidden_sizes": [8]}, "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3},
            "sweep": {"rules": ["adam"], "n_seeds": 1}, "storage": storage})

    plain = protocol({})
    credited = protocol({"experimenter": ["Doe, Jane", "Roe, Richard"], "institution": "Virtual University",
                         "lab": "Rule Lab"})
    assert [s.run_id for s in plan_sweep(plain).specs] == [s.run_id for s in plan_sweep(credited).specs]
    first = run_sweep(credited, n_workers=0, progress=False)
    (path,) = first.session_paths
    assert first.n_trained == 1
    assert sessions.read_session_attribution(path) == {
        "experimenter": ("Doe, Jane", "Roe, Richard"), "institution": "Virtual University", "lab": "Rule Lab"}
    assert inspector_findings(path, "dandi") == [("BEST_PRACTICE_SUGGESTION", name)
                                                 for name in sorted(UNFIXABLE_SUGGESTIONS)]
    # other attribution, same runs: the session on disk is complete and kept as written
    (spec,) = plan_sweep(plain).specs
    assert check_run_file(path, spec).state == "complete"
    again = run_sweep(plain, n_workers=0, progress=False)
    assert (again.n_trained, again.n_reused, again.problems) == (0, 1, [])
    assert sessions.read_session_attribution(path)["institution"] == "Virtual University"


def test_foreign_nwb_file_is_not_a_complete_session(tmp_path):
    from pynwb.testing.mock.file import mock_NWBFile

    path = tmp_path / "foreign.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(mock_NWBFile())
    assert not sessions.is_complete_session(path)


# ----------------------------------------------------------------------------------------------- partial reads


def _arrays_of(gt):
    """Every array of a GroundTruth by name, for exact comparisons."""
    out = {name: getattr(gt, name) for name in ("checkpoint_steps", "train_loss", "test_accuracy",
                                                 "probe_stimuli", "probe_labels")}
    for table in ("activations", "weights", "activity_change"):
        out.update({f"{table}[{layer}]": getattr(gt, table)[layer] for layer in gt.layer_names})
    return out


def assert_same_arrays(expected, actual):
    want, got = _arrays_of(expected), _arrays_of(actual)
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert actual.layer_names == expected.layer_names and actual.depth_positions == expected.depth_positions
    assert dict(actual.metadata) == dict(expected.metadata)


@pytest.fixture(scope="module")
def half_file(tmp_path_factory):
    """A session with float16 weights, 6 checkpoints and vector stimuli (the reshape path of the reader)."""
    gt = mock_ground_truth(layer_sizes=(16, 12, 10, 4), n_checkpoints=6, n_stimuli=12)
    gt = dataclasses.replace(gt, probe_stimuli=gt.probe_stimuli.reshape(12, 16))
    return sessions.write_session(gt, tmp_path_factory.mktemp("half") / "s.nwb", weights_dtype="float16")


@pytest.mark.parametrize("engine", sessions.ENGINES)
@pytest.mark.parametrize("which", ["session_file", "half_file"])
def test_partial_reads_are_slices_of_the_full_read(engine, which, request):
    path = request.getfixturevalue(which)
    full = sessions.read_session(path, engine=engine)
    picks = [4, 0, 2]
    part = sessions.read_session(path, engine=engine, layers=("fc3", "fc1"), checkpoints=picks)
    assert part.layer_names == ("fc1", "fc3")  # forward order, whatever order was asked
    assert part.depth_positions == tuple(full.depth_positions[full.layer_names.index(x)] for x in ("fc1", "fc3"))
    for layer in part.layer_names:
        for table in ("activations", "weights", "activity_change"):
            got, want = getattr(part, table)[layer], getattr(full, table)[layer][picks]
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    for name in ("checkpoint_steps", "train_loss", "test_accuracy"):
        np.testing.assert_array_equal(getattr(part, name), getattr(full, name)[picks])
    np.testing.assert_array_equal(part.probe_stimuli, full.probe_stimuli)
    np.testing.assert_array_equal(part.probe_labels, full.probe_labels)
    assert part.metadata == full.metadata
    # an explicit "everything" is the full read, and both engines agree on every partial read
    everything = sessions.read_session(path, engine=engine, layers=full.layer_names, arrays=sessions.SESSION_ARRAYS,
                                       checkpoints=range(full.n_checkpoints))
    assert_same_arrays(full, everything)
    other = "h5py" if engine == "pynwb" else "pynwb"
    assert_same_arrays(part, sessions.read_session(path, engine=other, layers=("fc1", "fc3"), checkpoints=picks))


def test_arrays_left_out_are_empty_and_keep_their_first_axis(session_file, ground_truth):
    n_t, n_s = ground_truth.n_checkpoints, ground_truth.n_stimuli
    weights_only = sessions.read_session(session_file, engine="h5py", arrays=("weights",))
    for layer in ground_truth.layer_names:
        np.testing.assert_array_equal(weights_only.weights[layer], ground_truth.weights[layer])
        assert weights_only.activations[layer].shape == (n_t, 0, 0)
        assert weights_only.activity_change[layer].shape == (n_t, 0)
    assert weights_only.probe_stimuli.shape == (n_s, 0) and weights_only.probe_stimuli.dtype == np.float32
    nothing = sessions.read_session(session_file, arrays=(), checkpoints=[1])  # curves and metadata only
    np.testing.assert_array_equal(nothing.train_loss, ground_truth.train_loss[[1]])
    assert nothing.activations["fc1"].shape == (1, 0, 0) and nothing.metadata == dict(ground_truth.metadata)


def test_the_rig_read_of_the_power_analysis_equals_the_session(session_file, ground_truth):
    """What analysis.power read for the rig (activations, weights, activity change, steps, metadata)."""
    rig_arrays = ("activations", "weights", "activity_change")
    gt = sessions.read_session(session_file, engine="h5py", arrays=rig_arrays)
    assert gt.layer_names == ground_truth.layer_names and gt.depth_positions == ground_truth.depth_positions
    np.testing.assert_array_equal(gt.checkpoint_steps, ground_truth.checkpoint_steps)
    for table in rig_arrays:
        for layer in ground_truth.layer_names:
            np.testing.assert_array_equal(getattr(gt, table)[layer], getattr(ground_truth, table)[layer])
    assert gt.metadata == dict(ground_truth.metadata) and gt.run_id == ground_truth.run_id
    # the curves come along (power left zeros there); labels too
    np.testing.assert_array_equal(gt.test_accuracy, ground_truth.test_accuracy)
    np.testing.assert_array_equal(gt.probe_labels, ground_truth.probe_labels)


def test_a_partial_read_does_not_touch_the_layers_it_leaves_out(session_file, ground_truth, tmp_path):
    damaged = tmp_path / session_file.name
    shutil.copyfile(session_file, damaged)
    with h5py.File(damaged, "r+") as f:
        del f["acquisition/activations_fc1/data"]
        del f["processing/misc/weights/fc2"]
    gt = sessions.read_session(damaged, engine="h5py", layers=("fc3",))
    np.testing.assert_array_equal(gt.activations["fc3"], ground_truth.activations["fc3"])
    with pytest.raises(KeyError):
        sessions.read_session(damaged, engine="h5py")
    gt = sessions.read_session(damaged, engine="h5py", layers=("fc1",), arrays=("weights",))
    np.testing.assert_array_equal(gt.weights["fc1"], ground_truth.weights["fc1"])


def test_read_session_rejects_bad_selections_with_one_line(session_file):
    with pytest.raises(ValueError, match=r"groundtruth.nwb: no layer 'Fc1' in this session; did you mean 'fc1'\? "
                                         r"\(layers: fc1, fc2, fc3\)"):
        sessions.read_session(session_file, layers=("Fc1",))
    with pytest.raises(ValueError, match=r"arrays='weight' is not available; did you mean 'weights'\?"):
        sessions.read_session(session_file, arrays=("weight",))
    with pytest.raises(ValueError, match=r"checkpoint index 9 is out of range; the session has 5 checkpoints"):
        sessions.read_session(session_file, engine="h5py", checkpoints=[0, 9])
    with pytest.raises(ValueError, match="repeats an index"):
        sessions.read_session(session_file, checkpoints=[1, 1])
    with pytest.raises(ValueError, match="at least one layer"):
        sessions.read_session(session_file, layers=())
    with pytest.raises(TypeError, match="sequence of names"):
        sessions.read_session(session_file, layers="fc1")
    for bad in ([], [0.5], [True, False], [[0, 1]]):
        with pytest.raises(TypeError, match="checkpoint indices"):
            sessions.read_session(session_file, checkpoints=bad)
    with pytest.raises(ValueError, match="The 'engine' parameter of read_session must be 'pynwb' or 'h5py'"):
        sessions.read_session(session_file, engine="neo")
