"""Resumable sweeps: fixed populations, spec checks, failures in the manifest, damaged and foreign files."""

import json
import os
import shutil

import numpy as np
import pytest

from virtual_lab.cli import main
from virtual_lab.sweeps import storage
from virtual_lab.sweeps.plan import plan_populations, plan_sweep
from virtual_lab.sweeps.run import run_sweep
from virtual_lab.sweeps.status import sweep_status
from virtual_lab.sweeps.storage import InsufficientDiskSpaceError, read_log, spec_mismatches
from virtual_lab.lab.spec import RunSpec
from virtual_lab.pipeline import SessionSequence, train_and_record
from virtual_lab.protocol import parse_protocol
from virtual_lab.sessions import describe_session_file, read_session, read_session_metadata


def tiny(tmp_path, name="sw", **overrides):
    data = {"name": name, "output_dir": str(tmp_path), "seed": 3, "task": {"n_probe": 20},
            "network": {"hidden_sizes": [8]},
            "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3, "population_size": 2},
            "sweep": {"rules": ["sgdm", "feedback_alignment"], "n_seeds": 2},
            "decoder": {"models": ["logistic"], "n_splits": 2}}
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_protocol(data)


@pytest.fixture(scope="module")
def base_sweep(tmp_path_factory):
    """One finished tiny sweep; tests copy its folder instead of training again."""
    root = tmp_path_factory.mktemp("base")
    result = run_sweep(tiny(root), n_workers=0, progress=False)
    assert result.ok and result.n_trained == 4 and len(result.plan.populations) == 2
    return root


def finished(base_sweep, tmp_path):
    shutil.copytree(base_sweep / "sw", tmp_path / "sw")
    protocol = tiny(tmp_path)
    return protocol, [p for p in plan_sweep(protocol).paths.values()]


