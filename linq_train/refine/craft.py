"""Crafting: raw task data -> :class:`~linq_train.schema.Example` lists, one task at a time.

Four families (docs/training.md, Crafting): BEIR retrieval folders (qrels positives), pair files for STS/NLI
(pairs scoring at least a threshold), labelled texts for classification/clustering (a same-label text
as positive, in-batch negatives off), and a corpus's titles as weak queries for their own bodies. Each task
also carries its candidate pool ("corpus"), which the teacher ranks and the miner draws negatives from.

Every example records the instruction evaluation gives its task (:func:`linq_train.refine.policy.task_instruction`),
the one the teacher and training instruct it with.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.instructions import InstructionTable
from linq_eval.core.local_data import read_beir, read_corpus, read_labelled, read_pairs
from linq_train.refine.config import BeirSource, LabelledSource, PairSource, Source, TitleSource
from linq_train.refine.policy import task_instruction
from linq_train.schema import NO_IN_BATCH_NEGATIVES, Example

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    """One task's examples and candidate pool (doc id -> text)."""

    task: str
    task_type: str
    instruction: str
    corpus: dict[str, str]
    examples: list[Example] = field(default_factory=list)


def doc_text(doc: dict[str, str]) -> str:
    """Title and text joined, as mteb's retrieval evaluation encodes BEIR documents."""
    return f"{doc.get('title', '')} {doc['text']}".strip()


def _folder(data_dir: Path, folder: str) -> Path:
    path = Path(folder).expanduser()
    return path if path.is_absolute() else data_dir / folder


def craft_beir(source: BeirSource, data_dir: Path, table: InstructionTable) -> TaskData:
    """Every (query, document graded >= min_grade) of the split; all of a query's positives are known."""
    folder = _folder(data_dir, source.folder)
    if not (folder / "qrels" / f"{source.split}.tsv").is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise LinqEvalError(f"{folder}/qrels/{source.split}.tsv does not exist: set split to one of {splits} "
                            f"for source '{source.task}'")
    data = read_beir(folder, split=source.split)
    instruction = task_instruction(table, source.task, source.task_type)
    query_ids = sorted(data.queries, key=lambda q: (len(q), q))[: source.max_queries]
    corpus = _pool(data.corpus, {d for q in query_ids for d in data.qrels[q]}, source.max_corpus)
    answers = _answers(folder, source.answers) if source.answers else {}
    examples = []
    for qid in query_ids:
        positives = sorted(d for d, grade in data.qrels[qid].items() if grade >= source.min_grade)
        for doc_id in positives:
            if not corpus[doc_id]:
                continue  # e.g. Cranfield docs 471 and 995 are empty in the original
            examples.append(Example(
                task=source.task, task_type=source.task_type, instruction=instruction, query=data.queries[qid],
                positive=corpus[doc_id], source=f"beir:{source.folder}/{source.split}", query_id=qid,
                positive_id=doc_id, known_positive_ids=sorted(data.qrels[qid]), answers=answers.get(qid, []),
                meta=json.dumps({"grade": data.qrels[qid][doc_id]}),
            ))
    return TaskData(source.task, source.task_type, instruction, corpus, examples)


