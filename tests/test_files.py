"""The files we write: atomic, inside their folder, and readable as ``open()`` would have made them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from linq_eval.core.files import atomic_write_json, atomic_write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_file_gets_the_mode_open_would_give(tmp_path: Path, umask: int, expected: int) -> None:
    """mkstemp's temp file is 0o600: renamed as it was, every result and baseline was private to its writer."""
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "result.json", {"score": 0.5})
        with (tmp_path / "plain.json").open("w") as handle:
            handle.write("{}")
    finally:
        os.umask(old)
    assert mode(path) == expected == mode(tmp_path / "plain.json")


def test_a_rewritten_file_keeps_its_own_mode(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "baseline.json", "{}")
    path.chmod(0o640)
    atomic_write_text(path, '{"a": 1}')
    assert mode(path) == 0o640 and path.read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]  # no temp file left beside it


def test_a_command_writes_files_others_can_read(tmp_path: Path) -> None:
    """End to end: the gate's report (written even when it cannot run, for CI) under the usual umask 022."""
    exe = Path(sys.executable).parent / "linq-eval"
    out = tmp_path / "gate"
    script = f"umask 022 && exec {exe} gate {tmp_path / 'ckpt'} --baseline missing --dir {tmp_path} --out {out}"
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    written = sorted(out.rglob("*.*"))
    assert written and all(mode(p) == 0o644 for p in written), [(p.name, oct(mode(p))) for p in written]
