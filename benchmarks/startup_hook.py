"""What the ``.pth`` start-up hook costs every Python process: ``python -c pass`` with and without it.

Interleaved runs in one session (machines are noisy), reported as medians and their ratio, with the module
counts. Writes results/benchmarks/startup_hook.json. Run: ``.venv/bin/python benchmarks/startup_hook.py``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from linq_eval.core.files import atomic_write_json

RUNS = 40


def _once(disabled: bool) -> float:
    env = {**os.environ, "LINQ_EVAL_NO_HOOK": "1" if disabled else ""}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t0


def _modules(disabled: bool) -> int:
    env = {**os.environ, "LINQ_EVAL_NO_HOOK": "1" if disabled else ""}
    out = subprocess.run([sys.executable, "-c", "import sys; print(len(sys.modules))"], env=env, check=True,
                         capture_output=True, text=True)
    return int(out.stdout)


def main() -> None:
    times: dict[str, list[float]] = {"hook": [], "no_hook": []}
    for _ in range(RUNS):  # interleaved, so drift hits both alike
        times["hook"].append(_once(False))
        times["no_hook"].append(_once(True))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"python_c_pass_median_ms": {k: round(v * 1000, 2) for k, v in med.items()},
              "hook_cost_ms": round((med["hook"] - med["no_hook"]) * 1000, 3),
              "ratio": round(med["hook"] / med["no_hook"], 3),
              "modules": {"hook": _modules(False), "no_hook": _modules(True)},
              "runs": RUNS, "machine": platform.processor() or platform.machine()}
    out = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "startup_hook.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
