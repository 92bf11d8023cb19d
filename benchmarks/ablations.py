"""Ablations of the trajectory study's training recipe: each variant against the full recipe, paired per query.

The study config (``configs/trajectory_cpu.yaml``) names the recipe (its refine and fit configs) and, under
``ablations``, the variants and seeds. Each variant changes one thing, at the same number of steps:

- ``mixed_batches``: every stage draws mixed-task batches (the recipe's first stage is task-homogeneous), from the
  same examples in the same proportions;
- ``in_batch_only``: no mined hard negatives, in-batch negatives only;
- ``unfiltered``: the training data without the teacher filter (refine's crafting, leakage guard, teacher
  scores and synthetic queries are reused; only filtering and mining run again);
- ``no_mixed_stage``: the homogeneous stage alone, lengthened by the mixed stage's steps.
- ``mixed_even_batches`` (not one change: for contrast): mixed batches with the tasks at equal weight, so that the
  data mix changes as well.

Every (variant, seed) is trained once (``linq-train fit`` resumes), and its final adapter evaluated on the held-out
tasks in the study's truth mode (full corpus, 16 bits), one cell JSON per run, so nothing finished is recomputed.
The recipe itself at the study's own seed is the study's final checkpoint (its cell is reused, not retrained).

Each variant is compared with the recipe on the same queries: per task the mean difference of nDCG@10, its 95%
paired bootstrap CI and the sign-flip permutation p, Holm-corrected over the tasks; over the tasks the
task-stratified 95% CI of the macro difference. Per seed, and on per-query scores averaged over the seeds (the
headline where there are several: seed noise averages out of both sides).
The paired tests see query noise only, not training noise: for every system trained at two seeds or more the
report also gives its seed spread (each later seed minus the first), the yardstick a variant's difference must
exceed (the report's "seed spread" column: beyond or within the largest spread measured), and, with runs as the
unit, the mean of the per-seed macro differences with its 95% t-interval over seeds ("over seeds").
Each run is also compared with the study's untrained base model ("vs base"): whether it trains an embedder at all.

Run (after the study, whose final checkpoint it may reuse; about 50 minutes per variant and seed on 2 CPU cores;
resumable; ``--report`` rewrites the report from the stored cells alone)::

    HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/ablations.py configs/trajectory_cpu.yaml

Writes ``<out>/ablations/ablations.json``, ``ablations.md`` and the cells (per-query scores) under
``<out>/ablations/cells``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import trajectory  # the sibling study script (config, training, cells, the paired test): benchmarks/ is on the path
import yaml

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_json, atomic_write_text

logger = logging.getLogger("ablations")
RECIPE = "recipe"


# -- the variants: pure functions of the recipe's fit config ---------------------------------------------------
def _homogeneous(raw: dict[str, Any]) -> dict[str, Any]:
    first = raw["stages"][0]
    if first.get("kind", "homogeneous") != "homogeneous":
        raise ValueError("the recipe's first stage is not task-homogeneous: nothing to ablate")
    return first


def mixed_batches(raw: dict[str, Any]) -> dict[str, Any]:
    """Every stage mixed: the homogeneous stage's tasks in proportion to their examples, as its proportional
    schedule draws them, but batched across tasks. Only the batches' composition changes, not the data."""
    out = copy.deepcopy(raw)
    first = _homogeneous(out)
    first.update(kind="mixed", mixture=list(first.pop("tasks")))
    first.pop("schedule", None)  # max_steps, as before, ends the stage
    return out


def mixed_even_batches(raw: dict[str, Any]) -> dict[str, Any]:
    """Every stage mixed, the homogeneous stage's tasks at equal weight (small tasks repeated, large ones cut):
    batch composition and data mix change together, as when a mixed stage's even mixture replaced it."""
    out = mixed_batches(raw)
    first = out["stages"][0]
    first["mixture"] = dict.fromkeys(first["mixture"], 1.0)
    return out


def in_batch_only(raw: dict[str, Any]) -> dict[str, Any]:
    """No mined hard negatives in any stage."""
    out = copy.deepcopy(raw)
    for stage in out["stages"]:
        stage["hard_negatives"] = 0
    return out


