"""Every tutorial runs end to end on tiny settings (VIRTUAL_LAB_TUTORIAL_TINY=1)."""

import os
import runpy
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTUAL_LAB_TUTORIAL_TINY", "1")
    monkeypatch.setenv("VIRTUAL_LAB_TUTORIAL_OUTPUT", str(tmp_path / "out"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(path.parent))
    sys.modules.pop("_common", None)
    runpy.run_path(str(path), run_name="__main__")
    assert any((tmp_path / "out").glob("*.png")), "a tutorial should produce at least one figure"
    text = path.read_text()
    assert "**Question.**" in text and "**Time.**" in text