def write_foreign_nwb(path):
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile(session_description="from another tool", identifier="other-tool-1",
                  session_start_time=datetime(2021, 1, 1, tzinfo=timezone.utc))
    nwb.add_acquisition(TimeSeries(name="lfp", data=np.zeros((10, 2)), unit="V", rate=1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_populations_depend_on_the_sweep_only():
    specs = [RunSpec("sgdm", 0.1, 8, 1, seed) for seed in range(10)]
    populations = plan_populations(specs, 4)
    assert [len(p.specs) for p in populations] == [4, 3, 3]
    assert [s for p in populations for s in p.specs] == specs  # contiguous, in sweep order
    assert [p.population_id for p in plan_populations(specs, 4)] == [p.population_id for p in populations]
    assert len({p.population_id for p in populations}) == 3
    with pytest.raises(ValueError, match="population_size must be an integer >= 1, got 0"):
        plan_populations(specs, 0)


def test_resume_rewrites_missing_sessions_bit_identically(base_sweep, tmp_path):
    protocol, paths = finished(base_sweep, tmp_path)
    first = run_sweep(protocol, n_workers=0, progress=False)
    assert first.ok and first.n_trained == 0 and first.n_reused == 4
    original = {p: p.read_bytes() for p in paths}
    meta = read_session_metadata(paths[0])
    assert meta["run_id"] == first.plan.specs[0].run_id and meta["population_size"] == 2
    assert meta["spec_seed"] == first.plan.specs[0].seed and meta["spec_layer_sizes"] == "64,8,10"
    assert spec_mismatches(first.plan.specs[0], meta) == []

    paths[1].unlink()
    again = run_sweep(protocol, n_workers=0, progress=False)
    assert (again.n_trained, again.n_reused, again.n_recomputed) == (1, 3, 1)
    assert {p: p.read_bytes() for p in paths} == original  # its population retrained as a whole

    manifest = json.loads((protocol.recordings_dir / "sweep_manifest.json").read_text())
    assert manifest["finished"] and manifest["counts"] == {"complete": 4, "diverged": 0, "failed": 0, "pending": 0}
    assert {r["run_id"] for r in manifest["runs"]} == {s.run_id for s in first.plan.specs}


def test_session_of_another_spec_is_set_aside_and_retrained(base_sweep, tmp_path):
    protocol, paths = finished(base_sweep, tmp_path)
    original = paths[0].read_bytes()
    shutil.copyfile(paths[3], paths[0])  # a complete session of another run at run 0's path
    result = run_sweep(protocol, n_workers=0, progress=False)
    assert result.n_trained == 1 and result.ok
    assert paths[0].read_bytes() == original
    aside = paths[0].with_name(paths[0].name + ".mismatched-1")
    assert aside.read_bytes() == paths[3].read_bytes()  # never silently overwritten
    assert "session of a different spec: run_id" in result.problems[0]
    assert "replaced" in result.summary_text()
    # a changed field under the right run id is caught too
    meta = dict(read_session_metadata(paths[1]))
    spec = result.plan.specs[1]
    meta["spec_seed"] = 1
    assert spec_mismatches(spec, meta) == [f"seed: stored 1, expected {spec.seed}"]


def test_damaged_and_foreign_files_are_reported_never_fatal(base_sweep, tmp_path, capsys):
    protocol, paths = finished(base_sweep, tmp_path)
    root = protocol.recordings_dir
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) // 2])                      # truncated HDF5 at a session path
    (root / "notes.nwb").write_bytes(os.urandom(2048))               # random bytes named .nwb
    (root / "empty.nwb").write_bytes(b"")
    write_foreign_nwb(root / "sub-other" / "sub-other_ses-1.nwb")    # an NWB file from another tool
    write_foreign_nwb(paths[3])                                      # ... sitting at a session path

    kinds = {p.name: describe_session_file(p)[0] for p in [paths[2], paths[3], root / "notes.nwb", root / "empty.nwb"]}
    assert kinds == {paths[2].name: "corrupted", paths[3].name: "foreign", "notes.nwb": "not_hdf5",
                     "empty.nwb": "not_hdf5"}
    status = sweep_status(root)
    assert status.totals["complete"] == 2 and status.totals["missing"] == 2 and not status.ok
    assert main(["status", str(root)]) == 1
    out = capsys.readouterr().out
    assert "truncated HDF5 file" in out and "not a virtual_lab ground-truth session" in out
    assert "not an HDF5/NWB file" in out and "empty file" in out

    result = run_sweep(protocol, n_workers=0, progress=False)
    assert result.ok and result.n_trained == 2
    assert any("truncated HDF5" in p for p in result.problems)
    assert any("not a virtual_lab" in p and "kept as" in p for p in result.problems)
    assert paths[3].with_name(paths[3].name + ".mismatched-1").is_file()
    status = sweep_status(root)
    assert status.totals["complete"] == 4 and status.totals["missing"] == 0
    assert sorted(kind for _, kind, _ in status.problem_files) == ["foreign", "not_hdf5", "not_hdf5"]
    assert "foreign" in status.summary_text()


def test_failed_and_diverged_runs_are_in_the_manifest_and_the_exit_code(tmp_path, monkeypatch, capsys):
    from virtual_lab import sessions

    protocol_path = tmp_path / "fail.toml"
    protocol_path.write_text(
        'name = "fail"\nseed = 1\n[task]\nn_probe = 20\n[network]\nhidden_sizes = [8]\n'
        '[training]\nn_epochs = 1\nbatch_size = 64\nn_checkpoints = 3\npopulation_size = 2\n'
        '[sweep]\nrules = ["sgdm"]\nlearning_rate_scales = [1.0, 1e30]\nn_seeds = 2\n'
        '[decoder]\nmodels = ["logistic"]\nn_splits = 2\n')
    out = tmp_path / "out"
    plan = plan_sweep(parse_protocol({"name": "fail", "seed": 1, "output_dir": str(out), "task": {"n_probe": 20},
                                      "network": {"hidden_sizes": [8]},
                                      "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3,
                                                   "population_size": 2},
                                      "sweep": {"rules": ["sgdm"], "learning_rate_scales": [1.0, 1e30],
                                                "n_seeds": 2}}))
    broken = plan.specs[0].run_id
    real_write = sessions.write_session

    def failing_write(gt, path, **kwargs):
        if gt.run_id == broken:
            raise OSError("No space left on device (simulated)")
        return real_write(gt, path, **kwargs)

    monkeypatch.setattr(sessions, "write_session", failing_write)
    code = main(["run", str(protocol_path), "--output-dir", str(out), "--workers", "0", "-q", "--train-only"])
    assert code == 1
    text = capsys.readouterr().out
    assert f"FAILED   {broken} (sgdm): OSError: No space left on device (simulated)" in text
    manifest = json.loads((out / "fail" / "sweep_manifest.json").read_text())
    runs = {r["run_id"]: r for r in manifest["runs"]}
    assert runs[broken]["status"] == "failed" and "No space left" in runs[broken]["error"]
    diverged = [r for r in runs.values() if r["status"] == "diverged"]
    assert diverged and all(r["step"] >= 0 and "NaN or inf at step" in r["error"] for r in diverged)
    assert len(diverged) == 2 and sum(r["status"] == "complete" for r in runs.values()) == 1
    events = [e for e in read_log(out / "fail" / "sweep_log.jsonl") if e["event"] == "run"]
    assert {e["run_id"] for e in events} == set(runs)
    assert main(["status", str(out / "fail")]) == 1
    assert f"failed  {broken} (sgdm)" in capsys.readouterr().out

    monkeypatch.setattr(sessions, "write_session", real_write)
    assert main(["run", str(protocol_path), "--output-dir", str(out), "--workers", "0", "-q", "--train-only"]) == 0
    assert main(["status", str(out / "fail")]) == 0


