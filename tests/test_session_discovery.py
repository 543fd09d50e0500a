"""Tests of virtual_lab.sessions.find_sessions: one search of session files for every command."""

import logging
import os

os.environ.setdefault("PYNWB_NO_CACHE_DIR", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pynwb  # noqa: E402
import pytest  # noqa: E402

from virtual_lab.sessions import (TEMPORARY, SessionFiles, describe_session_file, find_sessions,  # noqa: E402
                                  partition_session_files, read_session_metadata, session_candidates,
                                  session_path, write_session)
from virtual_lab.testing import mock_ground_truth  # noqa: E402

#: The kind every file of the mixed folder must get.
EXPECTED_KINDS = {
    "truncated_ses-groundtruth.nwb": "corrupted",
    "empty_ses-groundtruth.nwb": "not_hdf5",
    "random_ses-groundtruth.nwb": "not_hdf5",
    "foreign_ses-groundtruth.nwb": "foreign",
    ".sub-b_ses-groundtruth.nwb.tmp": TEMPORARY,
    "sub-c_ses-groundtruth.nwb": TEMPORARY,  # staged in .staging/, not yet committed
}


def _write_foreign(path: Path) -> Path:
    """An NWB file written with plain pynwb (not by virtual_lab)."""
    from pynwb.testing.mock.file import mock_NWBFile

    nwbfile = mock_NWBFile()
    nwbfile.add_acquisition(pynwb.TimeSeries(name="x", data=np.zeros((4, 2)), unit="volts", rate=10.0))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A recordings folder: one good session next to every kind of file that is not one."""
    root = tmp_path_factory.mktemp("mixed") / "rec"
    gt = mock_ground_truth(run_id="good")
    good = write_session(gt, session_path(root, gt.run_id, "groundtruth"))
    data = good.read_bytes()
    (root / "truncated_ses-groundtruth.nwb").write_bytes(data[: len(data) // 2])
    (root / "empty_ses-groundtruth.nwb").write_bytes(b"")
    (root / "random_ses-groundtruth.nwb").write_bytes(np.random.default_rng(0).bytes(4096))
    _write_foreign(root / "foreign_ses-groundtruth.nwb")
    (root / "sub-b").mkdir()
    (root / "sub-b" / ".sub-b_ses-groundtruth.nwb.tmp").write_bytes(data)  # a write not yet renamed
    staged = root / ".staging" / "pop-1234"
    staged.mkdir(parents=True)
    (staged / "sub-c_ses-groundtruth.nwb").write_bytes(data)
    (root / "notes.txt").write_text("not a session")
    return root, good


def test_every_file_of_a_mixed_folder_is_classified(mixed, caplog):
    root, good = mixed
    with caplog.at_level(logging.WARNING, logger="virtual_lab.sessions"):
        found = find_sessions(root)
    assert isinstance(found, SessionFiles)
    assert found.complete == (good.resolve(),)
    assert {s.path.name: s.kind for s in found.skipped} == EXPECTED_KINDS
    assert {s.path.name for s in found.bad} == {n for n, k in EXPECTED_KINDS.items() if k != TEMPORARY}
    assert all(s.reason and "\n" not in s.reason for s in found.skipped)
    assert found.metadata[found.complete[0]] == read_session_metadata(good)
    # one warning per skipped file, naming it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(EXPECTED_KINDS)
    for skipped in found.skipped:
        assert sum(str(skipped.path) in w and skipped.kind in w for w in warnings) == 1
    # the per-file kinds are describe_session_file's (the check every command shares)
    for skipped in found.bad:
        assert describe_session_file(skipped.path)[:2] == (skipped.kind, skipped.reason)
    complete, listed = partition_session_files([s.path for s in found.bad] + [good])
    assert complete == [good.resolve()]
    assert {p.name: reason.split(":")[0] for p, reason in listed} == {s.path.name: s.kind for s in found.bad}


def test_paths_are_absolute_whatever_the_working_directory(mixed, monkeypatch):
    root, good = mixed
    monkeypatch.chdir(root.parent)
    found = find_sessions("rec")
    assert found.complete == (good.resolve(),) and found.complete[0].is_absolute()
    assert all(s.path.is_absolute() for s in found.skipped)
    (only,) = find_sessions([Path("rec") / good.relative_to(root)]).complete
    assert only.is_absolute() and only == good.resolve()


def test_strict_raises_naming_the_first_bad_file(mixed):
    root, _ = mixed
    with pytest.raises(ValueError, match=r"empty_ses-groundtruth\.nwb: not a complete session \(not_hdf5: empty"):
        find_sessions(root, strict=True)
    # temporary files are never sessions, strict or not
    root_only_good = find_sessions([p for p in sorted(root.rglob("*.nwb*"))
                                    if p.name.startswith(("sub-good", ".sub-b"))], strict=True)
    assert [s.kind for s in root_only_good.skipped] == [TEMPORARY]


def test_explicit_files_keep_their_order_without_duplicates(tmp_path):
    paths = [write_session(mock_ground_truth(seed=i, run_id=f"r{i}"), tmp_path / f"{name}.nwb")
             for i, name in enumerate(["b", "a", "c"])]
    found = find_sessions([paths[0], paths[1], paths[0], paths[2]])
    assert found.complete == tuple(p.resolve() for p in paths) and found.skipped == ()


def test_kind_selects_ground_truth_names_in_folders(tmp_path):
    gt = mock_ground_truth(run_id="net")
    truth = write_session(gt, session_path(tmp_path / "rec", gt.run_id, "groundtruth"))
    other = write_session(gt, session_path(tmp_path / "rec", gt.run_id, "rig2p"))
    assert find_sessions(tmp_path / "rec").complete == (truth.resolve(),)
    assert find_sessions(tmp_path / "rec", kind="any").complete == (truth.resolve(), other.resolve())
    # a folder without any *_ses-groundtruth.nwb: every *.nwb (sessions written under other ids)
    plain = write_session(gt, tmp_path / "plain" / "s.nwb")
    assert find_sessions(tmp_path / "plain").complete == (plain.resolve(),)
    # a file named explicitly is checked whatever its name
    assert find_sessions(other).complete == (other.resolve(),)
    with pytest.raises(ValueError, match=r"kind='truth' is not available"):
        find_sessions(tmp_path / "rec", kind="truth")


def test_a_path_without_sessions_is_one_line_naming_it(tmp_path, mixed):
    with pytest.raises(ValueError, match=r"^.*nowhere: no such file or folder$"):
        find_sessions(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^.*empty: no NWB session file \(\*\.nwb\) in this folder$"):
        find_sessions(tmp_path / "empty")
    assert find_sessions(tmp_path / "empty", allow_empty=True) == SessionFiles((), ())
    with pytest.raises(ValueError, match="nowhere: no such file or folder"):
        find_sessions(tmp_path / "nowhere", allow_empty=True)
    (tmp_path / "tmp-only").mkdir()
    (tmp_path / "tmp-only" / ".x.nwb.tmp").write_bytes(b"half")
    with pytest.raises(ValueError, match=r"tmp-only: no NWB session file .* \(only 1 temporary file\(s\)\)$"):
        find_sessions(tmp_path / "tmp-only")
    root, _ = mixed
    damaged = [root / name for name in ("truncated_ses-groundtruth.nwb", "empty_ses-groundtruth.nwb")]
    with pytest.raises(ValueError, match=r"no complete session \(2 file\(s\) skipped; first: .*truncated"):
        find_sessions(damaged)
    none = find_sessions(damaged, allow_empty=True)
    assert none.complete == () and [s.kind for s in none.skipped] == ["corrupted", "not_hdf5"]
    with pytest.raises(ValueError, match="no session files or folders given"):
        find_sessions([])
    with pytest.raises(TypeError, match="session paths must be str or path-like"):
        find_sessions([3])


def test_candidates_are_every_nwb_file_unopened(mixed):
    root, good = mixed
    candidates, temporaries = session_candidates(root)
    assert {p.name for p in candidates} == {good.name} | {n for n, k in EXPECTED_KINDS.items() if k != TEMPORARY}
    assert {p.name for p in temporaries} == {n for n, k in EXPECTED_KINDS.items() if k == TEMPORARY}
    assert candidates == sorted(candidates)
