"""Teacher filtering: drop examples whose positive the teacher ranks too low or scores too low.

A pure function over examples the teacher stage has scored. Optional answer containment for QA data: the
positive must contain one of the example's known answers (case-insensitive), when answers are known.
"""

from __future__ import annotations

import logging

from linq_train.refine.config import FilterConfig
from linq_train.schema import Example

logger = logging.getLogger(__name__)


def why_dropped(example: Example, cfg: FilterConfig) -> str | None:
    """The first failed check (``rank``, ``score``, ``answer``), or None when the example passes."""
    if cfg.max_rank is not None and example.teacher_rank > cfg.max_rank:
        return f"positive ranked below {cfg.max_rank}"
    if cfg.min_score is not None and example.teacher_score < cfg.min_score:
        return f"positive scored under {cfg.min_score}"
    if cfg.require_answer and example.answers:
        text = example.positive.lower()
        if not any(answer.lower() in text for answer in example.answers):
            return "positive lacks the answer"
    return None


def apply_filter(examples: list[Example], cfg: FilterConfig) -> tuple[list[Example], list[tuple[Example, str]]]:
    """(kept, [(dropped example, reason)])."""
    kept, dropped = [], []
    for example in examples:
        reason = why_dropped(example, cfg)
        if reason:
            dropped.append((example, reason))
        else:
            kept.append(example)
    return kept, dropped
