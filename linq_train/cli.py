"""linq-train: refine training data and LoRA-fine-tune Linq-Embed-Mistral-style embedders (thin commands).

Heavy imports happen inside the handlers, so ``--help`` and bad-config errors are instant; bad input is one
line on stderr and exit code 2, as in ``linq-eval``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from linq_eval.core.errors import EXIT_ERROR, EXIT_OK
from linq_eval.core.files import check_folder

logger = logging.getLogger(__name__)


def _add_refine_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refine", help="craft, filter, mine and synthesise training data from a YAML/TOML config "
                                      "(resumes finished stages)")
    p.add_argument("config", help="refinement config (.yaml, .yml or .toml); see configs/refine_local.yaml")
    p.add_argument("--force", action="store_true", help="recompute every stage, even finished ones")
    p.set_defaults(func=_refine)


def _add_fit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="LoRA contrastive training in stages from a YAML/TOML config, validating every "
                                   "checkpoint (resumes from the last checkpoint; finished stages are skipped)")
    p.add_argument("config", help="training config (.yaml, .yml or .toml); see configs/fit_minilm.yaml")
    p.add_argument("--force", action="store_true", help="retrain every stage from scratch (deletes its checkpoints)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-step loss lines")
    p.set_defaults(func=_fit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linq-train", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage as it runs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_refine_parser(sub)
    _add_fit_parser(sub)
    return parser


def _refine(args: argparse.Namespace) -> int:
    from linq_train.refine.config import load_config

    cfg = load_config(args.config)  # a bad config fails here, before any data or model loads
    check_folder(cfg.resolved_output_dir(), f"output_dir of {args.config}:")
    check_folder(cfg.resolved_report_dir(), f"report_dir of {args.config}:")
    from rich.console import Console
    from rich.table import Table

    from linq_train.refine.pipeline import refine

    result = refine(cfg, force=args.force)
    table = Table(title=f"refinement '{cfg.name}'")
    for column in ("stage", "in", "kept", "dropped (why)", "seconds"):
        table.add_column(column, justify="left" if column in {"stage", "dropped (why)"} else "right")
    for name, stage in result.report["stages"].items():
        why = ", ".join(f"{n} {reason}" for reason, n in stage["dropped"].items()) or "-"
        seconds = f"{stage['seconds']:.1f}" + (" (resumed)" if stage.get("resumed") else "")
        table.add_row(name, str(stage["in"]), str(stage["kept"]), why, seconds)
    Console().print(table)
    for name, stage in result.report["stages"].items():
        for what, count in stage.get("notes", {}).items():
            print(f"{name}: {count} {what}")
    per_task = result.report["final"]["per_task"]
    print("examples per task: " + ", ".join(f"{t} {c['examples']}" for t, c in per_task.items()))
    print(f"dataset: {result.dataset_dir}\nreport: {result.report_dir / 'report.json'}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from linq_train.fit.config import load_fit_config

    cfg = load_fit_config(args.config)  # a bad config fails here, before any data or model loads
    check_folder(cfg.output_dir, f"output_dir of {args.config}:")
    from rich.console import Console
    from rich.table import Table

    from linq_train.fit.train import fit

    console = Console()
    result = fit(cfg, force=args.force, report=console.print, progress=not args.no_progress)
    # a stage a callback stopped before max_steps: nothing is lost (rerun to resume), but nothing finished either;
    # exit 2 (not 1, which every command keeps for the gate's FAIL)
    code = EXIT_OK if result.finished else EXIT_ERROR
    if int(os.environ.get("RANK", "0")):  # accelerate launch / torchrun: the main process reports
        return code
    table = Table(title=f"training '{cfg.name}'")
    for column in ("stage", "steps", "first loss", "last loss", "validation (last checkpoint)", "seconds", "adapter"):
        table.add_column(column, justify="left" if column in {"stage", "validation (last checkpoint)", "adapter"}
                         else "right", overflow="fold")
    for stage in result.stages:
        losses = [e["loss"] for e in stage.losses]
        last = stage.validation[-1]["scores"] if stage.validation else {}
        table.add_row(stage.name + (" (skipped)" if stage.skipped else ""), f"{stage.global_step}/{stage.max_steps}",
                      f"{losses[0]:.4f}" if losses else "-", f"{losses[-1]:.4f}" if losses else "-",
                      ", ".join(f"{t} {s:.4f}" for t, s in last.items()) or "-", f"{stage.seconds:.0f}",
                      stage.adapter or "(unfinished: rerun to resume)")
    console.print(table)
    if not result.finished:
        print("linq-train: error: training stopped before its last step: run the same command again to resume",
              file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    from linq_eval.cli import dispatch  # one error policy for both tools: one line, exit 2

    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
