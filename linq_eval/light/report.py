"""``linq-eval light validate``: run the fidelity checks over tasks, print a rich table, write JSON and PNGs."""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

from linq_eval.core.console import console
from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_figure, atomic_write_text
from linq_eval.core.light_manifest import LightManifest, available, load_manifest, manifest_path
from linq_eval.light.validate import (
    MINILM,
    PANELS,
    TaskPanel,
    choose_defaults,
    encode_seconds,
    fidelity,
    meets_targets,
    prepare,
    summarise_sweep,
    sweep,
)

logger = logging.getLogger(__name__)


def check_light_names(names: list[str]) -> list[LightManifest]:
    """The manifests of these light sets (all shipped ones when empty), checked before anything loads."""
    names = names or available()
    if not names:
        raise LinqEvalError("no light manifests found: build one with `linq-eval light build TASK`")
    manifests = []
    for name in names:
        light = name if name.endswith("-light") else name + "-light"
        manifests.append(load_manifest(manifest_path(light)))
    return manifests


def validate(manifests: list[LightManifest], out: Path, *, do_sweep: bool = False,
             timing: list[str] | None = None, panel: str = "default") -> dict:
    """Fidelity of each light set at its own parameters (and over the sweep grid); writes ``out/*.json|png``."""
    import mteb

    from linq_eval.tasks.light import data_fingerprint

    systems = PANELS[panel]
    out.mkdir(parents=True, exist_ok=True)
    rows, sweep_rows = [], []
    for manifest in manifests:
        task = mteb.get_task(manifest.source_task)
        task.load_data()
        if data_fingerprint(task) != manifest.data:
            raise LinqEvalError(f"{manifest.name} was built on other data than {manifest.source_task} now loads: "
                                f"rebuild it with `linq-eval light build {manifest.source_task}`")
        t0 = time.perf_counter()
        tp = prepare(task, systems, split=manifest.split)  # the manifest's split, not a default
        row = fidelity(tp, manifest)
        row["targets"] = meets_targets(row)
        if timing is not None and (not timing or {manifest.name, manifest.source_task} & set(timing)):
            row["wall_seconds"] = _timing(tp, manifest)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if do_sweep:
            sweep_rows.extend(sweep(tp))
            summary = summarise_sweep(sweep_rows)
            _write(out / "sweep.json", {"machine": _machine(), "chosen": choose_defaults(summary),
                                        "summary": summary, "rows": sweep_rows})
        _write(out / "validation.json", {"machine": _machine(), "panel": [_panel_row(s) for s in systems],
                                         "tasks": rows})
    plot_light_vs_full(rows, out / "light_vs_full.png")
    if sweep_rows:
        plot_fidelity_cost(sweep_rows, out / "fidelity_cost.png")
    summary = summarise_sweep(sweep_rows) if sweep_rows else []
    return {"tasks": rows, "sweep": sweep_rows, "summary": summary,
            "chosen": choose_defaults(summary) if summary else None}


def _timing(tp: TaskPanel, manifest: LightManifest) -> dict[str, float]:
    """Wall time of all-MiniLM-L6-v2 encoding the light corpus and the full corpus, afresh, in this run."""
    texts = tp.data.doc_text()
    light = encode_seconds(MINILM, [texts[d] for d in manifest.corpus_ids])
    full = encode_seconds(MINILM, list(texts.values()))
    return {"model": MINILM, "light": light, "full": full, "ratio": full / light if light else float("nan")}


def _panel_row(system: Any) -> dict[str, Any]:  # noqa: ANN401
    return {"name": system.name, "ref": system.ref, "kind": system.kind, "bits": system.bits,
            "max_length": system.max_length, "random_init": system.random_init, "params": dict(system.params)}


def _machine() -> dict[str, Any]:
    import os

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count()}


