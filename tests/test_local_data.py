"""Local BEIR folders: the real collections load; bad files fail with one line naming file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mteb
import pytest

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.local_data import read_beir, read_labelled, read_pairs
from linq_eval.tasks.ir_collections import COLLECTIONS
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


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _first(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8").splitlines()[0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # duplicates were last-wins: the second text silently replaced the first
        (lambda d: _append(d / "corpus.jsonl", json.dumps({**_first(d / "corpus.jsonl"), "text": "x"}) + "\n"),
         r"corpus.jsonl:83: duplicate _id '1' \(first at line 1\)"),
        (lambda d: _append(d / "queries.jsonl", json.dumps({"_id": "1", "text": "other"}) + "\n"),
         r"queries.jsonl:36: duplicate _id '1' \(first at line 1\)"),
        (lambda d: _append(d / "corpus.jsonl", json.dumps({"_id": 1, "text": "int id collides with '1'"}) + "\n"),
         r"corpus.jsonl:83: duplicate _id '1'"),
        (lambda d: _append(d / "qrels" / "test.tsv", "1\t17\t0\n"), r"test.tsv:172: duplicate judgment"),
        # wrong types were turned into text ("None", "[1]")
        (lambda d: _append(d / "corpus.jsonl", '{"_id": "x", "text": null}\n'), r"corpus.jsonl:83: text must be a str"),
        (lambda d: _append(d / "corpus.jsonl", '{"_id": "x", "text": "t", "title": [1]}\n'), r"title must be a str"),
        (lambda d: _append(d / "queries.jsonl", '{"_id": null, "text": "t"}\n'), r"queries.jsonl:36: _id must be"),
        (lambda d: _append(d / "queries.jsonl", '{"_id": true, "text": "t"}\n'), r"queries.jsonl:36: _id must be"),
        (lambda d: _append(d / "queries.jsonl", '{"_id": "", "text": "t"}\n'), r"_id must not be empty"),
        # tracebacks: a line that is not an object, bytes that are not UTF-8
        (lambda d: _append(d / "corpus.jsonl", "[1, 2]\n"), r"corpus.jsonl:83: expected a JSON object, got a list"),
        (lambda d: _append(d / "queries.jsonl", "5\n"), r"queries.jsonl:36: expected a JSON object, got a int"),
        (lambda d: (d / "corpus.jsonl").write_bytes((d / "corpus.jsonl").read_bytes() + b'{"_id": "\xff"}\n'),
         r"corpus.jsonl:83: not UTF-8 \(byte 10 of the line\)"),
        (lambda d: (d / "qrels" / "test.tsv").write_bytes((d / "qrels" / "test.tsv").read_bytes() + b"1\t\xe9\t1\n"),
         r"test.tsv:172: not UTF-8"),
        (lambda d: _append(d / "corpus.jsonl", '{"_id": "x", "text": "\\ud800"}\n'), r"corpus.jsonl:83: text .*surrogate"),
        # qrels grades: inf, nan, negative and fractional grades were accepted or crashed
        (lambda d: _append(d / "qrels" / "test.tsv", "1\t2\tinf\n"), r"test.tsv:172: score 'inf' is not"),
        (lambda d: _append(d / "qrels" / "test.tsv", "1\t2\tnan\n"), r"test.tsv:172: score 'nan' is not"),
        (lambda d: _append(d / "qrels" / "test.tsv", "1\t2\t-1\n"), r"test.tsv:172: score '-1' is not"),
        (lambda d: _append(d / "qrels" / "test.tsv", "1\t2\t1.5\n"), r"test.tsv:172: score '1.5' is not"),
        (lambda d: _append(d / "qrels" / "test.tsv", "1\t2\t" + "9" * 400 + "\n"), r"test.tsv:172: score '9999"),
        (lambda d: _append(d / "qrels" / "test.tsv", "\t2\t1\n"), r"test.tsv:172: empty query-id"),
        (lambda d: _append(d / "qrels" / "test.tsv", '1\t"' + "x" * 200_000 + "\t1\n"),
         r"test.tsv:172: corpus-id '\"x+' \(query '1'\) is not in corpus.jsonl"),
    ],
)
def test_duplicates_types_and_encodings_are_one_line(adi_copy: Path, damage, message: str) -> None:
    damage(adi_copy)
    with pytest.raises(LinqEvalError, match=message) as info:
        read_beir(adi_copy)
    assert "\n" not in str(info.value)


def test_a_split_that_would_leave_the_folder_is_refused(adi_copy: Path) -> None:
    (adi_copy.parent / "test.tsv").write_text((adi_copy / "qrels" / "test.tsv").read_text())
    with pytest.raises(LinqEvalError, match=r"split '../../test'.*not a split name"):
        read_beir(adi_copy, "../../test")


def _sts(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"sentence1": "a", "sentence2": "b", "score": 2.5}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**GOOD, "score": True}, r"test.jsonl:2: score True is not a number"),  # bool is an int in Python
        ({**GOOD, "score": "3.0"}, r"score '3.0' is not a number"),
        ({**GOOD, "score": None}, r"score None is not a number"),
        ('{"sentence1": "a", "sentence2": "b", "score": NaN}', r"score nan is not a finite number"),
        ('{"sentence1": "a", "sentence2": "b", "score": Infinity}', r"score inf is not a finite number"),
        ({**GOOD, "score": 7}, r"outside the task's range"),
        ({**GOOD, "sentence1": None}, r"test.jsonl:2: sentence1 must be a string"),
        ({**GOOD, "sentence2": 5}, r"sentence2 must be a string"),
        ("[]", r"test.jsonl:2: expected a JSON object, got a list"),
    ],
)
def test_bad_sts_rows_are_refused(tmp_path: Path, row: object, message: str) -> None:
    path = _sts(tmp_path, GOOD, row)
    with pytest.raises(LinqEvalError, match=message) as info:
        read_pairs(path, 0, 5)
    assert "\n" not in str(info.value)


def test_labelled_rows_are_strict(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": 3}\n', encoding="utf-8")
    assert read_labelled(path) == [("a", "x"), ("b", "3")]
    for bad, message in (('{"text": "c", "label": null}', "label must be a string or an integer"),
                         ('{"text": "c", "label": true}', "label must be a string or an integer"),
                         ('{"text": null, "label": "x"}', "text must be a string")):
        path.write_text('{"text": "a", "label": "x"}\n' + bad + "\n", encoding="utf-8")
        with pytest.raises(LinqEvalError, match=f"labels.jsonl:2: {message}"):
            read_labelled(path)


def test_the_shipped_data_passes_the_strict_readers() -> None:
    for folder in sorted(p for p in DATA.iterdir() if (p / "corpus.jsonl").is_file()):
        data = read_beir(folder)
        assert data.corpus and data.queries and data.qrels
    for folder in sorted(p for p in DATA.iterdir() if (p / "test.jsonl").is_file()):
        assert read_pairs(folder / "test.jsonl", 0, 5)["score"]
