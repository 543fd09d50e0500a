"""Every invalid input of issue 19 is refused before any work starts: exit 2, one line naming the key, no
traceback, nothing written; `virtual-lab check` and `run --dry-run` print the plan and train nothing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from virtual_lab import pipeline
from virtual_lab.cli import build_parser, main
from virtual_lab.sessions import session_path, write_session
from virtual_lab.testing import mock_ground_truth

TINY = """
name = "tiny"
seed = 5
[task]
n_probe = 20
[network]
hidden_sizes = [8]
[training]
n_epochs = 1
batch_size = 64
n_checkpoints = 3
device = "cpu"
[sweep]
rules = ["sgdm", "adam"]
n_seeds = 3
[[rig]]
name = "full"
[[rig]]
name = "noisy"
noise_sd = 0.5
n_checkpoints = 2
[decoder]
models = ["logistic"]
n_splits = 3
test_fraction = 0.25
"""


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _refused(capsys, argv, key: str, *, also: str = "") -> str:
    """Run ``virtual-lab ARGV`` in this process: exit 2 and one line on stderr naming ``key``."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert err.startswith("virtual-lab: error: ") and "\n" not in err and "Traceback" not in err, err
    assert f"{key}:" in err and also in err, err
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Any training would fail the test: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(pipeline, "run_protocol", refuse)


@pytest.mark.parametrize("old, new, key, also", [
    ('noise_sd = 0.5', 'noise_sd = nan', "rig[1].noise_sd", "nan is out of range (allowed: >= 0)"),
    ('noise_sd = 0.5', 'noise_sd = inf', "rig[1].noise_sd", "inf is out of range"),
    ('n_checkpoints = 2', 'n_checkpoints = 99', "rig[1].n_checkpoints", "the protocol records 3"),
    ('test_fraction = 0.25', 'test_fraction = 1.0', "decoder.test_fraction", "(allowed: > 0 and < 1)"),
    ('device = "cpu"', 'device = "tpu"', "training.device", "'tpu' is not allowed"),
    ('hidden_sizes = [8]', 'hidden_sizes = [100000000, 100000000]', "network.hidden_sizes", "PB of memory"),
    ('n_seeds = 3', 'n_seeds = 1', "sweep.n_seeds", "every rule needs at least 2 networks"),
    ('n_splits = 3', 'n_splits = 10', "decoder.n_splits", "allow only 9 distinct splits"),
    ('rules = ["sgdm", "adam"]', 'rules = ["sgdm"]', "sweep.rules", "at least 2 rules"),
    ('name = "full"', 'name = "full"\nn_units = 50', "rig[0].n_units", "smallest recorded layer has 8"),
])
@pytest.mark.parametrize("command", [["check"], ["run", "-q"], ["run", "--dry-run"]])
def test_invalid_protocols_are_refused_before_training(tmp_path, capsys, no_training, old, new, key, also, command):
    assert old in TINY
    path = tmp_path / "p.toml"
    path.write_text(TINY.replace(old, new, 1))
    out = tmp_path / "out"
    err = _refused(capsys, [*command, str(path), "--output-dir", str(out)], key, also=also)
    assert err.startswith(f"virtual-lab: error: {path}: {key}: ")
    assert _files(tmp_path) == [path]  # nothing written


