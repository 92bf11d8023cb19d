"""``compare``'s output: a rich table, ``compare.json``, ``compare.md`` and ``compare.png`` under ``--out``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linq_eval.compare.job import throughput
from linq_eval.core.console import console
from linq_eval.core.files import atomic_write_figure, atomic_write_json, atomic_write_text


def _ci(pair: list[float]) -> str:
    return f"[{pair[0]:+.4f}, {pair[1]:+.4f}]"


def _verdict(r: dict[str, Any]) -> str:
    text = r["verdict"]
    if r["verdict"] == "inconclusive" and r["queries_to_decide"]:
        text += f" (~{r['queries_to_decide']} queries)"
    return text + (" ⚠ margin < noise" if r["margin_below_noise"] else "")


def _gib(n: float | None) -> str:
    return f"{n / 2**30:.2f}" if n else "-"


def print_report(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    ref = report["reference_bits"]
    table = Table(title=f"compare vs {ref} bits, margin {report['margin']}")
    for col in ("system", "task", "bits", "score", f"{ref}-bit", "Δ", "90% CI", "p", "A/A noise", "verdict"):
        table.add_column(col, justify="left" if col in ("system", "task", "verdict") else "right")
    for r in report["rows"]:
        noise = f"{r['noise_floor']:.4f}" if r["noise_floor"] is not None else "-"
        table.add_row(r["system"], r["task"], str(r["bits"]), f"{r['score']:.4f}", f"{r['reference_score']:.4f}",
                      f"{r['difference']:+.4f}", _ci(r["ci90"]), f"{r['p_value']:.3f}", noise, _verdict(r))
    out = console()
    out.print(table)
    out.print(f"rule: {report['rule']}")
    cost = Table(title="cost and similarity per precision (ratios to the reference)")
    for col in ("system", "bits", "status", "load s", "eval s", "tokens/s", "weights GiB", "peak RSS GiB",
                "weights ×", "time ×", "cos mean/min", "score r"):
        cost.add_column(col, justify="left" if col in ("system", "status") else "right")
    for p in report["precisions"]:
        c, ratio, sim = p.get("cost") or {}, p.get("cost_ratio") or {}, p.get("similarity") or {}
        # a crash's reason is the child's last stderr line, e.g. a gloo error "[.../pair.cc:553] ...": not markup
        status = p["status"] if p["status"] == "ok" else escape(f"{p['status']}: {p['reason']}")
        cost.add_row(escape(p["system"]), str(p["bits"]), status, f"{c['load_seconds']:.1f}" if c else "-",
                     f"{c['eval_seconds']:.1f}" if c else "-",
                     f"{throughput(c['encode']):.0f}" if c and throughput(c["encode"]) else "-",
                     _gib(c.get("weight_bytes")), _gib(c.get("peak_rss_bytes")),
                     f"{ratio['weight_bytes']:.2f}" if ratio.get("weight_bytes") else "-",
                     f"{ratio['eval_seconds']:.2f}" if ratio.get("eval_seconds") else "-",
                     f"{sim['cosine_mean']:.4f}/{sim['cosine_min']:.4f}" if sim else "-",
                     f"{sim['score_pearson']:.4f}" if sim else "-")
    out.print(cost)
    for r in report["rankings"]:
        taus = ", ".join(f"{t} {v:+.2f}" for t, v in r["per_task"].items())
        out.print(f"Kendall tau of the systems' order, {r['bits']} vs {ref} bits: average "
                  f"{r['average']:+.2f}; per task: {taus}")
    for g in report.get("gate_verdicts", []):
        out.print(_gate_line(g))


def _gate_line(g: dict[str, Any]) -> str:
    verdicts = ", ".join(f"{b} bits {v or 'not run'}" for b, v in g["verdicts"].items())
    kept = {True: "preserved", False: "NOT preserved", None: "not comparable"}[g["preserved"]]
    return f"gate verdict of {g['system']} vs {g['baseline']} (delta {g['delta']:g}): {verdicts}: {kept}"


def markdown(report: dict[str, Any]) -> str:
    ref = report["reference_bits"]
    lines = [f"# compare: {', '.join(map(str, report['bits']))} bits (reference {ref}), margin {report['margin']}",
             "", report["rule"], "",
             f"| system | task | bits | score | {ref}-bit | Δ | 90% CI | p | A/A noise | verdict |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in report["rows"]:
        noise = f"{r['noise_floor']:.4f}" if r["noise_floor"] is not None else "-"
        lines.append(f"| {r['system']} | {r['task']} | {r['bits']} | {r['score']:.4f} | {r['reference_score']:.4f} "
                     f"| {r['difference']:+.4f} | {_ci(r['ci90'])} | {r['p_value']:.3f} | {noise} | {_verdict(r)} |")
    failed = [p for p in report["precisions"] if p["status"] != "ok"]
    lines += ["", *[f"- {p['system']} at {p['bits']} bits: {p['status']} ({p['reason']})" for p in failed]]
    lines += [f"- {_gate_line(g)}" for g in report.get("gate_verdicts", [])]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low_bits = report["bits"][1:]
    fig, axes = plt.subplots(1, len(low_bits), figsize=(5 * len(low_bits), 4.6), squeeze=False)
    for ax, bits in zip(axes[0], low_bits, strict=True):
        rows = [r for r in report["rows"] if r["bits"] == bits]
        for i, system in enumerate(report["systems"]):
            mine = [r for r in rows if r["system"] == system]
            x = [r["reference_score"] for r in mine]
            y = [r["score"] for r in mine]
            err = [[r["difference"] - r["ci90"][0] for r in mine], [r["ci90"][1] - r["difference"] for r in mine]]
            ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=2, color=f"C{i}", label=system)
        scores = [v for r in rows for v in (r["score"], r["reference_score"])]
        if scores:
            ax.plot([min(scores), max(scores)], [min(scores), max(scores)], color="grey", lw=0.8)
        ax.set_xlabel(f"main score, {report['reference_bits']} bits", fontsize=8)
        ax.set_ylabel(f"main score, {bits} bits (90% CI of the difference)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> None:
    """compare.json (strict JSON: NaN, e.g. the tau of tied scores, as null), compare.md, compare.png; atomically."""
    from linq_eval.core.stats import finite_or_none

    atomic_write_json(out / "compare.json", finite_or_none(report), default=str)
    atomic_write_text(out / "compare.md", markdown(report))
    if report["rows"]:
        plot(report, out / "compare.png")
