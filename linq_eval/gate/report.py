"""The gate's outputs: a rich table, ``gate.json``, ``junit.xml`` (one test case per task) and ``gate.md``.

All of them are rendered from ``GateReport.to_dict()`` (or, when the gate could not run, :func:`error_record`),
so the JSON is the record and the rest are views of it. JUnit: a task with a Holm-significant drop beyond
2 x delta is a failure; the overall case fails on FAIL and errors on CANNOT DECIDE and on ERROR, so a CI system
never shows an undecided or broken gate as green, nor a broken one as a regression.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from linq_eval.core.console import console
from linq_eval.core.errors import EXIT_ERROR
from linq_eval.core.files import atomic_write_json, atomic_write_text

STYLE = {"PASS": "bold green", "FAIL": "bold red", "CANNOT DECIDE": "bold yellow", "ERROR": "bold red"}


def _f(x: float | None, fmt: str = "+.4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ci(pair: list[float]) -> str:
    return f"[{_f(pair[0])}, {_f(pair[1])}]"


def error_record(checkpoint: str, baseline: str, message: str, *, delta: float | None = None,
                 alpha: float | None = None, seconds: float = 0.0) -> dict[str, Any]:
    """The record of a gate that could not run (bad input, an internal error): verdict ERROR, exit 2, and why.

    The same keys as a decided gate's record, so the JUnit and markdown views and a CI reading gate.json work
    unchanged; ``error`` holds the one-line message.
    """
    return {"verdict": "ERROR", "exit_code": EXIT_ERROR, "error": message, "rule": "the gate could not run",
            "interval": None, "delta": delta, "alpha": alpha, "baseline": baseline, "checkpoint": {"ref": checkpoint},
            "macro": {"difference": None, "ci": [None, None], "mde": None, "queries": 0, "queries_to_decide": None},
            "reasons": [message], "tasks": [], "main_scores": {}, "notes": [], "resumed_tasks": [],
            "seconds": seconds, "provenance": {}}


def headline(r: dict[str, Any]) -> str:
    m = r["macro"]
    text = f"{r['verdict']} (exit {r['exit_code']}): {r['checkpoint']['ref']} vs baseline {r['baseline']}"
    if r.get("error"):
        return f"{text}: {r['error']}"
    if m["difference"] is not None:
        text += (f"; macro difference {_f(m['difference'])}, {round(100 * (1 - r['alpha']))}% CI {_ci(m['ci'])}, "
                 f"delta {r['delta']:g}; detectable drop at {m['queries']} queries: {_f(m['mde'], '.4f')}")
    if m["queries_to_decide"]:
        text += f"; about {m['queries_to_decide']} queries would decide"
    return text


def print_report(r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"gate: {r['checkpoint']['ref']} vs baseline {r['baseline']} (delta {r['delta']:g})")
    for col in ("task", "queries", "baseline", "checkpoint", "Δ", "95% CI", "p", "Holm p", "MDE", "task verdict"):
        table.add_column(col, justify="left" if col in ("task", "task verdict") else "right")
    for t in r["tasks"]:
        flag = " (drop > 2δ)" if t["regression"] else ""
        table.add_row(t["task"], str(t["queries"]), f"{t['baseline_score']:.4f}", f"{t['candidate_score']:.4f}",
                      _f(t["difference"]), _ci([t["ci_low"], t["ci_high"]]), f"{t['p_value']:.3g}",
                      f"{t['p_holm']:.3g}", _f(t["mde"], ".4f"), t["verdict"] + flag)
    out = console()
    if r["tasks"]:
        out.print(table)
    out.print(f"rule: {r['rule']}", style="dim")
    for reason in r["reasons"]:
        out.print(f"- {reason}")
    for note in r["notes"]:
        out.print(f"note: {note}", style="dim")
    if r["resumed_tasks"]:
        out.print(f"reused stored results for: {', '.join(r['resumed_tasks'])}", style="dim")
    out.print(headline(r), style=STYLE[r["verdict"]])


def markdown(r: dict[str, Any]) -> str:
    """A pull-request comment."""
    icon = {"PASS": "✅", "FAIL": "❌", "CANNOT DECIDE": "⚠️", "ERROR": "🛑"}[r["verdict"]]
    lines = [f"### {icon} linq-eval gate: {r['verdict']}", "", headline(r), ""]
    if r["tasks"]:
        lines += ["| task | queries | baseline | checkpoint | Δ | 95% CI | Holm p | MDE | task verdict |",
                  "|---|---:|---:|---:|---:|---|---:|---:|---|"]
        lines += [f"| {t['task']} | {t['queries']} | {t['baseline_score']:.4f} | {t['candidate_score']:.4f} | "
                  f"{_f(t['difference'])} | {_ci([t['ci_low'], t['ci_high']])} | {t['p_holm']:.3g} | "
                  f"{_f(t['mde'], '.4f')} | {t['verdict']}{' (drop > 2δ)' if t['regression'] else ''} |"
                  for t in r["tasks"]]
        lines.append("")
    lines += [f"- {reason}" for reason in r["reasons"]]
    lines += ["", f"<sub>Rule: {r['rule']}</sub>"]
    return "\n".join(lines) + "\n"


def junit(r: dict[str, Any]) -> str:
    suite = ET.Element("testsuite", name="linq-eval gate", tests=str(len(r["tasks"]) + 1),
                       failures=str(sum(t["regression"] for t in r["tasks"]) + (r["verdict"] == "FAIL")),
                       errors=str(int(r["verdict"] in ("CANNOT DECIDE", "ERROR"))), time=f"{r['seconds']:.1f}")
    for t in r["tasks"]:
        case = ET.SubElement(suite, "testcase", classname=f"gate.{r['baseline']}", name=t["task"])
        detail = (f"difference {_f(t['difference'])}, 95% CI {_ci([t['ci_low'], t['ci_high']])}, p {t['p_value']:.3g}, "
                  f"Holm p {t['p_holm']:.3g}, MDE {_f(t['mde'], '.4f')}, {t['queries']} queries")
        if t["regression"]:
            ET.SubElement(case, "failure", message=f"drop larger than {2 * r['delta']:g}", type="regression").text = detail
        ET.SubElement(case, "system-out").text = detail
    overall = ET.SubElement(suite, "testcase", classname=f"gate.{r['baseline']}", name="overall (macro)")
    if r["verdict"] == "FAIL":
        ET.SubElement(overall, "failure", message=headline(r), type="regression").text = "\n".join(r["reasons"])
    elif r["verdict"] == "CANNOT DECIDE":
        ET.SubElement(overall, "error", message=headline(r), type="cannot-decide").text = "\n".join(r["reasons"])
    elif r["verdict"] == "ERROR":
        ET.SubElement(overall, "error", message=headline(r), type="error").text = r["error"]
    ET.SubElement(overall, "system-out").text = r["rule"]
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def clear(out: Path) -> None:
    """Remove an earlier run's reports from ``out``, so that a gate killed before it reports leaves none (a CI
    reading gate.json after a launcher's exit 1 must not find an old verdict there)."""
    for name in ("gate.json", "junit.xml", "gate.md"):
        (out / name).unlink(missing_ok=True)


def write(r: dict[str, Any], out: Path) -> dict[str, Path]:
    """gate.json, junit.xml and gate.md under ``out``, each written atomically (a CI never reads half a file)."""
    paths = {"json": out / "gate.json", "junit": out / "junit.xml", "markdown": out / "gate.md"}
    atomic_write_json(paths["json"], r, default=str)
    atomic_write_text(paths["junit"], junit(r))
    atomic_write_text(paths["markdown"], markdown(r))
    return paths
