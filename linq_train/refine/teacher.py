"""The teacher: embeds each task's candidate pool and queries, and scores every example.

The model comes from :func:`linq_eval.evaluation.runner.load_encoder` (any model and precision linq-eval evaluates),
so pooling, EOS, padding and token-budget batching are the evaluation's own, and the prefixes come from
:func:`linq_train.refine.policy.prefixes_for`, the function training uses too: evaluation's ``prefix_for`` on the
task's mteb metadata (a model whose mteb entry uses no instructions, all-MiniLM-L6-v2, gets none), so examples
are scored under the prefixes the model is evaluated and trained with.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from linq_eval.core.files import atomic_write_text
from linq_train.refine.config import TeacherConfig
from linq_train.refine.policy import prefixes_for
from linq_train.schema import Example

if TYPE_CHECKING:
    from linq_eval.models.encoder import LinqEncoder
    from linq_train.refine.craft import TaskData

logger = logging.getLogger(__name__)


def load_teacher(cfg: TeacherConfig, instructions: str | None = None) -> LinqEncoder:
    from linq_eval.evaluation.runner import RunSpec, load_encoder

    spec = RunSpec(model=cfg.model, bits=cfg.bits, max_length=cfg.max_length, instructions=instructions,
                   device=cfg.device, dtype=cfg.dtype)
    encoder = load_encoder(spec)
    encoder.batch_size = cfg.batch_size
    return encoder


def task_prefixes(encoder: LinqEncoder, task: TaskData) -> tuple[str, str]:
    """(query prefix, document prefix) the teacher encodes ``task`` with: training's and evaluation's."""
    return prefixes_for(encoder, task.task, task.task_type, task.instruction)


@dataclass
class Embeddings:
    """A task's L2-normalised embeddings: the pool (rows follow ``doc_ids``) and distinct queries."""

    doc_ids: list[str]
    docs: np.ndarray
    queries: list[str]
    query_vectors: np.ndarray

    def query_scores(self, texts: list[str]) -> np.ndarray:
        """Cosine of the given (already embedded) queries against every pool document."""
        row = {q: i for i, q in enumerate(self.queries)}
        return self.query_vectors[[row[t] for t in texts]] @ self.docs.T

    def save(self, folder: Path, task: str) -> None:
        np.save(folder / f"{task}.docs.npy", self.docs)
        np.save(folder / f"{task}.queries.npy", self.query_vectors)
        ids = {"doc_ids": self.doc_ids, "queries": self.queries}
        atomic_write_text(folder / f"{task}.ids.json", json.dumps(ids, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path, task: str) -> Embeddings:
        ids = json.loads((folder / f"{task}.ids.json").read_text(encoding="utf-8"))
        return cls(ids["doc_ids"], np.load(folder / f"{task}.docs.npy"), ids["queries"],
                   np.load(folder / f"{task}.queries.npy"))


def embed_task(encoder: LinqEncoder, task: TaskData, examples: list[Example]) -> Embeddings:
    """Encode the pool and the distinct queries of one task's examples."""
    query_prefix, doc_prefix = task_prefixes(encoder, task)
    doc_ids = list(task.corpus)
    queries = list(dict.fromkeys(e.query for e in examples))
    docs = encoder.encode_texts([task.corpus[d] for d in doc_ids], prefix=doc_prefix, label=f"{task.task} pool")
    vectors = encoder.encode_texts(queries, prefix=query_prefix, label=f"{task.task} queries")
    return Embeddings(doc_ids, docs, queries, vectors)


def embed_queries(encoder: LinqEncoder, task: TaskData, queries: list[str], emb: Embeddings) -> Embeddings:
    """The same pool with other queries (synthetic ones): the pool is not re-encoded."""
    query_prefix, _ = task_prefixes(encoder, task)
    vectors = encoder.encode_texts(queries, prefix=query_prefix, label=f"{task.task} new queries")
    return Embeddings(emb.doc_ids, emb.docs, list(queries), vectors)


def score_examples(examples: list[Example], emb: Embeddings) -> None:
    """Fill ``teacher_score`` and ``teacher_rank`` of every example in place.

    The rank counts only documents that are not known positives of the query: a query with five relevant
    documents is not penalised for ranking the other four above this one.
    """
    row = {doc_id: i for i, doc_id in enumerate(emb.doc_ids)}
    if not examples:
        return
    matrix = emb.query_scores([e.query for e in examples])
    for example, scores in zip(examples, matrix, strict=True):
        positive = float(scores[row[example.positive_id]])
        others = np.ones(len(scores), dtype=bool)
        others[[row[d] for d in {*example.known_positive_ids, example.positive_id} if d in row]] = False
        example.teacher_score = positive
        example.teacher_rank = int((scores[others] > positive).sum()) + 1
