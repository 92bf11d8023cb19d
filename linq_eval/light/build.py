"""Build a light set's manifest: a seeded sample of test queries and the pool of documents they need.

Corpus = every relevant document of the sampled queries (all of them) + the union of each query's top-``depth``
candidates from each pooling retriever over the full corpus, as mteb's HardNegatives tasks are made. Same
inputs -> a byte-identical manifest: sorted ids, a seeded sample, dense retrievers in float32, no timestamps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.light_manifest import LightManifest, LightParameters, Retriever, light_name
from linq_eval.tasks.light import data_fingerprint

if TYPE_CHECKING:
    from linq_eval.evaluation.systems import Run, System, TaskData

logger = logging.getLogger(__name__)

# Shipped defaults, chosen from the measured fidelity-cost sweep (results/light/sweep.json, docs/light.md).
DEFAULT_QUERIES = 200
DEFAULT_DEPTH = 30
DEFAULT_RETRIEVERS = "bm25,pypi:all-MiniLM-L6-v2"


@dataclass(frozen=True)
class BuildSpec:
    task: str
    queries: int = DEFAULT_QUERIES
    depth: int = DEFAULT_DEPTH
    retrievers: str = DEFAULT_RETRIEVERS
    seed: int = 0
    split: str | None = None  # None: the task's first evaluation split (test; dev for MSMARCO)
    min_doc_chars: int = 4


def check_spec(spec: BuildSpec) -> list[System]:
    """Everything that can be checked before data or models load; returns the pooling systems."""
    from linq_eval.evaluation.systems import parse_retrievers

    if spec.queries <= 0:
        raise LinqEvalError(f"--queries {spec.queries}: the sample needs at least 1 query")
    if spec.depth <= 0:
        raise LinqEvalError(f"--depth {spec.depth}: each retriever must contribute at least 1 candidate per query")
    if spec.task.endswith("-light"):
        raise LinqEvalError(f"{spec.task} is already a light set: build from its source task "
                            f"{spec.task.removesuffix('-light')}")
    return parse_retrievers(spec.retrievers)


def sample_queries(judged: list[str], n: int, seed: int) -> list[str]:
    """Up to ``n`` of the judged query ids, drawn with ``seed``; sorted, so the order never matters."""
    pool = sorted(judged)
    if not pool:
        raise LinqEvalError("the task has no judged test queries: nothing to sample (check its qrels)")
    if n >= len(pool):
        return pool
    picked = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return sorted(pool[i] for i in picked)


def relevant(qrels: dict[str, dict[str, int]], query_ids: list[str]) -> set[str]:
    return {d for q in query_ids for d, grade in qrels.get(q, {}).items() if grade > 0}


def pool_corpus(qrels: dict[str, dict[str, int]], query_ids: list[str], runs: dict[str, Run], depth: int,
                doc_text: dict[str, str], min_doc_chars: int) -> list[str]:
    """Judged-relevant documents + each retriever's top-``depth`` per query.

    Pooled documents that are too short or repeat the text of a document already kept are left out (mteb's
    quality rules: no text of 3 characters or fewer, at most 1% duplicate texts); relevant ones never are.
    """
    kept = relevant(qrels, query_ids)
    seen = {doc_text[d] for d in kept}
    for run in runs.values():
        for q in query_ids:
            ranked = sorted(run.get(q, {}).items(), key=lambda item: (-item[1], item[0]))[:depth]
            for d, _ in ranked:
                text = doc_text[d]
                if d not in kept and len(text) >= min_doc_chars and text not in seen:
                    kept.add(d)
                    seen.add(text)
    return sorted(kept)


def eligible_queries(data: TaskData, min_doc_chars: int) -> tuple[list[str], int]:
    """Judged queries that can be sampled, and how many judged ones cannot (mteb's quality rules again).

    Left out: a query with a relevant document without text (nothing can retrieve it), and a query whose
    text repeats an earlier one's (the lowest id of each text stays).
    """
    texts = data.doc_text()
    query_text = dict(zip(data.query_ids, data.queries["text"], strict=True))
    judged = sorted(q for q in data.query_ids if relevant(data.qrels, [q]))
    ok, seen = [], set()
    for q in judged:
        if query_text[q] in seen or any(len(texts[d]) < min_doc_chars for d in relevant(data.qrels, [q])):
            continue
        seen.add(query_text[q])
        ok.append(q)
    return ok, len(judged) - len(ok)


def draw(spec: BuildSpec, data: TaskData) -> tuple[list[str], list[str], int]:
    """The eligible queries, the seeded sample of them, and how many judged queries were not eligible."""
    eligible, left_out = eligible_queries(data, spec.min_doc_chars)
    return eligible, sample_queries(eligible, spec.queries, spec.seed), left_out


def manifest_from_runs(spec: BuildSpec, data: TaskData, systems: list[System], runs: dict[str, Run],
                       sample: tuple[list[str], list[str], int] | None = None) -> LightManifest:
    """The manifest for already-computed full-corpus runs of the pooling systems (the sweep calls this too).

    ``sample`` is :func:`draw`'s (eligible queries, sampled queries, left-out count) when the caller has drawn it.
    """
    from linq_eval.evaluation.systems import canonical_name, fingerprint

    eligible, query_ids, left_out = sample or draw(spec, data)
    corpus_ids = pool_corpus(data.qrels, query_ids, runs, spec.depth, data.doc_text(), spec.min_doc_chars)
    retrievers = [Retriever(name=s.ref, kind=s.kind, canonical=canonical_name(s), fingerprint=fingerprint(s))
                  for s in systems]
    counts = {"queries": len(query_ids), "corpus": len(corpus_ids), "relevant": len(relevant(data.qrels, query_ids)),
              "full_queries": len(eligible) + left_out, "full_corpus": len(data.doc_ids),
              "left_out_queries": left_out}
    return LightManifest(
        name=light_name(data.task.metadata.name), source_task=data.task.metadata.name,
        split=spec.split or data.task.metadata.eval_splits[0],
        data=data_fingerprint(data.task),
        parameters=LightParameters(queries=spec.queries, depth=spec.depth, seed=spec.seed,
                                   min_doc_chars=spec.min_doc_chars),
        retrievers=retrievers, counts=counts, query_ids=query_ids, corpus_ids=corpus_ids,
    ).sealed()


def load_source(name: str) -> Any:  # noqa: ANN401 -- the mteb task, data loaded
    from linq_eval.evaluation.runner import get_task

    task = get_task(name, task_type="Retrieval", purpose="light sets are for retrieval tasks")
    parts = getattr(task, "tasks", None)  # an aggregate (CQADupstackRetrieval) has no corpus of its own
    if parts:
        raise LinqEvalError(f"{name} aggregates {len(parts)} tasks: build each of them "
                            f"({' '.join(t.metadata.name for t in parts)})")
    task.load_data()
    return task


def build(spec: BuildSpec) -> LightManifest:
    """Load the task, rank its sampled queries with each pooling retriever, and return the sealed manifest."""
    from linq_eval.evaluation.systems import Ranker, task_data

    systems = check_spec(spec)
    task = load_source(spec.task)
    split = spec.split or task.metadata.eval_splits[0]
    if split not in task.metadata.eval_splits:
        raise LinqEvalError(f"--split {split}: {spec.task} evaluates on {', '.join(task.metadata.eval_splits)}")
    data = task_data(task, split)
    sample = draw(spec, data)  # once: the runs and the manifest use the same sample
    runs = {s.ref: Ranker(s, data).run(query_ids=sample[1], top_k=spec.depth) for s in systems}
    return manifest_from_runs(spec, data, systems, runs, sample)
