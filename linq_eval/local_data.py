"""Local retrieval data in the BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``).

Reading is strict: a missing file or column, an unparsable line, an empty file or a qrel pointing outside
the corpus is one error naming the file and line, raised before any model loads. Nothing is skipped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from linq_eval.errors import LinqEvalError

logger = logging.getLogger(__name__)

DATA_ENV = "LINQ_DATA_DIR"


def data_dir() -> Path:
    """``$LINQ_DATA_DIR``, else ``../shared/data`` beside the working directory or beside this checkout."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BeirData:
    """One split of a BEIR folder, in memory."""

    corpus: dict[str, dict[str, str]]  # id -> {"title", "text"}
    queries: dict[str, str]  # id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line, each checked for the required fields."""
    if not path.is_file():
        raise LinqEvalError(f"{path} is missing: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LinqEvalError(f"{path}:{number}: not valid JSON ({exc.msg}): fix or remove the line") from None
            missing = [key for key in required if key not in row]
            if missing:
                raise LinqEvalError(f"{path}:{number}: missing field(s) {missing}: every line needs {list(required)}")
            rows.append((number, row))
    if not rows:
        raise LinqEvalError(f"{path} is empty: it needs at least one line")
    return rows


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise LinqEvalError(f"{path} is missing: a BEIR folder needs qrels/<split>.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise LinqEvalError(f"{path}:1: expected the header 'query-id<TAB>corpus-id<TAB>score'")
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise LinqEvalError(f"{path}:{number}: expected 3 tab-separated columns, got {len(row)}")
            try:
                grade = int(float(row[2]))
            except ValueError:
                raise LinqEvalError(f"{path}:{number}: score {row[2]!r} is not a number") from None
            qrels.setdefault(row[0], {})[row[1]] = grade
    if not qrels:
        raise LinqEvalError(f"{path} has no judgments: it needs at least one row after the header")
    return qrels


def read_beir(folder: Path, split: str = "test") -> BeirData:
    """Read and check a BEIR folder; every qrel must point at a known query and document."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LinqEvalError(f"data folder {folder} does not exist: set {DATA_ENV} to the folder holding it")
    corpus = {
        str(row["_id"]): {"title": str(row.get("title") or ""), "text": str(row["text"])}
        for _, row in read_jsonl(folder / "corpus.jsonl", ("_id", "text"))
    }
    queries = {str(row["_id"]): str(row["text"]) for _, row in read_jsonl(folder / "queries.jsonl", ("_id", "text"))}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels = _read_qrels(qrels_path)
    for qid, docs in qrels.items():
        if qid not in queries:
            raise LinqEvalError(f"{qrels_path}: query-id {qid!r} is not in queries.jsonl")
        unknown = next((d for d in docs if d not in corpus), None)
        if unknown is not None:
            raise LinqEvalError(f"{qrels_path}: corpus-id {unknown!r} (query {qid!r}) is not in corpus.jsonl")
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


def folder_sha256(folder: Path) -> str:
    """One checksum over every data file of a folder (relative paths and contents, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".jsonl", ".tsv", ".json"}):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def read_pairs(path: Path, min_score: float, max_score: float) -> dict[str, list]:
    """Read an STS file (``sentence1``, ``sentence2``, ``score`` per line), checking every score's range."""
    rows = read_jsonl(path, ("sentence1", "sentence2", "score"))
    columns: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    for number, row in rows:
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            raise LinqEvalError(f"{path}:{number}: score {row['score']!r} is not a number") from None
        if not min_score <= score <= max_score:
            raise LinqEvalError(
                f"{path}:{number}: score {score} is outside the task's range [{min_score}, {max_score}]: "
                "use the dataset's original scale"
            )
        for key in ("sentence1", "sentence2"):
            if not isinstance(row[key], str):
                raise LinqEvalError(f"{path}:{number}: {key} must be a string")
            columns[key].append(row[key])
        columns["score"].append(score)
    return columns


def to_mteb_split(data: BeirData) -> dict:
    """The ``RetrievalSplitData`` dict that mteb's retrieval evaluator reads."""
    from datasets import Dataset

    ids = list(data.corpus)
    return {
        "corpus": Dataset.from_dict({
            "id": ids,
            "title": [data.corpus[i]["title"] for i in ids],
            "text": [data.corpus[i]["text"] for i in ids],
        }),
        "queries": Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
        "relevant_docs": data.qrels,
        "top_ranked": None,
    }
