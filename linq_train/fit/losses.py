"""The contrastive losses of ``linq-train fit``, both with gradient caching (GradCache) for large batches.

- Tasks with in-batch negatives (retrieval, STS, NLI): sentence-transformers'
  ``CachedMultipleNegativesRankingLoss`` at ``scale`` 50 (temperature 0.02): InfoNCE of each anchor against its
  positive, every other row's positive and every row's hard negatives.
- Tasks without (classification, clustering; docs/training.md): :class:`OwnNegativesLoss` below. Their positive is
  "another text of the same label", so other rows of a batch are often positives too and must not be pushed
  away; sentence-transformers has no cached InfoNCE restricted to a row's own candidates (its
  ``directions``/``hardness`` options only add terms or re-weight them), hence this class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class OwnNegativesLoss(CachedLossMixin, nn.Module):
    """InfoNCE of each anchor against its own positive and its own hard negatives only (no in-batch negatives).

    Args:
        model: the SentenceTransformer being trained.
        scale: cosine similarities are multiplied by it (1 / temperature).
        mini_batch_size: texts per forward pass of the gradient cache.

    Requirements:
        (anchor, positive, negative_1, ..., negative_n) with n >= 1: with no negatives the softmax has a single
        term and the loss is identically 0.

    Inputs:
        +-------------------------------------------------+--------+
        | Texts                                           | Labels |
        +=================================================+========+
        | (anchor, positive, negative_1, ..., negative_n) | none   |
        +-------------------------------------------------+--------+

    Relations:
        ``CachedMultipleNegativesRankingLoss`` with the other rows' columns removed from the softmax.
    """

    def __init__(self, model: Any, scale: float = 50.0, mini_batch_size: int = 32) -> None:  # noqa: ANN401
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.model = model
        self.scale = scale
        self.mini_batch_size = mini_batch_size

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *,
                       with_backward: bool = False) -> Tensor:
        if len(reps) < 3:
            raise ValueError("OwnNegativesLoss needs (anchor, positive, negative_1, ...): at least one negative")
        anchors = nn.functional.normalize(torch.cat(reps[0]), dim=-1)
        candidates = torch.stack([nn.functional.normalize(torch.cat(r), dim=-1) for r in reps[1:]], dim=1)
        logits = self.scale * torch.einsum("bd,bcd->bc", anchors, candidates)  # (batch, 1 + negatives)
        target = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)  # the positive is column 0
        loss = nn.functional.cross_entropy(logits, target)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        return self.forward_cached(list(sentence_features), labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "mini_batch_size": self.mini_batch_size}


def contrastive_loss(model: Any, *, in_batch_negatives: bool, scale: float, mini_batch_size: int,  # noqa: ANN401
                     gather_across_devices: bool = False) -> nn.Module:
    """The loss for a task: cached InfoNCE with in-batch negatives, or :class:`OwnNegativesLoss` without."""
    if not in_batch_negatives:  # nothing to gather: a row only meets its own texts
        return OwnNegativesLoss(model, scale=scale, mini_batch_size=mini_batch_size)
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    return CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=mini_batch_size,
                                              gather_across_devices=gather_across_devices)
