"""Representation collapse along the trajectory study's run: how alike the embeddings of different texts are at
each checkpoint, beside the checkpoint's held-out score.

An InfoNCE run can lower its loss fastest by making every text embed alike: the softmax over the batch then
becomes uniform and the loss sits at chance, ln(number of candidates), with small gradients, until the model
finds a way back to texts that differ. The training log shows it only as a loss plateau; this script measures it
on the checkpoints themselves. For a fixed sample of ``--pairs`` training pairs of one training task, one per
query (seeded; the texts prefixed exactly as training and evaluation prefix them), per checkpoint:

- ``doc_cosine``: the mean cosine between the embeddings of different documents (1: every document alike);
- ``logit_std``: per query, the standard deviation of scale x cosine over the sampled documents, averaged over the
  queries (0: the softmax is uniform, whatever the query);
- ``loss`` against ``chance`` (ln pairs): in-batch InfoNCE at the recipe's scale over the sample;
- ``top1``: the share of queries whose own document scores highest among the sample;
- ``truth_macro``: the checkpoint's macro nDCG@10 in the study's truth mode (its stored cells).

Run (after benchmarks/trajectory.py; about a minute on 2 CPU cores)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/collapse.py configs/trajectory_cpu.yaml

Writes ``<out>/collapse.json`` and ``collapse.md``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import trajectory  # the sibling study script (config, cells): benchmarks/ is on the path
import yaml

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_json, atomic_write_text

logger = logging.getLogger("collapse")


def collapse_stats(queries: np.ndarray, documents: np.ndarray, scale: float) -> dict[str, float]:
    """Collapse measures of normalised query and document embeddings, row i of each a training pair."""
    from linq_train.fit.collapse import chance_loss  # imported here: that module loads transformers

    n = len(documents)
    if n < 2 or len(queries) != n:  # noqa: PLR2004 -- "different documents" needs two
        raise ValueError(f"need as many queries as documents, at least 2 (got {len(queries)} and {n})")
    between = documents @ documents.T
    logits = scale * queries @ documents.T
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {"doc_cosine": float(between[~np.eye(n, dtype=bool)].mean()),
            "logit_std": float(logits.std(axis=1).mean()),
            "loss": float(-np.diag(log_softmax).mean()), "chance": chance_loss(n, 0, in_batch_negatives=True),
            "top1": float(np.mean(logits.argmax(axis=1) == np.arange(n)))}


def sample_pairs(data: Path, tasks: list[str], pairs: int, policy: Any,  # noqa: ANN401 -- a LinqEncoder
                 seed: int = 0) -> tuple[str, list[str], list[str]]:
    """``pairs`` (query, positive) texts of the first of ``tasks`` in the refined set with that many distinct
    queries, one pair per query, prefixed as training prefixes them (``linq_train.fit.data.task_rows``, the one
    instruction policy); returns the task and the texts."""
    from linq_train.fit.data import load_refined, task_rows

    refined = load_refined(str(data))
    missing = sorted(set(tasks) - set(refined))
    if missing:
        raise LinqEvalError(f"task {missing[0]!r} is not in the refined set {data}: choose from {sorted(refined)}")
    counts = {}
    for task in tasks:
        rows = task_rows(refined[task], task, policy, hard_negatives=0).rows
        first: dict[str, int] = {}  # one pair per query: two of one query would make a positive a "negative"
        for index, anchor in enumerate(rows["anchor"]):
            first.setdefault(anchor, index)
        counts[task] = len(first)
        if len(first) >= pairs:
            keep = np.random.default_rng(seed).choice(sorted(first.values()), size=pairs, replace=False)
            chosen = rows.select(sorted(keep.tolist()))
            return task, list(chosen["anchor"]), list(chosen["positive"])
    raise LinqEvalError(f"no task has {pairs} distinct queries ({', '.join(f'{t}: {n}' for t, n in counts.items())}): "
                     "lower --pairs")


def report_md(study: dict[str, Any]) -> str:
    lines = ["# Representation collapse along the run", "",
             f"{study['pairs']} training pairs of {study['task']} (one per query), scale {study['scale']:g}; chance "
             f"loss ln {study['pairs']} = {study['checkpoints'][0]['chance']:.3f}. doc cosine: mean cosine between different "
             "documents; logit std: per query, the spread of scale x cosine over the documents; "
             f"truth macro: nDCG@10 in {study['truth']} on the held-out tasks.", "",
             "| checkpoint | step | doc cosine | logit std | loss | top-1 | truth macro |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in study["checkpoints"]:
        macro = "-" if row["truth_macro"] is None else f"{row['truth_macro']:.4f}"
        lines.append(f"| {row['checkpoint']} | {row['step']} | {row['doc_cosine']:.3f} | {row['logit_std']:.3f} | "
                     f"{row['loss']:.3f} | {row['top1']:.3f} | {macro} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the trajectory study's config (YAML)")
    parser.add_argument("--task", help="the training task to sample (default: the first stage's first task with "
                        "--pairs distinct queries)")
    parser.add_argument("--pairs", type=int, default=64, help="training pairs sampled (default 64)")
    args = parser.parse_args(argv)
    if args.pairs < 2:  # noqa: PLR2004
        raise LinqEvalError(f"--pairs {args.pairs}: give at least 2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = trajectory.load_study(args.config)
    out = trajectory.repo_path(cfg.out)
    cells = sorted((trajectory.read_json_file(p) for p in (out / "cells").glob(f"*/{cfg.truth}.json")),
                   key=lambda c: c["step"])
    cells = [c for c in cells if c["step"] >= 0]  # the reference model is not a checkpoint of the run
    if not cells:
        raise LinqEvalError(f"{out / 'cells'} holds no {cfg.truth} cells: run benchmarks/trajectory.py {args.config} first")
    from linq_train.fit.config import FitConfig
    from linq_train.refine.config import load_config

    fit = FitConfig.model_validate(yaml.safe_load(trajectory.repo_path(cfg.fit).read_text(encoding="utf-8")))
    first = fit.stages[0]
    tasks = [args.task] if args.task else list(getattr(first, "tasks", None) or first.mixture)
    scale = fit.loss.scale

    kept = out / "ablations" / "data"  # the set the ablations keep, else the study's own refined output
    data = kept if (kept / "dataset_dict.json").is_file() else (
        load_config(trajectory.repo_path(cfg.refine)).resolved_output_dir() / "dataset")
    if not data.is_dir():
        raise LinqEvalError(f"no refined set at {data}: run benchmarks/trajectory.py {args.config} first")
    from linq_eval.core.quiet import quiet_libraries
    from linq_eval.evaluation.runner import RunSpec, instruction_policy
    from linq_eval.models.build import build_model

    quiet_libraries()
    base_model = fit.base_model
    task, queries, documents = sample_pairs(data, tasks, args.pairs, instruction_policy(RunSpec(model=base_model)))
    rows = []
    for cell in cells:
        adapter = cell["adapter"]
        if adapter is not None and not Path(adapter).is_absolute():
            adapter = str(trajectory.REPO / adapter)
        if adapter is not None and not Path(adapter).is_dir():
            raise LinqEvalError(f"checkpoint {cell['checkpoint']}: its adapter {adapter} is gone (a study that keeps "
                                "no checkpoints keeps them under its work folder only while it exists)")
        model = build_model(base_model, adapter=adapter, max_length=cfg.max_length, device="cpu", dtype=cfg.dtype)
        embed = {"normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False}
        stats = collapse_stats(model.encode(queries, **embed), model.encode(documents, **embed), scale)
        macro = float(np.mean([t["mean"] for t in cell["tasks"].values()]))
        rows.append({"checkpoint": cell["checkpoint"], "step": cell["step"], **stats, "truth_macro": macro})
        logger.info("%s: %s", cell["checkpoint"], {k: round(v, 3) for k, v in stats.items()})
    study = {"task": task, "pairs": args.pairs, "scale": scale, "truth": cfg.truth, "data": trajectory.shown(str(data)),
             "data_sha256": trajectory.data_digest(data), "checkpoints": rows}
    atomic_write_json(out / "collapse.json", study)
    atomic_write_text(out / "collapse.md", report_md(study))
    print(report_md(study))
    return 0


if __name__ == "__main__":
    raise SystemExit(trajectory.run_script(main))
