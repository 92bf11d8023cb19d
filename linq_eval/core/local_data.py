"""Local retrieval data in the BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``).

Reading is strict: a missing file or column, an unparsable line, an empty file, bytes that are not UTF-8, a
field of the wrong type, a duplicate id or judgment, or a qrel pointing outside the corpus is one error naming
the file and line, raised before any model loads. Nothing is skipped, and nothing is last-wins.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import check_file, folder_sha256, inside, parse_json
from linq_eval.core.settings import DATA_ENV, data_dir  # noqa: F401 -- re-exported for the data readers

DATA_SUFFIXES = (".jsonl", ".tsv", ".json")

logger = logging.getLogger(__name__)

# Task, split and subset names become file and folder names (results, per-query scores, qrels/<split>.tsv):
# one path component of plain characters, never '/', '\\', a leading '.' (so never '..'), NUL or a newline.
# Every task and split name mteb ships matches it.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
MAX_GRADE = 2**31 - 1  # pytrec_eval keeps relevance grades in C ints


def check_name(value: object, what: str, where: str = "") -> str:
    """``value`` if it is a safe ``what`` name (task, split, subset) to put in a path; else a one-line error."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise LinqEvalError(f"{where}{what} {value!r} is not a {what} name: use letters, digits, '_', '.' and '-' "
                            "(no '/', '..' or spaces)")
    return value


@dataclass(frozen=True)
class BeirData:
    """One split of a BEIR folder, in memory."""

    corpus: dict[str, dict[str, str]]  # id -> {"title", "text"}
    queries: dict[str, str]  # id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}


# -- one rule per field we read: a problem description, or None when the value is fine --------------------------
def _text_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a "\ud800" escape: valid JSON, but no tokenizer can take it
            return "holds a lone surrogate (a \\ud800-\\udfff escape): it is not valid Unicode text"
    return None


def _id_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"must be a string or an integer, got {json.dumps(value)[:40]}"
    if value == "":
        return "must not be empty"
    return _text_problem(str(value))


def _number_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):  # bool is an int in Python
        return f"{value!r} is not a number"[:80]
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    return None


def _label_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"must be a string or an integer, got {json.dumps(value)[:40]}"
    return _text_problem(str(value))


FIELD_RULES: dict[str, Callable[[object], str | None]] = {
    "_id": _id_problem, "text": _text_problem, "title": lambda v: None if v is None else _text_problem(v),
    "sentence1": _text_problem, "sentence2": _text_problem, "score": _number_problem, "label": _label_problem,
}


