"""The README's commands run as written, pasted one line at a time, on tiny settings.

Every fenced ``bash`` block of README.md is split into lines, and each line must be a whole command (no
backslash continuation, balanced quotes), because users and doc-runners paste line by line. Each
``virtual-lab`` command is then run verbatim, in order, in a scratch folder laid out like the repository
(``protocols/``, ``protocols/rigs/``) whose bundled protocols are shrunk to a few tiny networks (same
rules, rigs and decoders; fewer, smaller, shorter runs), so the whole README runs in about a minute. The
``pip install`` steps are the README's two install commands and are not run here (CI runs them). Every
fenced ``python`` block is executed in the same folder. ``virtual-lab bench`` lines get size flags
appended (argparse keeps the last value), the one change to a command's words, because a benchmark's
sizes are its point.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Protocol keys shrunk in the scratch copies (the protocol's structure is kept).
TINY_VALUES = {
    "n_probe": "40", "hidden_sizes": "[16, 16]", "n_epochs": "1", "batch_size": "32", "n_seeds": "3",
    "learning_rate_scales": "[0.5, 2.0]", "n_splits": "3", "n_permutations": "2", "models": '["logistic"]',
    "widths": "[16]", "depths": "[2]", "batch_sizes": "[32]",
}
BENCH_TINY = ["--architectures", "mlp", "--networks", "4", "--epochs", "1", "--hidden-sizes", "16",
              "--reference-networks", "2", "--reference-steps", "5", "--peak-size", "64"]


def fenced_blocks(text: str, language: str) -> list[str]:
    """Bodies of the fenced code blocks of one language, in order."""
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M)]


def shell_commands(text: str) -> list[str]:
    """Every command of the README's bash blocks, one per line, ``&&`` chains split."""
    commands = []
    for block in fenced_blocks(text, "bash"):
        for line in block.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            commands.extend(part.strip() for part in line.split("&&"))
    return commands


def tiny_protocol(text: str) -> str:
    for key, value in TINY_VALUES.items():
        text = re.sub(rf"^(\s*{key}\s*=\s*)[^#\n]*", rf"\g<1>{value}  ", text, flags=re.M)
    return text


def test_every_shell_line_is_a_whole_command():
    text = README.read_text(encoding="utf-8")
    for block in fenced_blocks(text, "bash"):
        for line in block.splitlines():
            assert not line.rstrip().endswith("\\"), f"README line continues onto the next: {line!r}"
            shlex.split(line)  # balanced quotes
    assert "pip install -e . && virtual-lab run protocols/quickstart.toml" in text
    assert 'pip install -e ".[test]" && python -m pytest' in text


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "protocols" / "rigs", folder / "protocols" / "rigs")
    for path in (ROOT / "protocols").glob("*.toml"):
        (folder / "protocols" / path.name).write_text(tiny_protocol(path.read_text(encoding="utf-8")))
    return folder


def test_readme_commands_run_on_tiny_settings(workspace, monkeypatch):
    from virtual_lab.cli import main

    monkeypatch.chdir(workspace)
    text = README.read_text(encoding="utf-8")
    ran = 0
    for command in shell_commands(text):
        words = shlex.split(command)
        if words[:2] == ["pip", "install"]:
            continue
        if words[:3] == ["python", "-m", "pytest"]:
            continue  # that is this suite
        assert words[0] == "virtual-lab", f"README command the test does not know how to run: {command!r}"
        argv = words[1:] + (BENCH_TINY + ["--output", str(workspace / "bench.json")] if words[1] == "bench" else [])
        assert main(argv) == 0, command
        ran += 1
    assert ran >= 2


def test_readme_python_blocks_run(workspace, monkeypatch, capsys):
    from virtual_lab.cli import main

    monkeypatch.chdir(workspace)
    if not (workspace / "recordings" / "quickstart").is_dir():
        assert main(["run", "protocols/quickstart.toml", "-q"]) == 0
    blocks = fenced_blocks(README.read_text(encoding="utf-8"), "python")
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
