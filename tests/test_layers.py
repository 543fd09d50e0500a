"""The floors of DESIGN.md section 2 hold: the import-linter contracts of pyproject.toml are kept.

A module imports only from its own floor or below, never from above, not even inside a function body
(cli > commands > pipeline | bench | testing > sweeps > protocol > analysis > rig > sessions > lab > ground
floor); the package's ``__init__`` and the ground floor never import torch, pynwb, hdmf, h5py or scikit-learn;
the rig, the sessions and the protocol files never import torch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter", reason="import-linter is in the 'test' extra: pip install -e '.[test]'")


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("lint-imports")
    command = [str(script)] if script.is_file() else [shutil.which("lint-imports") or "lint-imports"]
    return subprocess.run([*command, "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept():
    result = lint_imports()
    report = result.stdout + result.stderr
    assert "Contracts: " in report, report
    assert result.returncode == 0, "an import crosses the floors of DESIGN.md section 2:\n" + report
    assert "0 broken" in report, report


def test_the_contracts_catch_an_import_from_a_higher_floor(tmp_path):
    """The same contracts over a copy of the package with one upward import: the check fails and names it.

    (``lint-imports`` puts its working directory first on ``sys.path``, so it analyses the copy.)
    """
    shutil.copytree(ROOT / "virtual_lab", tmp_path / "virtual_lab",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    seeding = tmp_path / "virtual_lab" / "seeding.py"
    seeding.write_text(seeding.read_text(encoding="utf-8") + "\n\ndef _upward():\n    import virtual_lab.sweeps.run\n",
                       encoding="utf-8")
    result = lint_imports(cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode != 0, report
    assert "virtual_lab.seeding is not allowed to import virtual_lab.sweeps" in report, report
