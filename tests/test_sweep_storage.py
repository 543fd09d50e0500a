"""Storage options of a sweep: float16 weights (round trip, validator, size) and the protocol switch."""

import dataclasses

import h5py
import numpy as np
import pytest

from virtual_lab.sweeps.run import run_sweep
from virtual_lab.sweeps.storage import estimate_session_bytes
from virtual_lab.lab.spec import RunSpec
from virtual_lab.protocol import parse_protocol
from virtual_lab.sessions import read_session, read_session_metadata, validate_session, write_session
from virtual_lab.testing import mock_ground_truth


def test_float16_weights_round_trip_and_shrink_the_file(tmp_path):
    gt = mock_ground_truth(layer_sizes=(64, 128, 128, 10), image_shape=(8, 8), n_checkpoints=5)
    full = write_session(gt, tmp_path / "sub-a" / "sub-a_ses-f32.nwb")
    half = write_session(gt, tmp_path / "sub-a" / "sub-a_ses-f16.nwb", weights_dtype="float16")
    assert validate_session(half) == []
    back = read_session(half)
    for layer in gt.layer_names:
        assert back.weights[layer].dtype == np.float32
        np.testing.assert_array_equal(back.weights[layer], gt.weights[layer].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(back.activations[layer], gt.activations[layer])
    np.testing.assert_array_equal(read_session(half, engine="h5py").weights["fc2"], back.weights["fc2"])
    weight_bytes = sum(w.nbytes for w in gt.weights.values())
    saved = full.stat().st_size - half.stat().st_size
    assert saved > 0.4 * weight_bytes  # half of the (barely compressible) weight bytes
    with h5py.File(half) as f:
        assert f["processing/misc/weights/fc1"].dtype == np.float16
    with pytest.raises(ValueError, match="The 'weights_dtype' parameter of write_session must be 'float32' or "
                                         "'float16'. Got 'int8' instead."):
        write_session(gt, tmp_path / "x.nwb", weights_dtype="int8")


def test_protocol_storage_option_reaches_the_sessions(tmp_path):
    protocol = parse_protocol({
        "name": "f16", "output_dir": str(tmp_path), "task": {"n_probe": 20}, "network": {"hidden_sizes": [8]},
        "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3},
        "sweep": {"rules": ["adam"], "n_seeds": 1}, "storage": {"weights_dtype": "float16"}})
    (path,) = run_sweep(protocol, n_workers=0, progress=False).session_paths
    assert read_session_metadata(path)["weights_dtype"] == "float16"
    with h5py.File(path) as f:
        assert f["processing/misc/weights/fc1"].dtype == np.float16
    spec = RunSpec("adam", 1e-3, 64, 1, 0, layer_sizes=(64, 8, 10), n_probe=20, n_checkpoints=3)
    assert path.stat().st_size < estimate_session_bytes(spec, "float16")
    assert estimate_session_bytes(spec, "float16") < estimate_session_bytes(spec, "float32")


def test_the_manifest_keeps_each_sessions_checksum_from_its_commit(tmp_path):
    import json

    from virtual_lab.sessions.checksum import file_sha256
    from virtual_lab.sweeps.status import verify_session

    protocol = parse_protocol({
        "name": "sums", "output_dir": str(tmp_path), "task": {"n_probe": 20}, "network": {"hidden_sizes": [8]},
        "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3},
        "sweep": {"rules": ["adam", "sgdm"], "n_seeds": 1}})
    manifest_path = protocol.recordings_dir / "sweep_manifest.json"

    def records():
        return {r["path"]: r for r in json.loads(manifest_path.read_text())["runs"]}

    first = run_sweep(protocol, n_workers=0, progress=False)
    committed = records()
    for path in first.session_paths:  # taken at commit time, in the worker
        record = committed[path.relative_to(protocol.recordings_dir).as_posix()]
        assert record["sha256"] == file_sha256(path) and record["size"] == path.stat().st_size
    # a byte changed after the commit (same size, layout intact): a resumed sweep reuses the session but keeps
    # the committed checksum, so status --verify still tells it changed
    changed = first.session_paths[0]
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed.write_bytes(bytes(data))
    assert run_sweep(protocol, n_workers=0, progress=False).n_reused == 2
    assert records() == committed
    record = committed[changed.relative_to(protocol.recordings_dir).as_posix()]
    assert verify_session(changed, record["sha256"], record["size"]).state in ("changed", "damaged")
    # a manifest without checksums (an older version, or a sweep killed before recording them): hashed now
    manifest = json.loads(manifest_path.read_text())
    for run in manifest["runs"]:
        run.pop("sha256"), run.pop("size")
    manifest_path.write_text(json.dumps(manifest))
    run_sweep(protocol, n_workers=0, progress=False)
    for path in first.session_paths:
        assert records()[path.relative_to(protocol.recordings_dir).as_posix()]["sha256"] == file_sha256(path)


def test_a_session_from_before_the_evaluation_subset_is_not_taken_for_todays_run():
    # files written before [training] eval_subset took the loss on the whole training set (eval_subset 0):
    # a sweep must not reuse them next to sessions whose loss is on today's 256-example subset
    from virtual_lab.lab.spec import RunSpec
    from virtual_lab.sweeps.storage import spec_metadata, spec_mismatches

    spec = RunSpec(rule="sgdm", learning_rate=0.02, batch_size=64, n_epochs=2, seed=7)
    stored = {"run_id": spec.run_id, **spec_metadata(spec)}
    assert spec_mismatches(spec, stored) == []
    del stored["spec_eval_subset"]
    assert spec_mismatches(spec, stored) == ["eval_subset: not stored (so 0), expected 256"]
    whole_set = dataclasses.replace(spec, eval_subset=0)
    old = {"run_id": whole_set.run_id, **spec_metadata(whole_set)}
    del old["spec_eval_subset"]
    assert spec_mismatches(whole_set, old) == []
