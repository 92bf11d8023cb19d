"""Per-query scores next to mteb's result files: the unit every paired comparison needs (statistics.md).

mteb keeps only aggregate scores; with ``prediction_folder`` it saves each query's ranking. From those
rankings and the task's qrels, pytrec_eval (the library mteb itself scores with) gives nDCG@10 per query.
Both live in sibling trees of mteb's ``results/`` (whose loader would try to parse any extra JSON there):
``<cache>/predictions/<same path>/`` and ``<cache>/per_query/<same path>/<Task>.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from linq_eval.core.files import atomic_write_json, read_json_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def retrieval_per_query(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
                        k: int = 10) -> dict[str, float]:
    """nDCG@k of each judged query; a judged query with no retrieved documents scores 0."""
    import pytrec_eval

    measure = f"ndcg_cut_{k}"
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"})
    scores = evaluator.evaluate({qid: run.get(qid, {}) for qid in qrels if run.get(qid)})
    return {qid: float(scores[qid][measure]) if qid in scores else 0.0 for qid in qrels}


def sibling_path(cache_path: Path, result_path: Path, tree: str) -> Path:
    """``<cache>/results/X/Y.json`` -> ``<cache>/<tree>/X/Y.json``."""
    return cache_path / tree / result_path.relative_to(cache_path / "results")


def per_query_path(cache_path: Path, result_path: Path) -> Path:
    return sibling_path(cache_path, result_path, "per_query")


def read_per_query(path: str | Path) -> dict[str, float]:
    """The per-query scores of a result (first split; the default subset, or the only one)."""
    scores = read_json_file(path)["scores"]
    split = scores[sorted(scores)[0]]
    return split.get("default") or split[sorted(split)[0]]


def write_retrieval_per_query(task: Any, predictions_file: Path, path: Path) -> Path:  # noqa: ANN401
    """Score every split/subset of a saved ranking and write the per-query file to ``path``."""
    predictions = read_json_file(predictions_file)
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "task_name": task.metadata.name,
                           "metric": "ndcg_at_10", "scores": {}}
    for subset, splits in task.dataset.items():
        for split, data in splits.items():
            run = predictions[subset][split]
            out["scores"].setdefault(split, {})[subset] = retrieval_per_query(run, data["relevant_docs"])
    return atomic_write_json(path, out)
