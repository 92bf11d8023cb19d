"""The trajectory study end to end, tiny (benchmarks/trajectory.py with configs/trajectory_tiny.yaml): real refine
(MiniLM teacher on LISA), three real SmolLM2 LoRA steps, the base and one checkpoint, ADI in all four modes
(full/light x 16/4 bits) in processes of their own; the JSON has every field and every number is finite, and a
second run recomputes no cell. No timing assertions."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "lisa").is_dir()
                                and not os.environ.get("LINQ_DATA_DIR"), reason="needs the real data")


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


def test_tiny_trajectory_study(tmp_path: Path) -> None:
    configs = {}
    for name in ("trajectory_tiny", "refine_tiny", "fit_tiny"):
        configs[name] = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    configs["refine_tiny"].update(output_dir=str(tmp_path / "refine" / "data"), report_dir=str(tmp_path / "refine"))
    configs["trajectory_tiny"].update(refine=str(tmp_path / "refine_tiny.yaml"), fit=str(tmp_path / "fit_tiny.yaml"),
                                      work=str(tmp_path / "work"), out=str(tmp_path / "out"))
    for name, content in configs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(content))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / "trajectory.py"), str(tmp_path / "trajectory_tiny.yaml")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "out"
    study = json.loads((out / "trajectory.json").read_text())
    assert [c["name"] for c in study["checkpoints"]] == ["base", "homogeneous-3"]
    assert [r["mode"] for r in study["modes"]] == ["full16", "light16", "full4", "light4"]
    for row in study["modes"]:
        assert set(row) >= {"kendall_tau", "significant_pairs_reversed", "best", "truth_best", "best_gap_in_truth",
                            "gate_agreement", "cost"}
        assert row["cost"]["tokens"] > 0 and row["cost"]["wall_seconds"] > 0
    for mode, verdicts in study["gate"].items():
        assert set(verdicts["vs_base"]) <= {"PASS", "FAIL", "CANNOT DECIDE"}, mode
    assert study["held_out_queries"] == 35
    assert all(math.isfinite(x) for x in _numbers(study))
    for cell in (out / "cells").glob("*/*.json"):
        scores = json.loads(cell.read_text())["tasks"]
        assert all(math.isfinite(v) for t in scores.values() for v in t["per_query"].values())
    assert len(list((out / "cells").glob("*/*.json"))) == 8
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "final_adapter" / "adapter_config.json").is_file()

    # resumable: a second run trains nothing and evaluates no cell again
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/*.json")}
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/*.json")} == stamps
