"""Shared helpers for the tutorials (not a tutorial itself).

``VIRTUAL_LAB_TUTORIAL_TINY=1`` shrinks every tutorial to a few seconds of compute; the test suite runs
them that way so they never rot. Figures go to ``tutorial_output/`` under the current directory.
"""

import os
from pathlib import Path

TINY = os.environ.get("VIRTUAL_LAB_TUTORIAL_TINY", "") not in ("", "0")
OUTPUT = Path(os.environ.get("VIRTUAL_LAB_TUTORIAL_OUTPUT", "tutorial_output"))
OUTPUT.mkdir(parents=True, exist_ok=True)
REPO = Path(__file__).resolve().parents[1]
