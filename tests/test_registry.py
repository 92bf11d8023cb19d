"""Registration writes into mteb's registries and nothing else: no global hooks in processes that did not ask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_registration_leaves_sys_excepthook_alone() -> None:
    """One-line errors belong to our commands (linq-eval, linq-mteb), not to every process that imports mteb."""
    code = ("import sys; before = sys.excepthook; import mteb, linq_eval; linq_eval.register(); "
            "mteb.get_model_meta('linq'); print(sys.excepthook is before)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "True"