def test_a_population_that_fails_to_train_does_not_stop_the_others(tmp_path, monkeypatch):
    from virtual_lab.lab import engine

    protocol = tiny(tmp_path)
    bad = plan_sweep(protocol).populations[0]
    real = engine.train_cohort

    def train_cohort(specs, task, **kwargs):
        if specs[0].run_id == bad.run_ids[0]:
            raise RuntimeError("boom")
        return real(specs, task, **kwargs)

    monkeypatch.setattr(engine, "train_cohort", train_cohort)
    result = run_sweep(protocol, n_workers=0, progress=False)
    assert not result.ok
    assert {r["run_id"] for r in result.failed} == set(bad.run_ids)
    assert all(r["error"] == "RuntimeError: boom" for r in result.failed)
    assert len(result.session_paths) == 2
    with pytest.raises(RuntimeError, match="boom"):
        train_and_record(protocol, progress=False)


def test_free_disk_space_is_checked_before_training(tmp_path, monkeypatch):
    protocol = tiny(tmp_path)
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(InsufficientDiskSpaceError, match=r"not enough free disk space for 4 sessions in .*: it "
                                                          r"needs about \d+ MB and 0 MB is free"):
        run_sweep(protocol, n_workers=0, progress=False)
    assert not list(protocol.recordings_dir.rglob("*.nwb"))
    path = tmp_path / "p.toml"
    path.write_text('name = "sw"\n[training]\nn_epochs = 1\n[sweep]\nn_seeds = 2\n')
    assert main(["run", str(path), "--output-dir", str(tmp_path), "-q"]) == 1
    off = tiny(tmp_path, storage={"check_free_space": False}, sweep={"rules": ["sgdm"], "n_seeds": 1})
    assert run_sweep(off, n_workers=0, progress=False).ok


def test_session_sequence_reads_lazily_and_equals_pynwb(base_sweep, tmp_path):
    _, paths = finished(base_sweep, tmp_path)
    paths = paths[2:]
    sessions = SessionSequence(paths)
    assert len(sessions) == 2 and len(sessions[:1]) == 1
    for gt, path in zip(sessions, paths):
        ref = read_session(path)
        assert gt.metadata == ref.metadata
        for layer in ref.layer_names:
            np.testing.assert_array_equal(gt.activations[layer], ref.activations[layer])
            np.testing.assert_array_equal(gt.weights[layer], ref.weights[layer])
    performance = sessions.performance()
    assert performance[0].layer_names == () and performance[0].rule == "feedback_alignment"
    np.testing.assert_array_equal(performance[1].test_accuracy, read_session(paths[1]).test_accuracy)
    with pytest.raises(ValueError, match="The 'engine' parameter of read_session must be 'pynwb' or 'h5py'"):
        read_session(paths[0], engine="fast")


def test_run_sweep_parameter_errors(tmp_path):
    protocol = tiny(tmp_path)
    with pytest.raises(ValueError, match=r"^executor='dusk' is not available; did you mean 'dask'\? "
                                         r"\(available: local, dask\)$"):
        run_sweep(protocol, executor="dusk")
    with pytest.raises(ValueError, match="needs executor 'dask'"):
        run_sweep(protocol, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match=r"^n_workers=-1 is out of range \(allowed: >= 0\)$"):
        run_sweep(protocol, n_workers=-1)
    with pytest.raises(ValueError, match=r"^n_workers=0 is out of range \(allowed: >= 1\)$"):
        run_sweep(protocol, executor="dask", n_workers=0)


def test_planning_warns_when_ia_runs_stop_before_their_feedback_can_learn(tmp_path, caplog):
    # tau = 0.1 / (2 * 1e-3 * 0.02) = 2,500 steps; digits with 20 probes leaves 1,777 images: 27 steps per epoch
    sweep = {"rules": ["sgdm", "information_alignment"], "n_seeds": 1}
    with caplog.at_level("WARNING", logger="virtual_lab.sweeps.plan"):
        plan_sweep(tiny(tmp_path, sweep=sweep, training={"n_epochs": 10}))
    (record,) = [r for r in caplog.records if "information_alignment" in r.getMessage()]
    assert "1 of its 1 runs train fewer steps (270) than the time constant of their feedback matrices (2,500" \
        in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="virtual_lab.sweeps.plan"):
        plan_sweep(tiny(tmp_path, sweep=sweep, training={"n_epochs": 93}))  # 2,511 steps
    assert not [r for r in caplog.records if "time constant" in r.getMessage()]
