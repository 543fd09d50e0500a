"""Rig recordings as NWB: modality types, nwbinspector, neo, round trips, blind mode, the record command."""

import json
import logging
import warnings

import h5py
import numpy as np
import pytest

from virtual_lab.lab.rules import ALIASES, RULES
from virtual_lab.rig import apply_preset
from virtual_lab.rig.presets import available_presets
from virtual_lab.testing import mock_ground_truth

pynwb = pytest.importorskip("pynwb")

from virtual_lab.rig.export import export_recording, record_sessions  # noqa: E402
from virtual_lab.sessions import (IN_SILICO_EXPERIMENTER, inspect_sessions, read_neo,  # noqa: E402
                                   read_session_attribution, session_path, write_session)

#: The only nwbinspector suggestions a rig recording may carry, and why each cannot be fixed.
UNFIXABLE_SUGGESTIONS = {
    # neo 0.14.6 cannot read a file with general/keywords (tests/test_sessions.py::test_neo_cannot_read_keywords)
    "check_keywords": "general/keywords would make the file unreadable by neo.io.NWBIO",
    # the observed session names no institution, and virtual_lab cannot know the user's
    "check_institution": "no institution given",
}
#: Allowed for single-snapshot rigs only: one kept session is one epoch; the epochs table stays, so that
#: every rig recording has the same layout whatever the number of sessions.
SINGLE_SESSION_SUGGESTIONS = {"check_single_row": "intervals/epochs of a one-session recording has one row"}
#: neo 0.14.6's false alarm on "dimensionless" (it strips the final "s" of unit names; the unit it returns is right).
NEO_DIMENSIONLESS_MESSAGE = "Can't handle unit 'dimensionles'. Returning dimensionless"


@pytest.fixture(scope="module")
def gt():
    return mock_ground_truth(rule="feedback_alignment", layer_sizes=(16, 12, 10, 4), n_checkpoints=8, n_stimuli=10,
                             run_id="run0fa")


