"""Our local collection tasks, held to mteb's metadata test (tests/test_tasks/test_metadata.py)."""

from __future__ import annotations

import mteb
import pytest

from linq_eval.tasks.ir_collections import ALL_COLLECTION_TASKS, COLLECTION_TASKS, UNION_FOLDERS, read_union
from tests.conftest import DATA


@pytest.mark.parametrize("cls", ALL_COLLECTION_TASKS, ids=lambda c: c.metadata.name)
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
    ours = {c.metadata.name for c in ALL_COLLECTION_TASKS}
    assert all(names.count(n) == 1 for n in ours)


def test_union_holds_every_collection_with_prefixed_ids() -> None:
    union = read_union(DATA)
    assert (len(union.corpus), len(union.queries), sum(map(len, union.qrels.values()))) == (24926, 886, 9190)
    assert {q.split(":", 1)[0] for q in union.queries} == set(UNION_FOLDERS)
    assert all(d in union.corpus for docs in union.qrels.values() for d in docs)
    assert len(COLLECTION_TASKS) == 7


def test_union_task_loads_through_mteb() -> None:
    task = mteb.get_task("CollectionsUnionRetrieval")
    task.load_data()
    split = task.dataset["default"]["test"]
    assert len(split["corpus"]) == 24926 and len(split["queries"]) == 886
    assert task.local_source["folder"] == str(DATA)