def no_mixed_stage(raw: dict[str, Any]) -> dict[str, Any]:
    """The first (homogeneous) stage alone, lengthened by the steps of the stages it replaces."""
    out = copy.deepcopy(raw)
    first = _homogeneous(out)
    rest = out["stages"][1:]
    if not rest:
        raise ValueError("the recipe has a single stage: there is no mixed stage to leave out")
    if any(s.get("max_steps") is None for s in out["stages"]):
        raise ValueError("no_mixed_stage needs max_steps in every stage (to keep the number of steps)")
    first["max_steps"] += sum(s["max_steps"] for s in rest)
    out["stages"] = [first]
    return out


def unfiltered(raw: dict[str, Any]) -> dict[str, Any]:
    """The fit config unchanged: the data differs (:func:`unfiltered_data`)."""
    return copy.deepcopy(raw)


VARIANTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "mixed_batches": mixed_batches, "in_batch_only": in_batch_only, "unfiltered": unfiltered,
    "no_mixed_stage": no_mixed_stage, "mixed_even_batches": mixed_even_batches}
REUSED_STAGES = ("craft", "leakage", "teacher", "synthetic")  # refine's expensive stages, identical without filter


def unfiltered_data(refine_config: Path, done: Path, work: Path) -> str:
    """The recipe's refined data (finished in ``done``) with the teacher filter off, its expensive stages copied."""
    from linq_train.refine.config import RefineConfig
    from linq_train.refine.pipeline import refine

    raw = yaml.safe_load(refine_config.read_text(encoding="utf-8"))
    out = work / "refine_unfiltered"
    raw.update(name=f"{raw['name']}_unfiltered", output_dir=str(out / "data"), report_dir=str(out),
               filter={"max_rank": None, "min_score": None})
    for stage in REUSED_STAGES:
        source, target = done / "stages" / stage, out / "data" / "stages" / stage
        if source.is_dir() and not target.is_dir():
            shutil.copytree(source, target)
    return str(refine(RefineConfig.model_validate(raw)).dataset_dir)


