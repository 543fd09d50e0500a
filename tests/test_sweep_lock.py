"""One writer per sweep folder: a second run is refused naming the holder; a dead holder's lock is taken over."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from virtual_lab.sessions import describe_session_file
from virtual_lab.sessions.checksum import file_sha256
from virtual_lab.sweeps.lock import LOCK_INFO_NAME, LOCK_NAME, SweepLockedError, lock_holder, sweep_lock
from virtual_lab.sweeps.storage import read_log

PROTOCOL = """
name = "twice"
seed = 5
[task]
n_probe = 20
[network]
hidden_sizes = [8]
[training]
n_epochs = 2
batch_size = 64
n_checkpoints = 3
population_size = 2
[sweep]
rules = ["sgdm", "adam", "feedback_alignment"]
n_seeds = 2
"""

ENV = {**os.environ, "PYNWB_NO_CACHE_DIR": "1", "PYTHONWARNINGS": "ignore"}

#: A ``virtual-lab`` process that imports everything and plans the sweep first (loading the task into its cache),
#: then waits for a trigger file before it runs the command line given: it reaches the lock a fraction of a
#: second after the trigger, not after its imports.
WAITING_CLI = """
import pathlib, sys, time
from virtual_lab.cli import main
from virtual_lab.protocol import load_protocol
from virtual_lab.sweeps.plan import plan_sweep
import virtual_lab.analysis.report, virtual_lab.pipeline, virtual_lab.sweeps.run
plan_sweep(load_protocol(sys.argv[3]))
trigger = pathlib.Path(sys.argv[1])
print("ready", flush=True)
while not trigger.exists():
    time.sleep(0.02)
sys.exit(main(sys.argv[2:]))
"""

#: A process that holds a folder's lock until it is killed.
HOLDER = """
import sys, time
from virtual_lab.sweeps.lock import sweep_lock
with sweep_lock(sys.argv[1], command="holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_lock_on_a_folder_is_refused_naming_the_holder(tmp_path):
    with sweep_lock(tmp_path / "rec", command="first") as lock_file:
        assert lock_file == tmp_path / "rec" / LOCK_NAME
        info = lock_holder(tmp_path / "rec")
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"] == "first"
        with pytest.raises(SweepLockedError) as caught:
            with sweep_lock(tmp_path / "rec"):
                pass  # pragma: no cover
        message = str(caught.value)
        assert f"is being written by pid {os.getpid()} on {socket.gethostname()} since " in message
        assert f"(lock file {lock_file})" in message and "\n" not in message
        assert isinstance(caught.value, ValueError)  # the command line: one line, exit status 2
    assert lock_holder(tmp_path / "rec") is None  # released: the info file goes with it
    with sweep_lock(tmp_path / "rec"):
        pass


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    root = tmp_path / "rec"
    root.mkdir()
    pid = _dead_pid()
    (root / LOCK_INFO_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 1.0e9,
                                                   "command": "virtual-lab run p.toml"}))
    with caplog.at_level(logging.WARNING, logger="virtual_lab.sweeps.lock"):
        with sweep_lock(root):
            assert lock_holder(root)["pid"] == os.getpid()
    warnings = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(warnings) == 1 and f"pid {pid} on {socket.gethostname()}" in warnings[0]
    assert "is no longer running" in warnings[0]


def test_a_lock_left_by_another_host_is_refused_and_kept(tmp_path):
    root = tmp_path / "rec"
    root.mkdir()
    info = {"pid": 4242, "host": "some-other-node", "started": 1.0e9, "command": "virtual-lab run p.toml"}
    (root / LOCK_INFO_NAME).write_text(json.dumps(info))
    with pytest.raises(SweepLockedError, match=r"pid 4242 on some-other-node .*remove .*\.sweep\.lock\.json"):
        with sweep_lock(root):
            pass  # pragma: no cover
    assert lock_holder(root) == info  # not removed: it is another host's


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_the_lock_of_a_killed_process_is_free_again(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "rec")], env=ENV,
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(SweepLockedError, match=f"pid {holder.pid} on "):
            with sweep_lock(tmp_path / "rec"):
                pass  # pragma: no cover
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    with caplog.at_level(logging.WARNING, logger="virtual_lab.sweeps.lock"):
        with sweep_lock(tmp_path / "rec"):
            pass
    assert any(f"stale lock of pid {holder.pid}" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_exits_2_naming_the_first(tmp_path):
    protocol = tmp_path / "twice.toml"
    protocol.write_text(PROTOCOL)
    out, trigger = tmp_path / "out", tmp_path / "go"
    command = ["run", str(protocol), "--output-dir", str(out), "--train-only", "--workers", "0", "-q"]
    second = subprocess.Popen([sys.executable, "-c", WAITING_CLI, str(trigger), *command], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert second.stdout.readline().strip() == b"ready"  # imported: it reaches the lock right after the trigger
    first = subprocess.Popen([sys.executable, "-m", "virtual_lab", *command], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    root = out / "twice"
    deadline = time.monotonic() + 120
    while (lock_holder(root) or {}).get("pid") != first.pid:
        assert time.monotonic() < deadline and first.poll() is None, "the first run never took the lock"
        time.sleep(0.02)
    trigger.touch()
    err = second.communicate(timeout=120)[1].decode()
    assert second.returncode == 2, f"the second run was not refused (the first may have ended first): {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"is being written by pid {first.pid} on {socket.gethostname()} since " in lines[0]
    assert f"(lock file {root / LOCK_NAME})" in lines[0]

    output = first.communicate(timeout=180)[0].decode()
    assert first.returncode == 0, output
    assert "6 sessions" in output and "taking over" not in output
    manifest = json.loads((root / "sweep_manifest.json").read_text())
    assert manifest["finished"] and manifest["counts"]["complete"] == 6
    for run in manifest["runs"]:  # every session complete, with the checksum of its bytes
        path = root / run["path"]
        assert describe_session_file(path)[0] == "complete"
        assert run["sha256"] == file_sha256(path) and run["size"] == path.stat().st_size
    assert {e["pid"] for e in read_log(root / "sweep_log.jsonl")} == {first.pid}  # the second wrote nothing
    assert not (root / LOCK_INFO_NAME).exists()
