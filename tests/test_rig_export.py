"""Rig recordings as NWB: modality types, nwbinspector, neo, round trips, blind mode, the record command."""

import json

import h5py
import numpy as np
import pytest

from virtual_lab.lab.rules import ALIASES, RULES
from virtual_lab.rig import apply_preset
from virtual_lab.testing import mock_ground_truth

pynwb = pytest.importorskip("pynwb")

from virtual_lab.rig.export import export_recording, record_sessions  # noqa: E402
from virtual_lab.sessions import inspect_sessions, read_neo, session_path, write_session  # noqa: E402


@pytest.fixture(scope="module")
def gt():
    return mock_ground_truth(rule="feedback_alignment", layer_sizes=(16, 12, 10, 4), n_checkpoints=8, n_stimuli=10,
                             run_id="run0fa")


def serious(path):
    return [m for m in inspect_sessions(path, config="dandi")
            if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION", "ERROR")]


def test_spiking_export_has_a_units_table_neo_reads(gt, tmp_path):
    rec = apply_preset(gt, "neuropixels-chronic", seed=1)
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
        provenance = nwb.processing["rig"]["provenance"].to_dataframe()
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
        table = io.read().processing["synapses"]["synapse_measurements"].to_dataframe()
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
