"""Per-query scores next to mteb's result files: the unit every paired comparison needs (docs/stats.md).

mteb keeps only aggregate scores; with ``prediction_folder`` it saves each query's ranking. From those
rankings and the task's qrels, pytrec_eval (the library mteb itself scores with) gives the task's main metric
(mteb's ``main_score``, most often nDCG@10) per query, on every split; readers take the task's evaluation split.
Both live in sibling trees of mteb's ``results/`` (whose loader would try to parse any extra JSON there):
``<cache>/predictions/<same path>/`` and ``<cache>/per_query/<same path>/<Task>.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_json, read_json_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


# mteb's retrieval main scores that have a per-query form: mteb name prefix -> pytrec_eval measure (mteb scores
# these with pytrec_eval too, so the mean of the per-query scores is mteb's main score).
PER_QUERY_MEASURES = {"ndcg_at_": "ndcg_cut", "map_at_": "map_cut", "recall_at_": "recall", "precision_at_": "P"}
DEFAULT_METRIC = "ndcg_at_10"


def per_query_measure(metric: str, task_name: str = "") -> tuple[str, int]:
    """The pytrec_eval measure and cutoff of an mteb retrieval metric (e.g. ``map_at_5`` -> ``("map_cut", 5)``).

    Raises:
        LinqEvalError: the metric has no per-query form here (e.g. mteb's ``mrr_at_k`` or ``cv_recall``).
    """
    for prefix, measure in PER_QUERY_MEASURES.items():
        cutoff = metric.removeprefix(prefix)
        if metric.startswith(prefix) and cutoff.isdigit():
            return measure, int(cutoff)
    where = f"{task_name}'s main score " if task_name else ""
    raise LinqEvalError(f"{where}{metric} has no per-query form in linq-eval (it has "
                        f"{', '.join(p + 'k' for p in PER_QUERY_MEASURES)}): compare, gate and light validation "
                        "need per-query scores of the task's main metric; use another task")


def retrieval_per_query(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
                        metric: str = DEFAULT_METRIC) -> dict[str, float]:
    """``metric`` (an mteb main score, e.g. ``ndcg_at_10``) of each judged query; an unretrieved one scores 0."""
    import pytrec_eval

    measure, cutoff = per_query_measure(metric)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"{measure}.{cutoff}"})
    scores = evaluator.evaluate({qid: run.get(qid, {}) for qid in qrels if run.get(qid)})
    key = f"{measure}_{cutoff}"
    return {qid: float(scores[qid][key]) if qid in scores else 0.0 for qid in qrels}


def sibling_path(cache_path: Path, result_path: Path, tree: str) -> Path:
    """``<cache>/results/X/Y.json`` -> ``<cache>/<tree>/X/Y.json``."""
    return cache_path / tree / result_path.relative_to(cache_path / "results")


def per_query_path(cache_path: Path, result_path: Path) -> Path:
    return sibling_path(cache_path, result_path, "per_query")


def read_per_query(path: str | Path, split: str | None = None) -> dict[str, float]:
    """The per-query scores of a result on ``split`` (default: the task's evaluation split the file records, or
    its only split); the default subset, or the only one."""
    data = read_json_file(path)
    scores = data["scores"]
    split = split or data.get("eval_split") or (next(iter(scores)) if len(scores) == 1 else None)
    if split not in scores:
        raise LinqEvalError(f"{path}: no per-query scores for split {split!r} (it has {', '.join(sorted(scores))}): "
                            "rerun the task to rewrite its per-query file")
    subsets = scores[split]
    return subsets.get("default") or subsets[sorted(subsets)[0]]


def write_retrieval_per_query(task: Any, predictions_file: Path, path: Path) -> Path:  # noqa: ANN401
    """Score every split/subset of a saved ranking and write the per-query file to ``path``."""
    predictions = read_json_file(predictions_file)
    metric = task.metadata.main_score
    per_query_measure(metric, task.metadata.name)  # refuse before scoring anything
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "task_name": task.metadata.name, "metric": metric,
                           "eval_split": task.metadata.eval_splits[0], "scores": {}}
    for subset, splits in task.dataset.items():
        for split, data in splits.items():
            run = predictions[subset][split]
            out["scores"].setdefault(split, {})[subset] = retrieval_per_query(run, data["relevant_docs"], metric)
    return atomic_write_json(path, out)