def kept_data(cfg: trajectory.StudyConfig, kept: Path, work: Path) -> tuple[dict[str, Any], str]:
    """The recipe's fit config on the refined set every ablation run trains on, and that set's digest. The set is
    refined once and kept under ``kept`` (committed with the results): refinement is not bit-reproducible across
    CPUs (a teacher score that moves in the last bit moves a mined negative), and the runs of one comparison,
    which span sessions and machines, must train on identical data."""
    if (kept / "dataset_dict.json").is_file():
        recipe = trajectory.fit_config(cfg, work, data=kept)
    else:
        recipe = trajectory.fit_config(cfg, work)
        partial = kept.with_name(kept.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(recipe["data"], partial)
        partial.rename(kept)  # whole or absent
        recipe["data"] = str(kept)
        from linq_train.refine.config import load_config

        report = load_config(trajectory.repo_path(cfg.refine)).resolved_report_dir() / "report.json"
        if report.is_file():  # what refinement kept and dropped, for the set kept here
            atomic_write_text(kept.with_name("refine_report.json"), report.read_text(encoding="utf-8"))
    return recipe, trajectory.data_digest(kept)


def study_trained_on(cfg: trajectory.StudyConfig, data_sha256: str) -> bool:
    """Whether the study's run trained on these data (its kept checkpoints' manifest says so, or records nothing):
    then the recipe at the study's seed is the study's final checkpoint; else (the study's data were refined on
    another machine) the recipe trains again here, like any other run."""
    manifest = trajectory.repo_path(cfg.out) / "checkpoints" / "checkpoints.json"
    study_data = trajectory.read_json_file(manifest).get("data_sha256") if manifest.is_file() else None
    if study_data in (None, data_sha256):
        return True
    logger.info("the study's checkpoints trained on other refined data (%s, here %s): the recipe trains again",
                study_data[:12], data_sha256[:12])
    return False


def study_ends(cfg: trajectory.StudyConfig, mode: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The study's cells in ``mode`` of its base model and of its final checkpoint (None before evaluated)."""
    studied = trajectory.repo_path(cfg.out) / "cells"
    cells = [trajectory.read_json_file(p) for p in studied.glob(f"*/{mode}.json")]  # each read once
    base = next((c for c in cells if c["checkpoint"] == trajectory.BASE), None)
    final = max(cells, key=lambda c: c["step"], default=None)
    return base, None if final is None or final["checkpoint"] == trajectory.BASE else final


# -- the comparison: pure ----------------------------------------------------------------------------------------
def steps_trained_here(stages: list[Any]) -> int:
    """Training steps this process ran: a stage finished earlier ran none here, a resumed one only those after its
    checkpoint (its seconds were measured over those alone)."""
    def resumed_at(stage: Any) -> int:  # noqa: ANN401 -- linq_train's StageResult
        return int(stage.resumed_from.rsplit("-", 1)[1]) if stage.resumed_from else 0

    return sum(0 if stage.skipped else stage.global_step - resumed_at(stage) for stage in stages)


def logged_losses(run_dir: Path, stages: list[str],
                  adapter_sha256: str | None = None) -> dict[str, list[dict[str, float]]] | None:
    """A trained run's logged losses per stage, in the config's order (``<stage>/stage.json``, written by
    ``linq-train fit`` when a stage finished); None unless every stage finished here, and, given
    ``adapter_sha256``, the last one's adapter is that one (not another training in that folder)."""
    found = [run_dir / name / "stage.json" for name in stages]
    if not all(p.is_file() for p in found):
        return None
    final = found[-1].parent / "final"  # where fit puts a stage's adapter (a moved run's JSON names the old place)
    if adapter_sha256 is not None and (not (final / trajectory.ADAPTER_WEIGHTS).is_file()
                                       or trajectory.adapter_digest(final) != adapter_sha256):
        return None
    return {name: trajectory.read_json_file(p).get("losses", []) for name, p in zip(stages, found, strict=True)}


def stage_names(raw: dict[str, Any]) -> list[str]:
    """A fit config's stage names, in training order."""
    return [stage["name"] for stage in raw["stages"]]


def chance_loss(raw: dict[str, Any]) -> float:
    """A collapsed model's loss in the first stage (``linq_train.fit.collapse.chance_loss``: ln of the candidates
    per query), with in-batch negatives, as every task of the study has them."""
    from linq_train.fit.collapse import chance_loss as chance
    from linq_train.fit.config import FitConfig

    first = FitConfig.model_validate(raw).stages[0]
    return chance(first.batch_size, first.hard_negatives, in_batch_negatives=True)


def at_chance(losses: dict[str, list[dict[str, float]]] | None, chance: float | None) -> dict[str, Any] | None:
    """The first stage's logged steps whose loss lies within ``NEAR`` nats of chance (a collapsed model's loss, as
    fit's collapse watch counts it), and its last logged loss."""
    from linq_train.fit.collapse import NEAR  # imported here: that module loads transformers

    first = next(iter((losses or {}).values()), None)
    if not first or chance is None:
        return None
    steps = [int(e["step"]) for e in first if abs(e["loss"] - chance) <= NEAR]
    return {"steps": steps, "last_step": int(first[-1]["step"]), "last_loss": float(first[-1]["loss"]),
            "chance": chance}


def run_label(variant: str, seed: int) -> str:
    """A run's name: its cell's and checkpoints' folder, and its key in the report."""
    return f"{variant}-s{seed}"


def chosen_runs(order: list[tuple[int, str]], only: list[str] | None) -> list[tuple[int, str]]:
    """The runs to train, in the order ``only`` names them (``<variant>-s<seed>``), else all in ``order``: the run
    that would decide a claim can go before the rest. A name outside the config's variants and seeds is an error."""
    if not only:
        return order
    labelled = {run_label(variant, seed): (seed, variant) for seed, variant in order}
    unknown = [name for name in only if name not in labelled]
    if unknown:
        raise LinqEvalError(f"--only {unknown[0]}: not a run of this config; choose from {', '.join(labelled)} "
                            "(add a seed to the config's ablations.seeds to run it)")
    return [labelled[name] for name in dict.fromkeys(only)]


def run_row(variant: str, seed: int, record: dict[str, Any]) -> dict[str, Any]:
    """One run's line of the report: its macro score and how long it trained, where."""
    return {"variant": variant, "seed": seed, "checkpoint": record["checkpoint"],
            "macro": float(np.mean([t["mean"] for t in record["tasks"].values()])),
            "train_seconds": record.get("train_seconds"), "train_cpu_seconds": record.get("train_cpu_seconds"),
            # cells written before steps were counted trained in one go
            "train_steps_timed": record.get("train_steps_timed", record["step"]),
            "train_cpu_isa": record.get("train_cpu_isa"),
            "at_chance": at_chance(record.get("losses"), record.get("chance_loss"))}


def paired(variant: dict[str, dict[str, float]], recipe: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Variant minus recipe over the same queries (task -> query -> score): the study's paired test
    (``trajectory.paired_difference``), with a verdict where the macro CI excludes zero."""
    pairs = {task: trajectory.per_query_pair(variant[task], scores, sorted(scores)) for task, scores in recipe.items()}
    out = trajectory.paired_difference(pairs)
    low, high = out["macro"]["ci95"]
    out["macro"]["verdict"] = "better" if low > 0 else "worse" if high < 0 else "no difference shown"
    return out


def reproduction(cells: dict[str, dict[int, dict[str, Any]]], final: dict[str, Any] | None,
                 seed: int) -> dict[str, Any] | None:
    """The recipe trained again here at the study's seed minus the study's own run of it (another CPU, another
    refined set): how far retraining alone moves the scores, the scale against which a variant's difference reads."""
    again = cells.get(RECIPE, {}).get(seed)
    if again is None or final is None:
        return None
    return paired(seed_mean([again]), seed_mean([final]))


def against_base(cells: dict[str, dict[int, dict[str, Any]]], base: dict[str, Any] | None) -> dict[str, Any] | None:
    """Every run minus the untrained base model, paired per query (``<variant>-s<seed>``): does each run train an
    embedder at all, whatever its variant and seed? Two fixed systems, so the per-query test answers this one."""
    if base is None:
        return None
    untrained = seed_mean([base])
    return {run_label(variant, seed): paired(seed_mean([cell]), untrained)
            for variant, runs in cells.items() for seed, cell in sorted(runs.items())}


def seed_spread(cells: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]] | None:
    """Per system with two seeds or more (the recipe, a variant), each later seed minus the first, same machine and
    data: how far the training seed alone moves its scores. The paired tests above see only query noise; a variant
    whose difference is within this spread is not shown to matter, however small its p."""
    out = {}
    for name, runs in cells.items():
        seeds = sorted(runs)
        if len(seeds) >= 2:  # noqa: PLR2004 -- a spread needs two runs
            first = seed_mean([runs[seeds[0]]])
            out[name] = {str(s): paired(seed_mean([runs[s]]), first) for s in seeds[1:]}
    return out or None


def seed_mean(cells: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-query scores averaged over runs (seeds) of one system."""
    tasks = cells[0]["tasks"]
    return {t: {q: float(np.mean([c["tasks"][t]["per_query"][q] for c in cells])) for q in tasks[t]["per_query"]}
            for t in tasks}


def compare_all(cells: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Every variant against the recipe: per seed both have, and on seed-averaged scores."""
    recipe = cells[RECIPE]
    out: dict[str, Any] = {}
    for name, runs in cells.items():
        if name == RECIPE:
            continue
        seeds = sorted(set(runs) & set(recipe))
        if not seeds:
            continue
        per_seed = {str(s): paired(seed_mean([runs[s]]), seed_mean([recipe[s]])) for s in seeds}
        out[name] = {"seeds": seeds, "per_seed": per_seed,
                     "seed_mean": paired(seed_mean([runs[s] for s in seeds]), seed_mean([recipe[s] for s in seeds]))}
    return out


def against_spread(comparisons: dict[str, Any], spread: dict[str, dict[str, Any]] | None) -> dict[str, str | None]:
    """Each variant's seed-averaged macro difference against the seed spread: "beyond" when it is larger than the
    largest spread measured, of any system (and its per-query CI excludes zero), else "within"; None while no
    system has two seeds. Conservative on purpose: with two seeds a spread is one draw of run-to-run noise, and
    a variant's difference carries the noise of both sides."""
    if not spread:
        return {name: None for name in comparisons}
    largest = max(abs(row["macro"]["difference"]) for seeds in spread.values() for row in seeds.values())
    out: dict[str, str | None] = {}
    for name, row in comparisons.items():
        m = row["seed_mean"]["macro"]
        shown = m["verdict"] in ("better", "worse") and abs(m["difference"]) > largest
        out[name] = "beyond" if shown else "within"
    return out


def over_seeds(comparisons: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Runs as the unit: each variant's macro difference from the recipe at every seed both have, their mean and
    the 95% t-interval over seeds (None below two seeds). The question a recipe claim asks (would another
    training run show it too?), which the per-query tests cannot answer; with n seeds it has n - 1 degrees of
    freedom, so two seeds give an honest but wide interval (t = 12.7)."""
    from scipy import stats

    out: dict[str, dict[str, Any] | None] = {}
    for name, row in comparisons.items():
        differences = np.array([row["per_seed"][str(s)]["macro"]["difference"] for s in row["seeds"]])
        if len(differences) < 2:  # noqa: PLR2004 -- a spread needs two runs
            out[name] = None
            continue
        mean = float(differences.mean())
        half = float(stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / np.sqrt(len(differences)))
        out[name] = {"seeds": len(differences), "differences": differences.tolist(), "mean": mean,
                     "ci95": [mean - half, mean + half]}
    return out


def report_md(study: dict[str, Any]) -> str:
    lines = ["# Ablations of the training recipe", "",
             f"Each variant minus the recipe, {study['truth']} on {', '.join(study['tasks'])}; nDCG@10 per query, "
             "paired: 95% bootstrap CI, sign-flip p with Holm's correction over the tasks, task-stratified macro CI. "
             "Scores averaged over the seeds both have.", "",
             "| variant | seeds | macro difference | 95% CI | verdict | seed spread | over seeds (runs as units) | "
             + " | ".join(f"{t} (p Holm)" for t in study["tasks"]) + " |",
             "|---|---|---:|---|---|---|---|" + "---|" * len(study["tasks"])]
    beyond = study.get("against_seed_spread") or {}
    runs_as_units = study.get("over_seeds") or {}
    for name, row in study["comparisons"].items():
        m = row["seed_mean"]["macro"]
        cells = [f"{v['difference']:+.4f} ({v['p_holm']:.3f})" for v in row["seed_mean"]["tasks"].values()]
        units = runs_as_units.get(name)
        over = "-" if units is None else (f"{units['mean']:+.4f} [{units['ci95'][0]:+.4f}, {units['ci95'][1]:+.4f}] "
                                          f"({', '.join(f'{d:+.3f}' for d in units['differences'])})")
        lines.append(f"| {name} | {', '.join(map(str, row['seeds']))} | {m['difference']:+.4f} | "
                     f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] | {m['verdict']} | {beyond.get(name) or '-'} | "
                     f"{over} | " + " | ".join(cells) + " |")
    again = study.get("reproduction")
    if again:
        m = again["macro"]
        lines += ["", f"The recipe trained again here minus the study's run of it (same seed; another CPU and refined "
                  f"set): {m['difference']:+.4f} [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}], {m['verdict']}."]
    spread = study.get("seed_spread") or {}
    if spread:
        lines += ["", "Seed spread: each system at a later seed minus its first seed (same data; the seed alone where "
                  "both trained on one machine, see 'trained on'). A variant's difference within the largest spread "
                  "is not shown to matter, whatever its p (column 'seed spread': beyond or within it).", "",
                  "| system | seeds | macro difference | 95% CI | " + " | ".join(study["tasks"]) + " |",
                  "|---|---|---:|---|" + "---:|" * len(study["tasks"])]
    for name, seeds in spread.items():
        first = min((run["seed"] for run in study["runs"] if run["variant"] == name), default=0)
        for seed, row in seeds.items():
            m = row["macro"]
            lines.append(f"| {name} | {seed} minus {first} | {m['difference']:+.4f} | "
                         f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] | "
                         + " | ".join(f"{v['difference']:+.4f}" for v in row["tasks"].values()) + " |")
    vs_base = study.get("against_base") or {}
    if vs_base:
        lines += ["", "Each run minus the untrained base model ('vs base': macro difference, 95% CI, the largest Holm p "
                  "over the tasks): whether each run trains an embedder at all, whatever its variant and seed."]
    lines += ["", "First stage at chance: its logged steps whose loss is within 0.05 of a collapsed model's (every text "
              "alike, a uniform softmax: ln of the candidates per query), and its last logged loss against that.", "",
              "| run | macro nDCG@10 | vs base | first stage at chance | its last loss (chance) | "
              "training wall seconds (steps timed) | wall / CPU seconds per step | trained on |",
              "|---|---:|---|---|---:|---:|---:|---|"]
    for run in study["runs"]:
        seconds, cpu, timed = run["train_seconds"], run.get("train_cpu_seconds"), run.get("train_steps_timed")
        per_step = "-" if seconds is None or not timed else (
            f"{seconds / timed:.1f} / {'-' if cpu is None else f'{cpu / timed:.1f}'}")
        up = vs_base.get(run_label(run["variant"], run["seed"]))
        gain = "-" if up is None else (
            f"{up['macro']['difference']:+.4f} [{up['macro']['ci95'][0]:+.4f}, {up['macro']['ci95'][1]:+.4f}], "
            f"p <= {max(t['p_holm'] for t in up['tasks'].values()):.3f}")
        flat = run.get("at_chance")
        steps = "-" if flat is None else "never" if not flat["steps"] else (
            f"{flat['steps'][0]}" if len(flat["steps"]) == 1 else
            f"{flat['steps'][0]}-{flat['steps'][-1]} ({len(flat['steps'])} logged)")
        last = "-" if flat is None else f"{flat['last_loss']:.2f} ({flat['chance']:.2f}) at {flat['last_step']}"
        lines.append(f"| {run['variant']} seed {run['seed']} | {run['macro']:.4f} | {gain} | {steps} | {last} | "
                     f"{'-' if seconds is None or not timed else f'{round(seconds)} ({timed})'} | {per_step} | "
                     f"{run.get('train_cpu_isa') or '-'} |")
    return "\n".join(lines) + "\n"


# -- the runs ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 -- a linear script
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the trajectory study's config (YAML) with an `ablations` block")
    parser.add_argument("--report", action="store_true",
                        help="write ablations.json and .md from the stored cells only (no refinement, no training)")
    parser.add_argument("--only", nargs="+", metavar="RUN",
                        help="train only these runs, in this order (e.g. recipe-s2 no_mixed_stage-s2); the report "
                             "still holds every stored cell")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from linq_eval.core.quiet import quiet_libraries

    quiet_libraries()  # the libraries' bars and INFO logs off, in the cells' processes too: the log holds ours
    cfg = trajectory.load_study(args.config)
    if cfg.ablations is None:
        raise SystemExit(f"{args.config} has no `ablations` block: name the variants and seeds there")
    unknown = sorted(set(cfg.ablations.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown ablation {unknown[0]!r}: choose from {sorted(VARIANTS)}")
    variants = [RECIPE, *cfg.ablations.variants]
    order = [(seed, variant) for seed in cfg.ablations.seeds for variant in variants]
    chosen = chosen_runs(order, args.only)  # before anything loads
    work = trajectory.repo_path(cfg.work) / "ablations"
    out = trajectory.repo_path(cfg.out) / "ablations"
    if cfg.light_dir:
        import os

        os.environ["LINQ_LIGHT_DIR"] = str(trajectory.repo_path(cfg.light_dir))
    if args.report and not (out / "data" / "dataset_dict.json").is_file():
        raise SystemExit(f"{out / 'data'} holds no kept refined set: run without --report first")
    recipe, data_sha256 = kept_data(cfg, out / "data", trajectory.repo_path(cfg.work))
    reuse_study = study_trained_on(cfg, data_sha256)
    for stage in recipe["stages"]:
        stage["save_steps"] = 40  # only the final adapter is evaluated; checkpoints let an interrupted run resume
    truth = next(m for m in cfg.modes if m.name == cfg.truth)
    # read once: the final checkpoint is the recipe's cell where reused, else the reproduction's other side
    base, final = study_ends(cfg, truth.name)
    for name in cfg.ablations.variants:  # a variant that does not apply fails now, before any training
        VARIANTS[name](recipe)

    def variant_config(variant: str) -> dict[str, Any]:
        return copy.deepcopy(recipe) if variant == RECIPE else VARIANTS[variant](recipe)

    def run(variant: str, seed: int, train: bool) -> dict[str, Any] | None:
        label = run_label(variant, seed)
        cell = out / "cells" / label / f"{truth.name}.json"
        if variant == RECIPE and seed == recipe.get("seed", 0) and reuse_study:  # the study's final checkpoint
            if final is None:
                raise SystemExit("the study's final checkpoint is not evaluated yet: run benchmarks/trajectory.py "
                                 f"{args.config} first (the recipe at seed {seed} is its run)")
            return {**final, "train_seconds": None}
        if cell.is_file():
            stored = trajectory.read_json_file(cell)
            if stored.get("data_sha256", data_sha256) != data_sha256:
                raise SystemExit(f"{cell} trained on other refined data (sha256 {stored['data_sha256'][:12]}, here "
                                 f"{data_sha256[:12]}): refinement gave other data here; move it aside to retrain")
            if "losses" not in stored:  # a cell written before losses were kept: its run's own log, if here
                raw = variant_config(variant)
                losses = logged_losses(work / "runs" / label, stage_names(raw), stored["adapter_sha256"])
                if losses is not None:
                    stored = {**stored, "losses": losses, "chance_loss": chance_loss(raw)}
                    atomic_write_json(cell, stored)
            return stored
        if not train:  # not trained yet: left out of the report for now
            return None
        raw = variant_config(variant)
        raw.update(name=label, seed=seed, output_dir=str(work / "runs" / label))
        if variant == "unfiltered":
            refine_config = trajectory.repo_path(cfg.refine)
            done = trajectory.repo_path(yaml.safe_load(refine_config.read_text(encoding="utf-8"))["output_dir"])
            raw["data"] = unfiltered_data(refine_config, done, work)
        from linq_train.fit.config import FitConfig
        from linq_train.fit.train import fit

        logger.info("training %s", label)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fit(FitConfig.model_validate(raw), progress=False)
        if not result.finished:
            raise SystemExit(f"{label}: training stopped early: rerun to resume")
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        steps = sum(s.global_step for s in result.stages)
        timed = steps_trained_here(result.stages)  # a resumed run's seconds cover only the steps trained since
        point = trajectory.Checkpoint(label, steps, result.stages[-1].adapter)
        logger.info("evaluating %s", label)
        record = trajectory.evaluate_cell(cfg, raw["base_model"], point, truth, work, out)
        if "train_seconds" not in record:  # measured once, when it trained
            from linq_eval.core.precision import cpu_isa

            # fp32 training is not bit-identical across instruction sets: a comparison across machines says so
            # wall seconds include any pause (a test run beside it); CPU seconds (all threads) do not
            record = {**record, "train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "train_steps_timed": timed,
                      "data_sha256": data_sha256, "train_cpu_isa": cpu_isa(),
                      "losses": logged_losses(work / "runs" / label, stage_names(raw)), "chance_loss": chance_loss(raw)}
            atomic_write_json(cell, record)
        return record

    cells: dict[str, dict[int, dict[str, Any]]] = {}

    def write(complete: bool) -> dict[str, Any]:
        ordered = {v: cells[v] for v in variants if v in cells}  # config order, however the cells came in
        runs = [run_row(v, s, ordered[v][s]) for s, v in order if s in ordered.get(v, {})]
        comparisons, spread = compare_all(ordered), seed_spread(ordered)
        study = {"truth": cfg.truth, "tasks": cfg.tasks, "variants": cfg.ablations.variants,
                 "seeds": cfg.ablations.seeds, "data_sha256": data_sha256,
                 "recipe_from_study": reuse_study, "runs": runs, "comparisons": comparisons,
                 "reproduction": None if reuse_study else reproduction(cells, final, recipe.get("seed", 0)),
                 "seed_spread": spread, "against_seed_spread": against_spread(comparisons, spread),
                 "over_seeds": over_seeds(comparisons),
                 "against_base": against_base(cells, base),
                 "complete": complete}
        atomic_write_json(out / "ablations.json", study)
        atomic_write_text(out / "ablations.md", report_md(study))
        return study

    # every stored cell first, so that the report written after each new run holds all of them
    missing = []
    for seed, variant in order:
        record = run(variant, seed, train=False)
        if record is None:
            missing.append((seed, variant))
        else:
            cells.setdefault(variant, {})[seed] = record
    study = write(complete=not missing)
    if not args.report:
        # seed by seed unless told: a cut-short run has whole comparisons for the first seeds
        for seed, variant in [run for run in chosen if run in missing]:
            cells.setdefault(variant, {})[seed] = run(variant, seed, train=True)
            missing.remove((seed, variant))
            study = write(complete=not missing)
    print(report_md(study))
    return 0


if __name__ == "__main__":
    raise SystemExit(trajectory.run_script(main))
