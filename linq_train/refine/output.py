"""The refinement's product: a ``datasets.DatasetDict`` with one split per task, saved to disk.

One split per task is what task-homogeneous batching reads (every batch from one task). A task left with no
example gets no split (``datasets`` cannot load an empty split back); the report lists it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from linq_train.schema import Example, to_dataset

logger = logging.getLogger(__name__)


def write_dataset(examples: list[Example], tasks: list[str], folder: Path) -> Path:
    """Save ``examples`` grouped by task (first-seen order kept) with :meth:`DatasetDict.save_to_disk`."""
    from datasets import DatasetDict

    splits = {t: to_dataset([e for e in examples if e.task == t]) for t in tasks}
    shutil.rmtree(folder, ignore_errors=True)
    DatasetDict({t: d for t, d in splits.items() if len(d)}).save_to_disk(str(folder))
    return folder


def load_dataset_dict(folder: str | Path):  # noqa: ANN201 -- datasets.DatasetDict, imported lazily
    """Read back what :func:`write_dataset` saved (``datasets.load_from_disk``)."""
    from datasets import load_from_disk

    return load_from_disk(str(folder))
