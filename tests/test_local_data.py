"""Local BEIR folders: the real collections load; bad files fail with one line naming file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import mteb
import pytest

from linq_eval.collection_tasks import COLLECTIONS
from linq_eval.errors import LinqEvalError
from linq_eval.local_data import read_beir
from tests.conftest import DATA

EXPECTED = {"adi": (82, 35), "cacm": (3204, 52), "cisi": (1460, 76), "cranfield": (1400, 225), "lisa": (5999, 35),
            "medline": (1033, 30), "vaswani": (11429, 93)}


@pytest.mark.parametrize("collection", COLLECTIONS, ids=lambda c: c.task)
def test_every_collection_loads_as_an_mteb_task(collection) -> None:
    task = mteb.get_task(collection.task)
    task.load_data()
    split = task.dataset["default"]["test"]
    assert (len(split["corpus"]), len(split["queries"])) == EXPECTED[collection.folder]
    assert set(split["relevant_docs"]) == set(split["queries"]["id"])


@pytest.fixture
def adi_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(DATA / "adi", tmp_path / "adi")
    monkeypatch.setenv("LINQ_DATA_DIR", str(tmp_path))
    return tmp_path / "adi"


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _append(d / "corpus.jsonl", "{not json\n"), r"corpus.jsonl:83: not valid JSON"),
        (lambda d: _append(d / "queries.jsonl", '{"_id": "99"}\n'), r"queries.jsonl:36: missing field"),
        (lambda d: (d / "corpus.jsonl").write_text(""), r"corpus.jsonl is empty"),
        (lambda d: (d / "queries.jsonl").unlink(), r"queries.jsonl is missing"),
        (lambda d: _append(d / "qrels" / "test.tsv", "1\tnope\t1\n"), r"corpus-id 'nope'"),
        (lambda d: _append(d / "qrels" / "test.tsv", "1\t2\n"), r"test.tsv:172: expected 3"),
    ],
)
def test_bad_files_are_one_clear_line(adi_copy: Path, damage, message: str) -> None:
    damage(adi_copy)
    with pytest.raises(LinqEvalError, match=message) as info:
        read_beir(adi_copy)
    assert "\n" not in str(info.value)


def test_changed_copy_fails_the_checksum(adi_copy: Path) -> None:
    path = adi_copy / "queries.jsonl"
    path.write_text(path.read_text().replace("information", "informations", 1))
    with pytest.raises(LinqEvalError, match="sha256 does not match"):
        mteb.get_task("ADIRetrieval").load_data()


def test_missing_data_dir_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINQ_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(LinqEvalError, match="LINQ_DATA_DIR"):
        mteb.get_task("ADIRetrieval").load_data()
