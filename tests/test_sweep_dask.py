"""The same sweep on a dask.distributed LocalCluster (loopback only) gives the local executor's sessions."""

import dataclasses

import pytest

from virtual_lab.sweeps.run import run_sweep
from virtual_lab.protocol import parse_protocol
from test_sweep_kill import session_content

distributed = pytest.importorskip("distributed", reason="dask.distributed is optional (virtual_lab[dask])")


def test_dask_local_cluster_gives_identical_sessions(tmp_path):
    protocol = parse_protocol({
        "name": "dk", "seed": 5, "task": {"n_probe": 20}, "network": {"hidden_sizes": [8]},
        "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3, "population_size": 2},
        "sweep": {"rules": ["sgdm", "information_alignment"], "n_seeds": 2}})
    local = run_sweep(dataclasses.replace(protocol, output_dir=str(tmp_path / "local")), n_workers=0,
                      progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        remote = run_sweep(dataclasses.replace(protocol, output_dir=str(tmp_path / "dask")), executor="dask",
                           scheduler=cluster.scheduler_address, progress=False)
    assert local.ok and remote.ok and remote.n_trained == 4
    for a, b in zip(local.session_paths, remote.session_paths):
        assert a.relative_to(tmp_path / "local") == b.relative_to(tmp_path / "dask")
        assert session_content(a) == session_content(b)