def test_the_size_message_is_readable(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(TINY.replace('hidden_sizes = [8]', 'hidden_sizes = [100000000, 100000000]'))
    err = _refused(capsys, ["check", str(path)], "network.hidden_sizes")
    # 64 x 1e8 + 1e8 x 1e8 + 1e8 x 10 weights and 2 x 1e8 + 10 biases; the memory it needs in PB, not 10^8 GB
    assert "(MLP 64-100000000-100000000-10) has 10,000,007,600,000,010 parameters" in err
    assert re.search(r"training it needs about \d{3} PB of memory and this machine \(cpu\) has [\d.]+ [GT]B$", err), err


def test_cuda_without_a_device_is_refused(tmp_path, capsys, monkeypatch, no_training):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "p.toml"
    path.write_text(TINY.replace('device = "cpu"', 'device = "cuda"'))
    for command in (["check"], ["run", "-q"]):
        _refused(capsys, [*command, str(path), "--output-dir", str(tmp_path / "out")], "training.device",
                 also="torch.cuda.is_available() is False")
    assert _files(tmp_path) == [path]


@pytest.mark.gpu
def test_cuda_with_a_device_passes_the_check(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    path = tmp_path / "p.toml"
    path.write_text(TINY.replace('device = "cpu"', 'device = "cuda"'))
    assert main(["check", str(path)]) == 0
    assert "cuda worker" in capsys.readouterr().out


def test_check_and_dry_run_print_the_plan_and_write_nothing(tmp_path, capsys, no_training):
    path = tmp_path / "p.toml"
    path.write_text(TINY)
    out = tmp_path / "out"
    for command in (["check"], ["run", "--dry-run"]):
        assert main([*command, str(path), "--output-dir", str(out)]) == 0
        text = capsys.readouterr().out
        assert f"protocol tiny ({path}): valid" in text
        assert "6 networks (sgdm 3, adam 3)" in text
        assert "network-steps: 162" in text  # 6 networks x 1 epoch x (1797 digits - 20 probes) // 64 steps
        assert "about" in text and "GFLOP/s per process and 2.5 ms per population step, measured with virtual-lab bench" in text
        assert "MLP 64-8-10, 610 parameters" in text
    assert _files(tmp_path) == [path]
    # a train-only run needs no decoder settings that split the networks
    path.write_text(TINY.replace("n_seeds = 3", "n_seeds = 1"))
    assert main(["check", str(path), "--train-only"]) == 0
    assert "2 networks (sgdm 1, adam 1)" in capsys.readouterr().out


@pytest.mark.parametrize("setting, key, also", [
    ("noise_sd=nan", "noise_sd", "'nan' is not a finite number"),
    ("noise_sd=-inf", "noise_sd", "not a finite number"),
    ("n_checkpoints=abc", "n_checkpoints", "'abc' is not an integer"),
    ("noise_relative=maybe", "noise_relative", "not true or false"),
    ("calcium.noise_levl=3", "calcium.noise_levl", "did you mean 'calcium.noise_level'"),
    ("noise_sd", "noise_sd", "expected KEY=VALUE"),
])
def test_record_settings_are_parsed_with_the_presets_types(tmp_path, capsys, setting, key, also):
    out = tmp_path / "out"
    err = _refused(capsys, ["record", str(tmp_path), "--rig", "2p-gcamp6f", "--set", setting,
                            "--output-dir", str(out)], key, also=also)
    assert err.startswith("virtual-lab: error: --set: ")
    assert not out.exists()


def test_record_set_nan_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "virtual_lab", "record", str(tmp_path), "--rig", "2p-gcamp6f",
                             "--set", "noise_sd=nan"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "virtual-lab: error: --set: noise_sd: 'nan' is not a finite number"


def test_output_dir_everywhere_and_out_kept_as_an_alias(tmp_path, capsys):
    parser = build_parser()
    for command in (["record", "s", "--rig", "paper-gaussian"], ["power", "r", "--units", "1", "--noise", "0",
                                                                 "--sessions", "2"]):
        assert parser.parse_args([*command, "--output-dir", "d"]).output_dir == Path("d")
        assert parser.parse_args([*command, "--out", "d"]).output_dir == Path("d")
    for command in ("run", "check", "decode", "record", "power"):
        action = {a.dest: a for a in parser._subparsers._group_actions[0].choices[command]._actions}
        assert "--output-dir" in action["output_dir"].option_strings, command
    root = tmp_path / "sessions"
    for seed, rule in enumerate(["sgdm", "adam"]):
        gt = mock_ground_truth(rule=rule, seed=seed, n_stimuli=20)
        write_session(gt, session_path(root, gt.run_id, "groundtruth"))
    assert main(["record", str(root), "--rig", "paper-gaussian", "--set", "n_checkpoints=3", "--set",
                 "noise_sd=0.2", "--output-dir", str(tmp_path / "rec")]) == 0
    assert len(list((tmp_path / "rec").rglob("*.nwb"))) == 2


def test_check_help_ends_with_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example:\n  virtual-lab check protocols/quickstart.toml" in out and "run PROTOCOL --dry-run" in out
