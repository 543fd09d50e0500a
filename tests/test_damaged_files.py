"""Damaged and foreign files in a recordings folder are reported and skipped, never a crash."""

from pathlib import Path

from virtual_lab.cli import main
from virtual_lab.sessions import partition_session_files, session_path, write_session
from virtual_lab.testing import mock_ground_truth


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


def test_record_and_status_skip_damaged_files(tmp_path, capsys):
    root, good = _folder(tmp_path)
    assert main(["record", str(root), "--rig", "paper-gaussian", "--set", "n_checkpoints=3",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") >= 3 and "Traceback" not in err
    assert len(list((tmp_path / "out").rglob("*.nwb"))) == len(good)
    code = main(["status", str(root)])
    out = capsys.readouterr().out
    assert "corrupted" in out and "not_hdf5" in out
    assert code in (0, 1)


def test_decode_skips_damaged_files(tmp_path, capsys, caplog):
    root, _ = _folder(tmp_path)
    code = main(["decode", str(root), "--output-dir", str(tmp_path / "dec")])
    assert code == 0 and "Traceback" not in capsys.readouterr().err
    assert (tmp_path / "dec" / "decode.csv").is_file()
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 3
