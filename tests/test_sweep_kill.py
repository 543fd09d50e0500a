"""A sweep killed with SIGKILL at random moments, restarted each time, ends exactly like an uninterrupted one;
each restart takes over the killed run's stale lock with a warning."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from virtual_lab.sweeps.plan import plan_sweep
from virtual_lab.sweeps.run import run_sweep
from virtual_lab.sweeps.storage import read_log
from virtual_lab.protocol import load_protocol
from virtual_lab.sessions import describe_session_file, read_session

PROTOCOL = """
name = "crash"
seed = 11
[task]
n_probe = 20
[network]
hidden_sizes = [8]
[training]
n_epochs = 1
batch_size = 64
n_checkpoints = 3
population_size = 2
[sweep]
rules = ["sgdm", "adam", "feedback_alignment", "information_alignment"]
n_seeds = 3
"""

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")


def session_content(path):
    """Every group, dataset (dtype, shape, chunks, filters, values) and attribute of an HDF5 file.

    Equal contents mean identical sessions. Bytes can differ between writer processes: HDF5 places the
    variable-length strings in its global heap in an order that depends on the writing process's state.
    """
    import h5py

    def norm(value, f):
        if isinstance(value, h5py.Reference):
            return ("ref", f[value].name)
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "O":
                return tuple(norm(v, f) for v in value.ravel())
            if value.dtype.names:
                return tuple(tuple(norm(x, f) for x in row) for row in value.ravel())
            return (value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, np.void):
            return tuple(norm(x, f) for x in value)
        return value

    content = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: norm(v, f) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                content[name] = (obj.dtype.str, obj.shape, obj.chunks, obj.compression, obj.compression_opts,
                                 norm(obj[()], f), attrs)
            else:
                content[name] = attrs
        f.visititems(visit)
        content["/"] = {k: norm(v, f) for k, v in f.attrs.items()}
    return content


def start_sweep(protocol_path, output_dir):
    env = {**os.environ, "PYNWB_NO_CACHE_DIR": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "virtual_lab", "run", str(protocol_path), "--output-dir", str(output_dir),
         "--train-only", "--workers", "2", "-q"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def snapshot(files):
    """Every session under its final name: readable, complete, and its identity (inode, mtime)."""
    state = {}
    for path in files:
        if path.exists():
            kind, reason, _ = describe_session_file(path)
            assert kind == "complete", f"{path} after SIGKILL: {kind}: {reason}"
            read_session(path, engine="h5py")
            stat = path.stat()
            state[path] = (stat.st_ino, stat.st_mtime_ns)
    return state


def _assert_stale_lock_taken_over(output, stale):
    """A sweep that finds a killed holder's lock record warns once that it takes it over; otherwise none.

    ``stale``: the record was there when the sweep started (a sweep killed after it released its lock, while
    it was exiting, leaves none)."""
    warnings = [line for line in output.splitlines() if "taking over the stale lock of pid" in line]
    assert len(warnings) == (1 if stale else 0), output
    if warnings:
        assert "that process is no longer running" in warnings[0], warnings[0]


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_sweep(tmp_path):
    protocol_path = tmp_path / "crash.toml"
    protocol_path.write_text(PROTOCOL)
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    plan = plan_sweep(load_protocol(protocol_path))
    names = {path.relative_to(plan.root) for path in plan.paths.values()}
    files = [killed_dir / "crash" / name for name in names]
    log_path = killed_dir / "crash" / "sweep_log.jsonl"

    rng = np.random.default_rng(20240607)
    snapshots = []  # (number of log events when the next sweep starts, sessions complete at that moment)
    n_killed_mid_sweep = 0
    lock_record = killed_dir / "crash" / ".sweep.lock.json"
    n_stale = 0
    for attempt in range(3):
        stale = lock_record.exists()  # left by the sweep killed before this one, if it still held the lock
        n_stale += stale
        n_events = len(read_log(log_path))
        process = start_sweep(protocol_path, killed_dir)
        # wait until this process has planned its populations, then kill it at a random moment
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if any(e["event"] == "population_start" and e["pid"] == process.pid for e in read_log(log_path)):
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.2))
        killed = process.poll() is None
        if killed:
            os.killpg(process.pid, signal.SIGKILL)
            n_killed_mid_sweep += 1
        process.wait(timeout=30)
        _assert_stale_lock_taken_over(process.stdout.read().decode(), stale)
        time.sleep(0.2)  # let the killed workers' process group go
        snapshots.append((len(read_log(log_path)), snapshot(files)))
    assert n_killed_mid_sweep >= 2, "the sweep finished before it could be killed: make it longer"

    stale = lock_record.exists()
    assert n_stale + stale >= 1, "no sweep was killed while holding its lock: make it longer"
    process = start_sweep(protocol_path, killed_dir)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output
    assert "12 sessions" in output
    _assert_stale_lock_taken_over(output, stale)
    assert not lock_record.exists()  # released by the run that finished

    # exactly the complete set of sessions, identical to an uninterrupted sweep's
    protocol = load_protocol(protocol_path)
    import dataclasses

    reference = run_sweep(dataclasses.replace(protocol, output_dir=str(reference_dir)), n_workers=0,
                          progress=False)
    assert reference.ok
    found = {p.relative_to(killed_dir / "crash") for p in (killed_dir / "crash").rglob("*.nwb")}
    assert found == names
    assert not list((killed_dir / "crash").rglob("*.tmp"))
    assert not (killed_dir / "crash" / ".staging").exists()
    for name in names:
        assert session_content(killed_dir / "crash" / name) == session_content(reference_dir / "crash" / name), name

    # no completed run trained twice: no later sweep planned a session that was complete when it started,
    # and no complete file was ever rewritten
    events = read_log(log_path)
    final = snapshot(files)
    for n_events, complete in snapshots:
        done = {p.parent.name.removeprefix("sub-") for p in complete}
        for event in events[n_events:]:
            if event["event"] == "population_start":
                trained = set(event["write"]) | set(event["recompute"])
                assert not trained & done, f"completed run(s) {trained & done} trained again"
        for path, identity in complete.items():
            assert final[path] == identity, f"{path} was rewritten"
