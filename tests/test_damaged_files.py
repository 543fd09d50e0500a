"""Damaged and foreign files in a recordings folder are reported and skipped, never a crash.

A sweep folder holds one session with 20 KB overwritten in the middle (it still opens: its layout is intact,
an array chunk is not), a truncated, a zero-byte, a random and a foreign NWB file. ``status --verify`` finds
the overwritten session; ``decode``, ``record``, ``power`` and ``inspect`` finish with the other sessions,
name every file they skipped (printed and in their summary) and exit with status 1; ``--strict`` stops them.
"""

import json
import logging
import os
import re
import shutil

os.environ.setdefault("PYNWB_NO_CACHE_DIR", "1")

from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from virtual_lab.cli import main  # noqa: E402
from virtual_lab.protocol import parse_protocol  # noqa: E402
from virtual_lab.sessions import (SessionReadError, check_session_data, describe_session_file,  # noqa: E402
                                  partition_session_files, read_session, session_path, write_session)
from virtual_lab.sessions.checksum import file_sha256  # noqa: E402
from virtual_lab.sweeps.run import run_sweep  # noqa: E402
from virtual_lab.sweeps.status import verify_session  # noqa: E402
from virtual_lab.testing import mock_ground_truth  # noqa: E402

#: 20 KB, overwritten in the middle of one session.
DAMAGE_BYTES = 20 * 1024
#: The kind every bad file of the sweep folder gets (the overwritten session is found when read).
BAD_KINDS = {"trunc_ses-groundtruth.nwb": "corrupted", "zero_ses-groundtruth.nwb": "not_hdf5",
             "random_ses-groundtruth.nwb": "not_hdf5", "foreign_ses-groundtruth.nwb": "foreign"}


