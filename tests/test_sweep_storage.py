"""Storage options of a sweep: float16 weights (round trip, validator, size) and the protocol switch."""

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
