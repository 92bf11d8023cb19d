"""The refinement report: counts kept and dropped per stage and why, score distributions (PNG), timing.

Written to ``<report_dir>/report.json`` and ``<report_dir>/scores.png``; small enough to commit.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from linq_eval.core.files import atomic_write_figure, atomic_write_text
from linq_train.refine.config import RefineConfig
from linq_train.schema import Example

logger = logging.getLogger(__name__)


def summary(values: list[float]) -> dict[str, float | int]:
    """Count, mean and quantiles of finite values (empty -> count 0 only)."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if not data.size:
        return {"count": 0}
    q = np.quantile(data, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"count": int(data.size), "mean": round(float(data.mean()), 4),
            **{k: round(float(v), 4) for k, v in zip(("min", "q25", "median", "q75", "max"), q, strict=True)}}


def score_groups(scored: list[Example], final: list[Example]) -> dict[str, list[float]]:
    """Teacher scores of positives kept and filtered out, of mined negatives, and of synthetic positives."""
    kept = {(e.task, e.query, e.positive_id) for e in final}
    crafted = [e for e in final if not e.source.startswith("synthetic:")]
    return {
        "positives kept": [e.teacher_score for e in scored if (e.task, e.query, e.positive_id) in kept],
        "positives dropped": [e.teacher_score for e in scored if (e.task, e.query, e.positive_id) not in kept],
        "mined negatives": [s for e in crafted for s in e.negative_scores],
        "synthetic positives": [e.teacher_score for e in final if e.source.startswith("synthetic:")],
    }


def plot_scores(groups: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(-0.2, 1.0, 49)
    for label, values in groups.items():
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            ax.hist(finite, bins=bins, histtype="step", density=True, linewidth=1.5, label=f"{label} ({len(finite)})")
    ax.set_xlabel("teacher cosine(query, text)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)


def write_report(cfg: RefineConfig, records: dict[str, dict[str, Any]], scored: list[Example],
                 final: list[Example], dataset_dir: Path) -> dict[str, Any]:
    """Gather the stage records into ``report.json`` and draw ``scores.png``."""
    folder = cfg.resolved_report_dir()
    folder.mkdir(parents=True, exist_ok=True)
    groups = score_groups(scored, final)
    tasks = sorted({e.task for e in scored} | {e.task for e in final} | {s.task for s in cfg.sources})
    per_task = {t: {"examples": sum(e.task == t for e in final),
                    "synthetic": sum(e.task == t and e.source.startswith("synthetic:") for e in final),
                    "negatives per example": round(float(np.mean([len(e.negatives) for e in final if e.task == t]
                                                                  or [0])), 2)} for t in tasks}
    report = {
        "name": cfg.name,
        "description": cfg.description,
        "dataset_dir": str(dataset_dir),
        "final": {"examples": len(final), "per_task": per_task,
                  "empty_tasks": [t for t, c in per_task.items() if not c["examples"]]},
        "stages": {name: {k: v for k, v in r.items() if k != "fingerprint"} for name, r in records.items()},
        "seconds": {**{name: r["seconds"] for name, r in records.items()},
                    "total": round(sum(r["seconds"] for r in records.values()), 2)},
        "scores": {label: summary(values) for label, values in groups.items()},
        "config": cfg.model_dump(mode="json"),
    }
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2, ensure_ascii=False))
    plot_scores(groups, folder / "scores.png", f"{cfg.name}: teacher {cfg.teacher.model}")
    return report
