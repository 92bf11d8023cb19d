"""Training rows from refined examples: ``anchor``, ``positive``, ``negative_1`` ... ``negative_k`` per task.

The texts carry exactly the prefixes evaluation gives them: the instruction policy of
``linq_eval.evaluation.runner.instruction_policy`` (``LinqEncoder.prefix_for`` on the task's mteb metadata), so a model whose
mteb entry uses no instructions (all-MiniLM-L6-v2) trains without any, and an instructed model (the ``linq``
entries) trains with ``Instruct: {the task's evaluation instruction}\\nQuery: `` on queries. Refined examples keep
the raw query and record that same instruction (:mod:`linq_train.refine.policy`, the one policy of evaluation,
teacher scoring and training).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from linq_eval.core.errors import LinqEvalError
from linq_train.refine.policy import prefixes_for
from linq_train.schema import NO_IN_BATCH_NEGATIVES

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from linq_eval.models.encoder import LinqEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskRows:
    """One task's training rows and what was done to get them."""

    task: str
    rows: Dataset
    in_batch_negatives: bool
    query_prefix: str
    document_prefix: str
    left_out: int  # examples with fewer negatives than asked


def negative_columns(k: int) -> list[str]:
    return [f"negative_{i + 1}" for i in range(k)]


def task_rows(examples: Dataset, task: str, policy: LinqEncoder, hard_negatives: int,
              max_examples: int | None = None, seed: int = 0) -> TaskRows:
    """The training rows of one task of the refined data (examples with fewer negatives are left out).

    ``max_examples`` keeps a seeded random sample (refined examples come grouped by query, so the first N would
    hold few distinct queries, and batches without a repeated query could not be filled).
    """
    if max_examples is not None and max_examples < len(examples):
        keep = np.random.default_rng(seed).choice(len(examples), size=max_examples, replace=False)
        examples = examples.select(sorted(keep.tolist()))
    if not len(examples):
        raise LinqEvalError(f"task {task} has no examples in the refined data")
    first = examples[0]
    query_prefix, doc_prefix = prefixes_for(policy, task, first["task_type"], first["instruction"])
    in_batch = bool(all(examples["in_batch_negatives"])) and first["task_type"] not in NO_IN_BATCH_NEGATIVES
    columns: dict[str, list[str]] = {"anchor": [], "positive": [], **{c: [] for c in negative_columns(hard_negatives)}}
    left_out = 0
    for query, positive, negatives in zip(examples["query"], examples["positive"], examples["negatives"], strict=True):
        if len(negatives) < hard_negatives:
            left_out += 1
            continue
        columns["anchor"].append(query_prefix + query)
        columns["positive"].append(doc_prefix + positive)
        for name, negative in zip(negative_columns(hard_negatives), negatives, strict=False):
            columns[name].append(doc_prefix + negative)
    if not columns["anchor"]:
        raise LinqEvalError(f"task {task}: no example has {hard_negatives} hard negatives: lower hard_negatives")
    if not in_batch and hard_negatives == 0:
        raise LinqEvalError(f"task {task} trains without in-batch negatives ({first['task_type']}), so it needs "
                            "hard negatives: set hard_negatives >= 1")
    if left_out:
        logger.warning("%s: %d examples have fewer than %d negatives and are left out", task, left_out, hard_negatives)
    from datasets import Dataset

    return TaskRows(task, Dataset.from_dict(columns), in_batch, query_prefix, doc_prefix, left_out)


def mixture_rows(parts: dict[str, TaskRows], weights: dict[str, float] | None, total: int | None,
                 seed: int) -> Dataset:
    """One shuffled dataset with each task's share ``weight / sum(weights)`` of ``total`` rows.

    A task asked for more rows than it has is sampled with replacement (and logged); ``total`` defaults to all
    rows of the mixed tasks. ``weights=None``: each task in proportion to its rows (with the default ``total``,
    every row once).
    """
    from datasets import concatenate_datasets

    rng = np.random.default_rng(seed)
    total = total or sum(len(p.rows) for p in parts.values())
    if weights is None:
        weights = {task: len(p.rows) for task, p in parts.items()}
    norm = sum(weights.values())
    picked = []
    for task, weight in weights.items():
        rows = parts[task].rows
        want = max(1, round(total * weight / norm))
        replace = want > len(rows)
        if replace:
            logger.warning("mixture: %s has %d rows, %d asked: sampling with replacement", task, len(rows), want)
        picked.append(rows.select(rng.choice(len(rows), size=want, replace=replace).tolist()))
    mixed = concatenate_datasets(picked)
    return mixed.select(rng.permutation(len(mixed)).tolist())


def rows_sha256(datasets: dict[str, Dataset]) -> str:
    """sha256 of the exact training texts, task by task (what a checkpoint's provenance records)."""
    digest = hashlib.sha256()
    for name in sorted(datasets):
        digest.update(name.encode() + b"\0")
        for column in datasets[name].column_names:
            digest.update(column.encode() + b"\0")
            for text in datasets[name][column]:
                digest.update(text.encode() + b"\0")
    return digest.hexdigest()


def load_refined(path: str) -> DatasetDict:
    from linq_train.refine.output import load_dataset_dict

    return load_dataset_dict(path)