def _answers(folder: Path, name: str) -> dict[str, list[str]]:
    path = _folder(folder, name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LinqEvalError(f"answers file {path}: cannot read it as JSON ({exc}): give {{query id: [answers]}}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise LinqEvalError(f"answers file {path}: expected an object mapping query ids to lists of answers")
    return {str(k): [str(a) for a in v] for k, v in raw.items()}


def _pool_ids(ids: Iterable[str], judged: set[str], cap: int | None) -> list[str]:
    """The candidate pool's ids (sorted by length, then id): all, or the judged ones plus the first ``cap`` others
    (a CPU cap)."""
    ordered = sorted(ids, key=lambda d: (len(d), d))
    if cap is None:
        return ordered
    keep = judged | set([d for d in ordered if d not in judged][:cap])
    return [d for d in ordered if d in keep]


def _pool(docs: dict[str, dict[str, str]], judged: set[str], cap: int | None) -> dict[str, str]:
    """The candidate pool of a BEIR source: id -> title and text, as evaluation encodes them."""
    return {d: doc_text(docs[d]) for d in _pool_ids(docs, judged, cap)}


def craft_pairs(source: PairSource, data_dir: Path, table: InstructionTable) -> TaskData:
    """Pairs with score >= min_score; the pool is every distinct sentence of the file."""
    path = _folder(data_dir, source.folder)
    path = path / "test.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise LinqEvalError(f"pair file {path} does not exist: point source '{source.task}' at a folder "
                            "with test.jsonl or at a .jsonl file")
    columns = read_pairs(path, *source.score_range)
    instruction = task_instruction(table, source.task, source.task_type)
    ids: dict[str, str] = {}
    for text in columns["sentence1"] + columns["sentence2"]:
        ids.setdefault(text, f"s{len(ids)}")
    corpus = {i: t for t, i in ids.items()}
    # Every pair above the threshold links two sentences: none of a query's partners may become a negative.
    partners: dict[str, set[str]] = defaultdict(set)
    kept = [(a, b, s) for a, b, s in zip(columns["sentence1"], columns["sentence2"], columns["score"], strict=True)
            if s >= source.min_score and a.strip() and b.strip() and a != b][: source.max_pairs]
    for a, b, _ in kept:
        partners[ids[a]].add(ids[b])
        partners[ids[b]].add(ids[a])
    examples = [
        Example(task=source.task, task_type=source.task_type, instruction=instruction, query=a, positive=b,
                source=f"pairs:{source.folder}", query_id=ids[a], positive_id=ids[b],
                known_positive_ids=sorted(partners[ids[a]]), meta=json.dumps({"pair_score": score}))
        for a, b, score in kept
    ]
    return TaskData(source.task, source.task_type, instruction, corpus, examples)


def craft_labelled(source: LabelledSource, data_dir: Path, table: InstructionTable, seed: int) -> TaskData:
    """Each text with ``positives_per_text`` other texts of its label; the pool is every text."""
    rows = read_labelled(_folder(data_dir, source.path))
    instruction = task_instruction(table, source.task, source.task_type)
    corpus = {f"t{i}": text for i, (text, _) in enumerate(rows)}
    by_label: dict[str, list[str]] = defaultdict(list)
    for i, (_, label) in enumerate(rows):
        by_label[label].append(f"t{i}")
    rng = random.Random(seed)
    examples = []
    for i, (text, label) in enumerate(rows):
        qid = f"t{i}"
        others = [d for d in by_label[label] if d != qid]
        for doc_id in rng.sample(others, min(source.positives_per_text, len(others))):
            examples.append(Example(
                task=source.task, task_type=source.task_type, instruction=instruction, query=text,
                positive=corpus[doc_id], source=f"labelled:{Path(source.path).name}", query_id=qid,
                positive_id=doc_id, known_positive_ids=list(by_label[label]),
                in_batch_negatives=source.task_type not in NO_IN_BATCH_NEGATIVES,
                meta=json.dumps({"label": label}),
            ))
    return TaskData(source.task, source.task_type, instruction, corpus, examples)


_SENTENCE_END = ".!?:"


def body_without_title(title: str, text: str) -> str:
    """A document's body without the copies of its title at the start.

    Cranfield repeats every title as the body's first sentence (``"<title> . <abstract>"``, twice for doc 410):
    left in, the positive would contain its query verbatim and teach nothing. A title that only begins the first
    sentence (CISI: ``"Case Studies in Library Computer Systems does not follow ..."``) is part of the body.
    """
    title, body = title.strip(), text.strip()
    while title and body.startswith(title):
        rest = body[len(title):]
        if not rest.strip():
            return ""  # a title-only record
        if not (title[-1] in _SENTENCE_END or rest.lstrip(" \t")[0] in _SENTENCE_END + "\n"):
            return body  # the title opens a sentence of the body
        body = rest.lstrip(" \t\n" + _SENTENCE_END).strip()
    return body


def craft_titles(source: TitleSource, data_dir: Path, table: InstructionTable, seed: int) -> TaskData:
    """Title -> body of the same document, for every document with a long enough title and body.

    The pool is every such document's body (or the sampled ones plus ``max_corpus`` others). A query's known
    positives are all documents with the same title (reprints, series volumes), so none becomes its negative.
    """
    folder = _folder(data_dir, source.folder)
    if not (folder / "corpus.jsonl").is_file():
        raise LinqEvalError(f"{folder / 'corpus.jsonl'} does not exist: point source '{source.task}' at a BEIR folder "
                            "with corpus.jsonl")
    docs = read_corpus(folder / "corpus.jsonl")
    pairs: dict[str, tuple[str, str]] = {}
    for doc_id in sorted(docs, key=lambda d: (len(d), d)):
        title = docs[doc_id]["title"].strip()
        body = body_without_title(title, docs[doc_id]["text"])
        if len(title) >= source.min_title_chars and len(body) >= source.min_body_chars:
            pairs[doc_id] = (title, body)
    if not pairs:
        raise LinqEvalError(f"{folder}/corpus.jsonl has no document with a title of >= {source.min_title_chars} and "
                            f"a body of >= {source.min_body_chars} characters: lower min_title_chars/min_body_chars "
                            f"of source '{source.task}' or give a folder with titles")
    chosen = list(pairs)
    if source.max_pairs is not None and source.max_pairs < len(chosen):
        picked = set(random.Random(seed).sample(chosen, source.max_pairs))
        chosen = [d for d in chosen if d in picked]
    corpus = {d: pairs[d][1] for d in _pool_ids(pairs, set(chosen), source.max_corpus)}

    def title_key(title: str) -> str:
        return " ".join(title.lower().split())

    same_title: dict[str, list[str]] = defaultdict(list)
    for doc_id, (title, _) in pairs.items():
        same_title[title_key(title)].append(doc_id)
    instruction = task_instruction(table, source.task, source.task_type, fallback=source.instruction)
    examples = [
        Example(task=source.task, task_type=source.task_type, instruction=instruction, query=pairs[d][0],
                positive=pairs[d][1], source=f"titles:{source.folder}", query_id=f"title-{d}", positive_id=d,
                known_positive_ids=sorted(same_title[title_key(pairs[d][0])]))
        for d in chosen
    ]
    return TaskData(source.task, source.task_type, instruction, corpus, examples)


Crafter = Callable[[Source, Path, InstructionTable, int], TaskData]
# source kind -> crafter: a new family is one entry here and one Source class in config.py
CRAFTERS: dict[str, Crafter] = {
    "beir": lambda s, d, t, _seed: craft_beir(s, d, t),
    "pairs": lambda s, d, t, _seed: craft_pairs(s, d, t),
    "labelled": craft_labelled,
    "titles": craft_titles,
}


def craft(sources: list[Source], data_dir: Path, table: InstructionTable, seed: int = 0) -> dict[str, TaskData]:
    """Craft every source into its own task (two sources may not share a task name)."""
    tasks: dict[str, TaskData] = {}
    for source in sources:
        data = CRAFTERS[source.kind](source, data_dir, table, seed)
        if data.task in tasks:
            raise LinqEvalError(f"task '{data.task}' is crafted from two sources: give each source its own task")
        tasks[data.task] = data
        logger.info("crafted %d examples for %s (%d candidates)", len(data.examples), data.task, len(data.corpus))
    return tasks
