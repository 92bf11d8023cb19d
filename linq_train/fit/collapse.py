"""Watching a stage for representation collapse: the loss of a model that embeds every text alike.

InfoNCE can lower its loss fastest by making every text embed alike: the softmax over a query's candidates is then
uniform and the loss sits at ln(candidates), with small gradients, until the model finds its way back to texts that
differ (docs/training.md: a SmolLM2 run sits there from step 20 to 80 of 200 at temperature 0.02; lower learning
rates and a warmer softmax only delay it). The training log shows it only as a plateau, so :class:`CollapseWatch`
says so once, in words, when the logged loss stays at that level.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import TrainerCallback

from linq_train.fit.callbacks import Report

logger = logging.getLogger(__name__)

NEAR = 0.05  # nats from chance that count as "at chance": the plateau's logged losses lie within 0.04 of it
PATIENCE = 3  # consecutive logged losses at chance before saying so: one can pass through chance on its way down


def chance_loss(batch_size: int, hard_negatives: int, *, in_batch_negatives: bool, world_size: int = 1) -> float:
    """The InfoNCE loss of a collapsed model: ln of the candidates each query is scored against (its positive and
    hard negatives, and with in-batch negatives every other row's, across devices where they are gathered)."""
    own = 1 + hard_negatives
    return math.log(own * batch_size * world_size if in_batch_negatives else own)


class CollapseWatch(TrainerCallback):
    """Say once per stage when ``PATIENCE`` logged losses in a row lie within ``NEAR`` of the chance level
    (:func:`chance_loss` of the stage's batches; the world size is known when training begins)."""

    def __init__(self, stage: str, batch_size: int, hard_negatives: int, *, in_batch_negatives: bool,
                 gathered: bool = False, report: Report | None = None) -> None:
        self.stage, self.report = stage, report
        self.shape = (batch_size, hard_negatives, in_batch_negatives, gathered)
        self.chance = chance_loss(batch_size, hard_negatives, in_batch_negatives=in_batch_negatives)
        self.run: list[int] = []  # the steps of the current run of logged losses at chance
        self.said = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: ANN401
        batch_size, hard_negatives, in_batch, gathered = self.shape
        self.chance = chance_loss(batch_size, hard_negatives, in_batch_negatives=in_batch,
                                  world_size=args.world_size if gathered else 1)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,  # noqa: ANN401
               **kwargs: Any) -> None:  # noqa: ANN401 -- the transformers callback contract
        if self.said or not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        if abs(float(logs["loss"]) - self.chance) > NEAR:
            self.run = []
            return
        self.run.append(state.global_step)
        if len(self.run) >= PATIENCE:
            self.said = True
            line = (f"stage {self.stage}: the loss has sat at chance (ln of the candidates per query = "
                    f"{self.chance:.2f}) since step {self.run[0]}: the model tells no text from another (typically "
                    "a collapse: every text embeds alike). Runs usually leave this plateau by themselves; an "
                    "adapter saved on it is no better than the base")
            if self.report is not None:
                self.report(line)
            else:
                logger.warning(line)
