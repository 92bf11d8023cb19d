"""Hard-negative mining: negatives from the teacher's ranking inside a rank window, false negatives dropped.

For each example: rank the task's pool by the teacher's score for the query, leaving out every known positive
of the query (not only this example's positive); take the candidates at ranks ``k..m`` (1 = best); drop those
scoring above ``p`` x the positive's score (NV-Retriever's TopK-PercPos, p = 0.95: a candidate nearly as close
as the positive is likely an unlabelled positive); keep the ``n`` best.

Two engines. ``teacher-ranking`` (default) does the above on the teacher stage's stored embeddings.
``sentence-transformers`` calls :func:`sentence_transformers.util.mine_hard_negatives`, which does most of the
same (``range_min``/``range_max``, ``relative_margin`` = 1 - p, ``num_negatives``, ``sampling_strategy="top"``),
but could not be the default because:

- it embeds the queries and the whole pool again (there is no way to hand it the teacher stage's embeddings),
  doubling the costliest step on a CPU;
- its ``range_min`` counts candidates that survived the margin filter, not the teacher's raw rank, so the
  ``[k, m]`` window moves with the margin;
- its margin uses the *weakest* positive of a query, so one weak judged positive loosens every example of that
  query, whereas here each example is compared with its own positive;
- it works on texts, not ids: duplicate texts merge and ids come back through a text look-up; rows for which it
  finds no negative disappear without a reason, where the report needs one per example.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from linq_train.refine.config import MiningConfig
from linq_train.refine.teacher import Embeddings, task_prefixes
from linq_train.schema import Example

if TYPE_CHECKING:
    from linq_eval.models.encoder import LinqEncoder
    from linq_train.refine.craft import TaskData

logger = logging.getLogger(__name__)


def score_ceiling(positive: float, ratio: float) -> float:
    """Highest score a negative may have: ``ratio`` x positive, written so it also holds for negative scores."""
    return positive - abs(positive) * (1.0 - ratio)


def _finish(example: Example, negatives: list[tuple[str, float]], corpus: dict[str, str]) -> None:
    example.negative_ids = [d for d, _ in negatives]
    example.negatives = [corpus[d] for d, _ in negatives]
    example.negative_scores = [round(s, 6) for _, s in negatives]


def _split(examples: list[Example], cfg: MiningConfig) -> tuple[list[Example], list[tuple[Example, str]]]:
    if not cfg.drop_without_negatives:
        return examples, []
    short = [e for e in examples if len(e.negatives) < cfg.num_negatives]
    reason = f"fewer than {cfg.num_negatives} negatives in ranks {cfg.rank_min}-{cfg.rank_max}"
    return [e for e in examples if len(e.negatives) >= cfg.num_negatives], [(e, reason) for e in short]


def mine(examples: list[Example], emb: Embeddings, corpus: dict[str, str], cfg: MiningConfig,
         notes: Counter[str] | None = None) -> tuple[list[Example], list[tuple[Example, str]]]:
    """The ``teacher-ranking`` engine: fills negatives in place; returns (kept, [(dropped, reason)]).

    ``notes`` (if given) counts window candidates skipped as likely false negatives and short examples.
    """
    notes = Counter() if notes is None else notes
    if not examples or cfg.num_negatives == 0:
        return _split(examples, cfg)
    row = {doc_id: i for i, doc_id in enumerate(emb.doc_ids)}
    matrix = emb.query_scores([e.query for e in examples])
    for example, scores in zip(examples, matrix, strict=True):
        known = {row[d] for d in {*example.known_positive_ids, example.positive_id} if d in row}
        ranking = [i for i in np.argsort(-scores, kind="stable") if i not in known]
        ceiling = score_ceiling(float(scores[row[example.positive_id]]), cfg.max_positive_ratio)
        window = ranking[cfg.rank_min - 1 : cfg.rank_max]
        allowed = [i for i in window if scores[i] <= ceiling]
        notes[f"window candidates above {cfg.max_positive_ratio} x positive (skipped)"] += len(window) - len(allowed)
        chosen = [(emb.doc_ids[i], float(scores[i])) for i in allowed[: cfg.num_negatives]]
        notes[f"examples with fewer than {cfg.num_negatives} negatives"] += len(chosen) < cfg.num_negatives
        _finish(example, chosen, corpus)
    return _split(examples, cfg)


def mine_with_sentence_transformers(examples: list[Example], task: TaskData, encoder: LinqEncoder,
                                    cfg: MiningConfig) -> tuple[list[Example], list[tuple[Example, str]]]:
    """The ``sentence-transformers`` engine (see the module docstring for what it does differently)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    if not examples or cfg.num_negatives == 0:
        return _split(examples, cfg)
    # Every known positive becomes a row too: mine_hard_negatives treats all rows of an anchor as positives.
    pairs = {(e.query, task.corpus[d]) for e in examples for d in {*e.known_positive_ids, e.positive_id}
             if d in task.corpus}
    pairs |= {(e.query, e.positive) for e in examples}
    rows = sorted(pairs)
    query_prefix, doc_prefix = task_prefixes(encoder, task)  # the teacher stage's own prefixes
    mined = mine_hard_negatives(
        Dataset.from_dict({"query": [q for q, _ in rows], "positive": [p for _, p in rows]}), encoder.model,
        corpus=list(task.corpus.values()), range_min=cfg.rank_min - 1, range_max=cfg.rank_max,
        relative_margin=1.0 - cfg.max_positive_ratio, num_negatives=cfg.num_negatives, sampling_strategy="top",
        query_prompt=query_prefix or None, corpus_prompt=doc_prefix or None, output_format="labeled-list",
        output_scores=True, batch_size=encoder.batch_size, verbose=False,
    )
    found = {(r["query"], r["positive"][0]): list(zip(r["positive"][1:], r["scores"][1:], strict=True))
             for r in mined}
    text_id = {}
    for doc_id, text in task.corpus.items():
        text_id.setdefault(text, doc_id)
    for example in examples:
        negatives = found.get((example.query, example.positive), [])
        _finish(example, [(text_id[t], s) for t, s in negatives], task.corpus)
    return _split(examples, cfg)
