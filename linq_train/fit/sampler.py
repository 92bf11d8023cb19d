"""Task-homogeneous batch order: which task each batch comes from, and when.

With a ``DatasetDict`` keyed by task, sentence-transformers' trainer already builds every batch from one task
(one batch sampler per task) and lets a multi-dataset batch sampler choose the order of their batches. Two of
our three schedules are its own samplers: ``round_robin`` (``RoundRobinBatchSampler``) and ``proportional``
(``ProportionalBatchSampler``). What it cannot do is the report's curriculum-style order, all batches of one
task, then all of the next, in a given order; :class:`GroupedBatchSampler` does that, and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import accumulate

from sentence_transformers.base.sampler import (
    MultiDatasetBatchSamplers,
    MultiDatasetDefaultBatchSampler,
)

logger = logging.getLogger(__name__)


class GroupedBatchSampler(MultiDatasetDefaultBatchSampler):
    """Every batch of the first dataset, then every batch of the second, ... (the ``DatasetDict``'s order).

    Each task's own batch sampler (e.g. ``NoDuplicatesBatchSampler``) still shuffles within the task, seeded
    per epoch. With ``max_steps`` below one epoch, the later tasks are never reached: that is the schedule.

    Args:
        dataset: the trainer's ``ConcatDataset`` of the tasks, in order.
        batch_samplers: one batch sampler per task, in the same order.
        generator: unused (the order is fixed); kept for the trainer's calling convention.
        seed: unused, as ``generator``.
    """

    def __iter__(self) -> Iterator[list[int]]:
        offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
        for offset, sampler in zip(offsets, self.batch_samplers, strict=False):
            for batch in sampler:
                yield [offset + i for i in batch]

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.batch_samplers)


SCHEDULES: dict[str, type[MultiDatasetDefaultBatchSampler] | MultiDatasetBatchSamplers] = {
    "grouped": GroupedBatchSampler,
    "round_robin": MultiDatasetBatchSamplers.ROUND_ROBIN,
    "proportional": MultiDatasetBatchSamplers.PROPORTIONAL,
}