def _folder(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "rec"
    good = []
    for seed, rule in enumerate(["sgdm", "sgdm", "adam", "adam"]):
        gt = mock_ground_truth(rule=rule, seed=seed, n_stimuli=20)
        good.append(write_session(gt, session_path(root, gt.run_id, "groundtruth")))
    data = good[0].read_bytes()
    (root / "trunc_ses-groundtruth.nwb").write_bytes(data[: len(data) // 3])
    (root / "random_ses-groundtruth.nwb").write_bytes(b"\x00not hdf5" * 100)
    (root / "empty_ses-groundtruth.nwb").write_bytes(b"")
    return root, good


def test_partition_reports_every_damaged_file(tmp_path):
    root, good = _folder(tmp_path)
    complete, skipped = partition_session_files(sorted(root.rglob("*.nwb")))
    assert sorted(complete) == sorted(good)
    kinds = {p.name: reason.split(":")[0] for p, reason in skipped}
    assert kinds == {"trunc_ses-groundtruth.nwb": "corrupted", "random_ses-groundtruth.nwb": "not_hdf5",
                     "empty_ses-groundtruth.nwb": "not_hdf5"}


def _write_foreign(path: Path) -> Path:
    """An NWB file written with plain pynwb (not by virtual_lab)."""
    import pynwb
    from pynwb.testing.mock.file import mock_NWBFile

    nwbfile = mock_NWBFile()
    nwbfile.add_acquisition(pynwb.TimeSeries(name="x", data=np.zeros((4, 2)), unit="volts", rate=10.0))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def _overwrite_middle(path: Path) -> None:
    """Overwrite 20 KB in the middle of a file with random bytes (checking that they hit an array chunk)."""
    size = path.stat().st_size
    start = size // 2 - DAMAGE_BYTES // 2
    chunks = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.chunks is not None:
                for index in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(index)
                    if info.byte_offset < start + DAMAGE_BYTES and info.byte_offset + info.size > start:
                        chunks.append(name)
        f.visititems(visit)
    assert chunks, "the middle of the session holds no array chunk: make its layers larger"
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(np.random.default_rng(7).bytes(DAMAGE_BYTES))


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    """A sweep folder (8 sessions, 2 rules) with one session overwritten mid-file and four bad files."""
    base = tmp_path_factory.mktemp("damaged")
    protocol = parse_protocol({
        "name": "dmg", "output_dir": str(base), "seed": 3, "task": {"n_probe": 20},
        "network": {"hidden_sizes": [128, 128]}, "training": {"n_epochs": 1, "batch_size": 64, "n_checkpoints": 3},
        "sweep": {"rules": ["sgdm", "adam"], "n_seeds": 4}})
    result = run_sweep(protocol, n_workers=0, progress=False)
    assert result.ok
    root = protocol.recordings_dir
    sessions = sorted(result.session_paths)
    damaged, good = sessions[0], sessions[1:]  # the first: readers that look at one session first skip it
    _overwrite_middle(damaged)
    assert describe_session_file(damaged)[0] == "complete"  # it still opens: only reading its arrays fails
    data = good[0].read_bytes()
    (root / "trunc_ses-groundtruth.nwb").write_bytes(data[: len(data) // 3])
    (root / "zero_ses-groundtruth.nwb").write_bytes(b"")
    (root / "random_ses-groundtruth.nwb").write_bytes(np.random.default_rng(0).bytes(4096))
    _write_foreign(root / "foreign_ses-groundtruth.nwb")
    return root, damaged, good


def _assert_skipped(entries, root, damaged):
    """Every bad file of the sweep folder, and only those, listed with its kind."""
    kinds = {Path(e["path"]).name: e["kind"] for e in entries}
    assert kinds == {**BAD_KINDS, damaged.name: "corrupted"}, kinds
    (reason,) = [e["reason"] for e in entries if Path(e["path"]) == damaged]
    assert "filter returned failure during read" in reason or "damaged" in reason, reason


def test_read_errors_name_the_damaged_file(sweep_folder):
    _, damaged, good = sweep_folder
    for engine in ("h5py", "pynwb"):
        with pytest.raises(SessionReadError, match=re.escape(str(damaged))) as caught:
            read_session(damaged, engine=engine)
        assert isinstance(caught.value, OSError) and isinstance(caught.value, KeyError)
        assert "\n" not in str(caught.value)
    assert check_session_data(damaged).startswith("damaged HDF5 data in ")
    assert check_session_data(good[0]) == ""


def test_status_verify_finds_the_overwritten_session(sweep_folder, capsys, tmp_path):
    root, damaged, good = sweep_folder
    assert main(["status", str(root)]) == 1  # the four bad files; the overwritten session looks complete
    out = capsys.readouterr().out
    for name, kind in BAD_KINDS.items():
        assert re.search(rf"{kind}\s+\S*{name}", out), (name, out)
    assert main(["status", str(root), "--verify", "-q"]) == 1
    out = capsys.readouterr().out
    assert "verified 8 session(s): 7 ok, 0 changed, 0 missing, 1 damaged" in out
    assert re.search(rf"damaged\s+{re.escape(str(damaged))}: damaged HDF5 data in processing/", out), out
    # bytes changed in a way that still reads (appended), and a deleted session
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    changed, gone = copy / good[0].relative_to(root), copy / good[1].relative_to(root)
    with open(changed, "ab") as f:
        f.write(b"\0")
    gone.unlink()
    assert main(["status", str(copy), "--verify", "-q"]) == 1
    out = capsys.readouterr().out
    assert "verified 8 session(s): 5 ok, 1 changed, 1 missing, 1 damaged" in out
    assert re.search(rf"changed\s+{re.escape(str(changed))}: sha256 differs", out)
    assert re.search(rf"missing\s+{re.escape(str(gone))}: no such file", out)
    manifest = {r["path"]: r for r in json.loads((root / "sweep_manifest.json").read_text())["runs"]}
    record = manifest[good[2].relative_to(root).as_posix()]
    assert verify_session(good[2], record["sha256"], record["size"]).state == "ok"
    assert verify_session(good[2], "0" * 64, record["size"]).state == "changed"


def test_decode_finishes_with_the_other_sessions_and_exits_1(sweep_folder, tmp_path, capsys, caplog):
    root, damaged, _ = sweep_folder
    out = tmp_path / "dec"
    with caplog.at_level(logging.WARNING):
        code = main(["decode", str(root), "--output-dir", str(out), "--no-behaviour", "--n-splits", "2",
                     "--decoder", "logistic", "--jobs", "1", "-q"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "skipped 5 input file(s)" in captured.out and str(damaged) in captured.out
    summary = json.loads((out / "summary.json").read_text())
    _assert_skipped(summary["skipped"], root, damaged)
    assert summary["n_networks"] == {"full": 7}
    assert (out / "decode.csv").is_file()
    assert any(r.getMessage().startswith(f"skipping {damaged} (corrupted: ") for r in caplog.records)
    # --strict: the first bad file stops it, before any work
    code = main(["decode", str(root), "--output-dir", str(tmp_path / "strict"), "--strict", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a complete session" in err


def test_record_finishes_with_the_other_sessions_and_writes_checksums(sweep_folder, tmp_path, capsys):
    root, damaged, good = sweep_folder
    out = tmp_path / "rig"
    code = main(["record", str(root), "--rig", "paper-gaussian", "--set", "n_checkpoints=3", "--output-dir",
                 str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert f"skipped {damaged}: corrupted: {damaged}: cannot read the session" in captured.err
    assert "skipped 5 input file(s)" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    _assert_skipped(summary["skipped"], root, damaged)
    written = sorted(out.rglob("*.nwb"))
    assert len(written) == len(good) == summary["n_written"]
    assert {o["path"]: (o["sha256"], o["size"]) for o in summary["outputs"]} == {
        p.relative_to(out).as_posix(): (file_sha256(p), p.stat().st_size) for p in written}
    # --strict: a session failing while it is read stops it, naming the file, in one line
    code = main(["record", str(damaged), str(good[0]), "--rig", "paper-gaussian", "--output-dir",
                 str(tmp_path / "strict"), "--strict", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith(f"virtual-lab: error: {damaged}: cannot read"), err


def test_power_finishes_with_the_other_sessions_and_exits_1(sweep_folder, tmp_path, capsys):
    root, damaged, good = sweep_folder
    out = tmp_path / "power"
    code = main(["power", str(root), "--units", "5", "--noise", "0", "--sessions", "3", "--rig-seeds", "1",
                 "--splits", "2", "--no-pairs", "--animals", "1", "--confirm-fraction", "0.34", "--jobs", "1",
                 "--output-dir", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err, captured.err
    assert "skipped 5 input file(s)" in captured.out and str(damaged) in captured.out
    summary = json.loads((out / "power_summary.json").read_text())
    _assert_skipped(summary["provenance"]["skipped_inputs"], root, damaged)
    # --strict reads every session completely first: the overwritten one stops it, named, in one line
    few = tmp_path / "few"
    for path in (damaged, good[0]):
        (few / path.parent.name).mkdir(parents=True)
        shutil.copy(path, few / path.parent.name / path.name)
    code = main(["power", str(few), "--units", "5", "--noise", "0", "--sessions", "3", "--strict", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and f"{damaged.name}: damaged HDF5 data in " in err[0], err


def test_tables_from_sessions_skips_or_raises_on_a_session_failing_mid_read(sweep_folder):
    from virtual_lab.analysis.session_tables import tables_from_sessions
    from virtual_lab.sessions import SkippedFile

    _, damaged, good = sweep_folder
    skipped = []
    tables, _ = tables_from_sessions([str(good[0]), str(good[-1]), str(damaged)], skipped=skipped)
    assert len(tables["full"].network_id) and [s.path for s in skipped] == [damaged]
    assert isinstance(skipped[0], SkippedFile) and skipped[0].kind == "corrupted"
    with pytest.raises(SessionReadError, match=re.escape(str(damaged))):
        tables_from_sessions([str(good[0]), str(damaged)], strict=True)


def test_inspect_names_every_unreadable_file_on_one_line(sweep_folder, capsys, tmp_path):
    source, damaged, good = sweep_folder
    root = tmp_path / "few"  # the bad files with two of the sessions (nwbinspector takes ~1 s per session)
    root.mkdir()
    for path in [damaged, good[0], *(source / name for name in BAD_KINDS)]:
        shutil.copy(path, root / path.name)
    assert main(["inspect", str(root)]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    for name in ("trunc", "zero", "random"):
        (line,) = [line for line in out.splitlines() if line.startswith(f"ERROR: {root / name}_ses-groundtruth")]
        assert "Unable to read file" in line
    assert re.search(r"file\(s\) could not be read or checked completely .*trunc_ses-groundtruth\.nwb", out)
