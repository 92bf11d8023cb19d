"""Our local collection tasks, held to mteb's metadata test (tests/test_tasks/test_metadata.py)."""

from __future__ import annotations

import mteb
import pytest

from linq_eval.collection_tasks import COLLECTION_TASKS


@pytest.mark.parametrize("cls", COLLECTION_TASKS, ids=lambda c: c.metadata.name)
def test_metadata_is_filled_and_valid(cls) -> None:
    task = mteb.get_task(cls.metadata.name)
    assert type(task) is cls
    task.metadata._validate_metadata()
    assert task.metadata.is_filled()
    assert task.metadata.dataset.get("trust_remote_code", False) is False
    assert isinstance(task.metadata.simplified_task_type, str)
    assert task.metadata.prompt["query"]  # instruction for queries; documents stay plain


def test_names_are_unique_in_mteb() -> None:
    names = [t.metadata.name for t in mteb.get_tasks(exclude_superseded=False, exclude_aggregate=False)]
    ours = {c.metadata.name for c in COLLECTION_TASKS}
    assert all(names.count(n) == 1 for n in ours)