def _write(path: Path, payload: dict) -> None:
    # NaN stays NaN here (a tau over tied systems), so not atomic_write_json, which refuses it
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True, default=float) + "\n")


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="light vs full: (a) full corpus, same queries; (b) full task, all queries")
    for col in ("task", "queries", "docs", "docs ×", "rev (a)", "τ (a)", "rev (b)", "wrong dir (b)", "τ (b)",
                "ρ (b)", "infl. non-pooled", "MDE"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for r in rows:
        a, b = r["vs_full_corpus"], r["vs_full_task"]
        table.add_row(
            r["task"], f"{r['queries']}/{r['full_queries']}", f"{r['docs']}/{r['full_docs']}",
            f"{r['full_docs'] / r['docs']:.1f}", f"{a['reversals']}/{a['significant_pairs']}", f"{a['kendall_tau']:.3f}",
            f"{b['reversals']}/{b['significant_pairs']}", f"{b['wrong_direction']}/{b['light_significant_pairs']}",
            f"{b['kendall_tau']:.3f}", f"{b['spearman']:.3f}", f"{r['inflation']['non_pooled_mean']:+.4f}",
            f"{r['mde_median_pair']:.3f}")
    console().print(table)


def print_sweep(summary: list[dict[str, Any]], chosen: dict[str, Any] | None) -> None:
    """The sweep, one line per configuration, worst case over tasks and seeds; the chosen defaults marked."""
    from rich.table import Table

    table = Table(title="sweep: worst case over tasks and seeds (* = cheapest meeting (a) and (b), >= 200 queries)")
    for col in ("pool", "depth", "queries", "rev (a)", "τ (a) min", "wrong (b)", "τ (b) min", "τ sampling min",
                "docs kept", "union ×"):
        table.add_column(col, justify="left" if col == "pool" else "right")
    for c in summary:
        mark = "*" if c is chosen or c == chosen else ""
        table.add_row(mark + c["retrievers"].replace("pypi:", ""), str(c["depth"]),
                      "all" if c["queries"] >= 10**6 else str(c["queries"]), str(c["a_reversals_max"]),
                      f"{c['a_tau_min']:.3f}", str(c["b_wrong_direction_max"]), f"{c['b_tau_min']:.3f}",
                      f"{c['sampling_tau_min']:.3f}", f"{c['doc_fraction_mean']:.0%}", f"{c['union_doc_reduction']:.1f}")
    console().print(table)


def plot_light_vs_full(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per task: each system's light score against its full-corpus score on the same queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(rows))
    nrows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 4 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, rows, strict=False):
        for s in r["systems"]:
            x, y = s["full_corpus_same_queries"], s["light"]
            ax.scatter(x, y, marker="s" if s["pooled"] else "o", color="tab:red" if s["pooled"] else "tab:blue")
            ax.annotate(s["name"], (x, y), fontsize=6, xytext=(3, -3), textcoords="offset points")
        lo = min(min(s["full_corpus_same_queries"], s["light"]) for s in r["systems"])
        hi = max(max(s["full_corpus_same_queries"], s["light"]) for s in r["systems"])
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_title(f"{r['task']} ({r['docs']}/{r['full_docs']} docs)", fontsize=8)
        ax.set_xlabel("nDCG@10, full corpus", fontsize=7)
        ax.set_ylabel("nDCG@10, light corpus", fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle("light vs full (squares: pooled systems)", fontsize=9)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)


def plot_fidelity_cost(rows: list[dict[str, Any]], path: Path) -> None:
    """Fidelity (Kendall tau vs full corpus and vs full task) against the documents kept, over the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3 * len(tasks)), squeeze=False)
    colours = {}
    for t, (ax_a, ax_b) in zip(tasks, axes, strict=True):
        for r in (r for r in rows if r["task"] == t):
            key = "+".join(x.removeprefix("pypi:") for x in r["retrievers"])
            colour = colours.setdefault(key, f"C{len(colours)}")
            size = 12 + 30 * r["queries"] / r["full_queries"]
            ax_a.scatter(r["doc_fraction"], r["vs_full_corpus"]["kendall_tau"], s=size, color=colour, alpha=0.6,
                         marker="x" if r["vs_full_corpus"]["reversals"] else "o")
            ax_b.scatter(r["doc_fraction"], r["vs_full_task"]["kendall_tau"], s=size, color=colour, alpha=0.6,
                         marker="x" if r["vs_full_task"]["wrong_direction"] else "o")
        ax_a.set_title(f"{t}: (a) vs full corpus, same queries", fontsize=8)
        ax_b.set_title(f"{t}: (b) vs full task (size: query share)", fontsize=8)
        for ax in (ax_a, ax_b):
            ax.set_xscale("log")
            ax.set_xlabel("documents kept (share of corpus)", fontsize=7)
            ax.set_ylabel("Kendall tau", fontsize=7)
            ax.axhline(0.9, color="grey", lw=0.6)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in colours.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=7, title="pool (x: reversal / wrong direction)")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=100)
    plt.close(fig)