def serious(path):
    return [m for m in inspect_sessions(path, config="dandi")
            if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION", "ERROR")]


def test_spiking_export_has_a_units_table_neo_reads(gt, tmp_path):
    rec = apply_preset(gt, "neuropixels-chronic", seed=5)
    assert all(rec.n_units(layer) > 0 for layer in rec.layer_names)  # a rig seed that tracks units in every layer
    path = export_recording(rec, tmp_path / "np.nwb", session_id="neuropixels-chronic")
    assert serious(path) == []
    counts = np.concatenate([rec.activations(layer).reshape(-1, rec.n_units(layer)) for layer in rec.layer_names], axis=1)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert len(nwb.units) == counts.shape[1] and len(nwb.trials) == rec.n_checkpoints * gt.n_stimuli
        onsets = nwb.trials["start_time"].data[:]
        for column in range(counts.shape[1]):
            times = nwb.units.get_unit_spike_times(column)
            per_presentation = np.bincount(np.searchsorted(onsets, times, side="right") - 1, minlength=len(onsets))
            np.testing.assert_array_equal(per_presentation, counts[:, column])
        provenance = nwb.processing["misc"]["provenance"].to_dataframe()
        assert "neuropixels-chronic" in set(provenance["value"]) and "seed" in set(provenance["parameter"])
    block = read_neo(path)
    trains = block.segments[0].spiketrains
    assert len(trains) == counts.shape[1] and sum(len(t) for t in trains) == counts.sum()


def test_two_photon_export_uses_ophys_types(gt, tmp_path):
    rec = apply_preset(gt, "2p-gcamp6f", seed=2)
    path = export_recording(rec, tmp_path / "2p.nwb", session_id="2p-gcamp6f")
    assert serious(path) == []
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        dff = nwb.processing["ophys"]["DfOverF"]
        for layer in rec.layer_names:
            series = dff[f"RoiResponseSeries_{layer}"]
            np.testing.assert_allclose(series.data[:], rec.activations(layer).reshape(-1, rec.n_units(layer)))
            assert len(series.rois.table) == rec.n_units(layer)
    read_neo(path)


def test_synapse_export_is_a_table(gt, tmp_path):
    rec = apply_preset(gt, "em-snapshot", seed=3)
    path = export_recording(rec, tmp_path / "em.nwb", session_id="em-snapshot")  # inspected in the blind test
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        table = io.read().processing["misc"]["synapse_measurements"].to_dataframe()
    sizes = np.concatenate([rec.weights(layer)[0] for layer in rec.layer_names])
    np.testing.assert_allclose(table["value"].to_numpy(), sizes)
    assert (table["value"] >= 0).all() and set(table["training_step"]) == {100}


def test_blind_export_holds_no_rule_name_and_the_key_is_separate(gt, tmp_path):
    source = write_session(gt, session_path(tmp_path / "sessions", gt.run_id, "groundtruth"))
    out = tmp_path / "blind"
    paths, key_path = record_sessions([source], "paper-gaussian", out, seed=5, blind=True)
    assert key_path.parent == tmp_path and not key_path.is_relative_to(out)
    key = json.loads(key_path.read_text())
    (subject, entry), = key["subjects"].items()
    assert entry["rule"] == "feedback_alignment" and entry["run_id"] == gt.run_id
    raw = paths[0].read_bytes().lower()
    texts = [raw]
    with h5py.File(paths[0], "r") as f:  # also every string dataset and attribute, in case of compression
        def visit(name, obj):
            texts.append(name.lower().encode())
            texts.extend(str(v).lower().encode() for v in obj.attrs.values())
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "OS":
                texts.append(" ".join(map(str, obj[()].ravel() if obj.shape else [obj[()]])).lower().encode())
        f.visititems(visit)
    words = [w for w in list(RULES) + list(ALIASES) if len(w) > 3] + [gt.run_id.lower()]  # (generic words such as "alignment" occur in the cached NWB schema)
    for word in words:
        assert not any(word.encode() in text for text in texts), f"blind file contains {word!r}"
    assert subject in paths[0].name and serious(paths[0]) == []


def test_record_command(gt, tmp_path, capsys):
    from virtual_lab.cli import main

    write_session(gt, session_path(tmp_path / "sessions", gt.run_id, "groundtruth"))
    code = main(["record", str(tmp_path / "sessions"), "--rig", "neuropixels-acute", "--out", str(tmp_path / "rec"),
                 "--set", "n_checkpoints=3"])
    assert code == 0 and len(list((tmp_path / "rec").rglob("*_ses-neuropixels-acute.nwb"))) == 1
    assert main(["record", str(tmp_path / "sessions"), "--rig", "neuropixel-acute"]) == 2
    assert "did you mean 'neuropixels-acute'" in capsys.readouterr().err


def test_exports_are_deterministic(gt, tmp_path):
    rec = apply_preset(gt, "neuropixels-acute", seed=1)
    a = export_recording(rec, tmp_path / "a" / "x.nwb", session_id="np")
    b = export_recording(rec, tmp_path / "b" / "x.nwb", session_id="np")
    assert a.read_bytes() == b.read_bytes()


def read_with_neo(path, through_read_neo=False):
    """neo.io.NWBIO (or read_neo): (block, neo's WARNING+ log messages, Python warnings as text)."""
    from neo.io import NWBIO

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    handler = Collect()
    logging.getLogger("Neo").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if through_read_neo:
                block = read_neo(path)
            else:
                reader = NWBIO(str(path), "r")
                try:
                    block = reader.read()[0]
                finally:
                    reader.close()
    finally:
        logging.getLogger("Neo").removeHandler(handler)
    return block, messages, [f"{w.category.__name__}: {w.message}" for w in caught]


@pytest.mark.parametrize("preset", available_presets())
def test_every_rig_export_has_metadata_and_units_neo_and_dandi_accept(gt, tmp_path, preset):
    rec = apply_preset(gt, preset, seed=4)
    path = export_recording(rec, tmp_path / f"{preset}.nwb", session_id=preset, experimenter="Doe, Jane", lab="Rule Lab")
    allowed = dict(UNFIXABLE_SUGGESTIONS, **(SINGLE_SESSION_SUGGESTIONS if rec.n_checkpoints == 1 else {}))
    for config in (None, "dandi"):
        messages = inspect_sessions(path, config=config)
        assert sorted((m.importance.name, m.check_function_name) for m in messages) == sorted(
            ("BEST_PRACTICE_SUGGESTION", name) for name in allowed), config
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.experimenter == ("Doe, Jane",) and nwb.lab == "Rule Lab" and nwb.keywords is None
        assert set(nwb.processing) <= {"ophys", "misc"} and "provenance" in nwb.processing["misc"].data_interfaces
        series = list(nwb.acquisition.values())
        if "ophys" in nwb.processing:
            series += list(nwb.processing["ophys"]["DfOverF"].roi_response_series.values())
        assert all(s.unit == "dimensionless" for s in series)
        n_responses = len(nwb.acquisition)
    block, logged, caught = read_with_neo(path)
    assert caught == []
    assert logged == [NEO_DIMENSIONLESS_MESSAGE] * n_responses  # only the acquisition series reach neo
    assert block.annotations["experimenter"] == ("Doe, Jane",) and block.annotations["lab"] == "Rule Lab"
    assert all(sig.dimensionality.string == "dimensionless" for sig in block.segments[0].analogsignals)
    _, logged, caught = read_with_neo(path, through_read_neo=True)
    assert logged == [] and caught == []


def test_record_sessions_carry_the_attribution_of_their_session(gt, tmp_path):
    credited = write_session(gt, session_path(tmp_path / "a", gt.run_id, "groundtruth"),
                             experimenter=["Doe, Jane", "Roe, Richard"], institution="Virtual University", lab="Rule Lab")
    (path,), _ = record_sessions([credited], "neuropixels-acute", tmp_path / "rec-a", seed=1)
    assert read_session_attribution(path) == read_session_attribution(credited) == {
        "experimenter": ("Doe, Jane", "Roe, Richard"), "institution": "Virtual University", "lab": "Rule Lab"}
    assert {m.check_function_name for m in inspect_sessions(path, config="dandi")} == {"check_keywords"}
    nobody = write_session(gt, session_path(tmp_path / "b", gt.run_id, "groundtruth"), experimenter=())
    (path,), _ = record_sessions([nobody], "paper-gaussian", tmp_path / "rec-b", seed=1, blind=True)
    assert read_session_attribution(path) == {"experimenter": (IN_SILICO_EXPERIMENTER,), "institution": "", "lab": ""}