def read_jsonl(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line, each an object with the required fields, every field
    checked by its rule in :data:`FIELD_RULES` (optional ones when present)."""
    if not path.is_file():
        raise LinqEvalError(f"{path} is missing: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    rows = []
    with path.open("rb") as handle:  # bytes: a line that is not UTF-8 is an error naming the line, not a traceback
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LinqEvalError(f"{path}:{number}: not UTF-8 (byte {exc.start + 1} of the line): re-save the "
                                    "file as UTF-8") from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark is not content
            if not line.strip():
                continue
            row = parse_json(line, f"{path}:{number}", "fix or remove the line")
            if not isinstance(row, dict):
                raise LinqEvalError(f"{path}:{number}: expected a JSON object, got a {_json_type(row)}: every line "
                                    f"is one object with {list(required)}")
            missing = [key for key in required if key not in row]
            if missing:
                raise LinqEvalError(f"{path}:{number}: missing field(s) {missing}: every line needs {list(required)}")
            for key in (*required, *(k for k in optional if k in row)):
                rule = FIELD_RULES.get(key)
                problem = rule(row[key]) if rule else None
                if problem:
                    raise LinqEvalError(f"{path}:{number}: {key} {problem}")
            rows.append((number, row))
    if not rows:
        raise LinqEvalError(f"{path} is empty: it needs at least one line")
    return rows


def _json_type(value: Any) -> str:  # noqa: ANN401 -- any JSON value
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _unique(path: Path, rows: list[tuple[int, dict]]) -> dict[str, tuple[int, dict]]:
    """Rows by their ``_id`` (as a string); a repeated id is refused, naming both lines."""
    out: dict[str, tuple[int, dict]] = {}
    for number, row in rows:
        key = str(row["_id"])
        if key in out:
            raise LinqEvalError(f"{path}:{number}: duplicate _id {key!r} (first at line {out[key][0]}): every id "
                                "must be unique; remove or rename one")
        out[key] = (number, row)
    return out


def _grade(text: str, path: Path, number: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise LinqEvalError(f"{path}:{number}: score {text[:40]!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value != int(value) or value > MAX_GRADE:
        raise LinqEvalError(f"{path}:{number}: score {text[:40]!r} is not a relevance grade: give a whole number "
                            f"from 0 (not relevant) to {MAX_GRADE}")
    return int(value)


def _read_qrels(path: Path) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], int]]:
    """The judgments, and the line of each (query-id, corpus-id) pair for later errors."""
    if not path.is_file():
        raise LinqEvalError(f"{path} is missing: a BEIR folder needs qrels/<split>.tsv")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LinqEvalError(f"{path}:{line}: not UTF-8: re-save the file as UTF-8") from None
    lines = text.split("\n")
    if [h.strip() for h in lines[0].split("\t")[:3]] != ["query-id", "corpus-id", "score"]:
        raise LinqEvalError(f"{path}:1: expected the header 'query-id<TAB>corpus-id<TAB>score'")
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for number, line in enumerate(lines[1:], start=2):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        row = line.split("\t")  # tab-separated, no quoting: an id is exactly what stands between the tabs
        if len(row) < 3:
            raise LinqEvalError(f"{path}:{number}: expected 3 tab-separated columns, got {len(row)}")
        qid, did = row[0], row[1]
        for name, value in (("query-id", qid), ("corpus-id", did)):
            if not value.strip():
                raise LinqEvalError(f"{path}:{number}: empty {name}: every row needs query-id, corpus-id and score")
        grade = _grade(row[2], path, number)
        if (qid, did) in first_line:
            raise LinqEvalError(f"{path}:{number}: duplicate judgment of corpus-id {did[:80]!r} for query-id "
                                f"{qid[:80]!r} (first at line {first_line[qid, did]}): keep one row per pair")
        first_line[qid, did] = number
        qrels.setdefault(qid, {})[did] = grade
    if not qrels:
        raise LinqEvalError(f"{path} has no judgments: it needs at least one row after the header")
    return qrels, first_line


def read_corpus(path: Path) -> dict[str, dict[str, str]]:
    """A BEIR ``corpus.jsonl``: id -> {"title", "text"} (a missing title is ""), each id once (file:line errors)."""
    return {key: {"title": row.get("title") or "", "text": row["text"]}
            for key, (_, row) in _unique(path, read_jsonl(path, ("_id", "text"), ("title",))).items()}


def read_beir(folder: Path, split: str = "test") -> BeirData:
    """Read and check a BEIR folder; every qrel must point at a known query and document."""
    folder = Path(folder)
    check_name(split, "split", f"{folder}: ")
    if not folder.is_dir():
        raise LinqEvalError(f"data folder {folder} does not exist: set {DATA_ENV} to the folder holding it")
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    corpus = read_corpus(corpus_path)
    queries = {key: row["text"] for key, (_, row) in _unique(queries_path, read_jsonl(queries_path, ("_id", "text"))).items()}
    qrels_path = inside(folder, Path("qrels") / f"{split}.tsv")
    qrels, lines = _read_qrels(qrels_path)
    for qid, docs in qrels.items():
        if qid not in queries:
            raise LinqEvalError(f"{qrels_path}:{lines[qid, next(iter(docs))]}: query-id {qid[:80]!r} is not in "
                                "queries.jsonl")
        unknown = next((d for d in docs if d not in corpus), None)
        if unknown is not None:
            raise LinqEvalError(f"{qrels_path}:{lines[qid, unknown]}: corpus-id {unknown[:80]!r} (query {qid[:80]!r}) "
                                "is not in corpus.jsonl")
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


def data_sha256(folder: Path) -> str:
    """One checksum over every data file of a folder (relative paths and contents, in sorted order)."""
    return folder_sha256(folder, DATA_SUFFIXES)


def read_pairs(path: Path, min_score: float, max_score: float) -> dict[str, list]:
    """Read an STS file (``sentence1``, ``sentence2``, ``score`` per line), checking every score's range."""
    rows = read_jsonl(path, ("sentence1", "sentence2", "score"))
    columns: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    for number, row in rows:
        score = float(row["score"])
        if not min_score <= score <= max_score:
            raise LinqEvalError(
                f"{path}:{number}: score {score} is outside the task's range [{min_score}, {max_score}]: "
                "use the dataset's original scale"
            )
        columns["sentence1"].append(row["sentence1"])
        columns["sentence2"].append(row["sentence2"])
        columns["score"].append(score)
    return columns


def read_labelled(path: Path) -> list[tuple[str, str]]:
    """(text, label) per line of a labelled JSONL file (classification, clustering); labels are strings or
    integers, compared as strings."""
    check_file(path, "labelled file", "a JSONL file with 'text' and 'label'")
    return [(row["text"], str(row["label"])) for _, row in read_jsonl(path, ("text", "label"))]

