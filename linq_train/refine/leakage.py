"""Leakage guard: no training query or positive may duplicate a text of the held-out evaluation sets.

Two checks, both on normalised text (NFKC, lower case, runs of non-alphanumerics collapsed to one space):
an exact match, and a near-duplicate found by MinHash over character shingles with LSH banding, confirmed
by the exact Jaccard similarity of the two shingle sets (so the banding only proposes, never decides).
An evaluation document counts whole (title and text), as its text, and as its title and its body without a
repeated title apart: the texts a ``titles`` source crafts from a corpus.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.local_data import read_beir, read_pairs
from linq_train.refine.config import EvalSet, LeakageConfig
from linq_train.refine.craft import body_without_title, doc_text
from linq_train.schema import Example

logger = logging.getLogger(__name__)

_PRIME = (1 << 31) - 1  # hashes and permutation coefficients stay below 2**31, so a*h+b fits in uint64
_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Case, accents' encoding, punctuation and spacing do not make a text new."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def shingles(norm: str, size: int) -> set[int]:
    """Stable 31-bit hashes of the character ``size``-grams (the whole text when shorter)."""
    grams = {norm[i : i + size] for i in range(max(1, len(norm) - size + 1))}
    return {zlib.crc32(g.encode()) & _PRIME for g in grams}


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _document_texts(corpus: dict[str, dict[str, str]], name: str) -> list[tuple[str, str]]:
    """Every text a training source may hold of an evaluation document: title and text joined (as evaluation
    encodes it), its text alone, and, where it has a title, the title alone and the body without a repeated title
    (what a ``titles`` source trains on). One pass per kind, in this order: the index keeps a text's first origin."""
    origin = {did: f"{name}:doc:{did}" for did in corpus}
    out = [(doc_text(doc), origin[did]) for did, doc in corpus.items()]
    out += [(doc["text"], origin[did]) for did, doc in corpus.items() if doc["title"]]
    for did, doc in corpus.items():
        if doc["title"].strip():
            out.append((doc["title"], origin[did]))
            body = body_without_title(doc["title"], doc["text"])
            if body and body != doc["text"].strip():
                out.append((body, origin[did]))
    return out


def eval_texts(eval_sets: list[EvalSet], data_dir: Path) -> list[tuple[str, str]]:
    """(text, origin) for every query, document or sentence of the evaluation sets."""
    out: list[tuple[str, str]] = []
    for spec in eval_sets:
        folder = Path(spec.folder).expanduser()
        folder = folder if folder.is_absolute() else data_dir / folder
        if spec.kind == "beir":
            data = read_beir(folder, split=spec.split)
            out += [(q, f"{folder.name}:query:{qid}") for qid, q in data.queries.items()]
            out += _document_texts(data.corpus, folder.name)
        else:
            path = folder / f"{spec.split}.jsonl" if folder.is_dir() else folder
            if not path.is_file():
                raise LinqEvalError(f"leakage.eval_sets: {path} does not exist: give a folder with {spec.split}.jsonl")
            columns = read_pairs(path, float("-inf"), float("inf"))
            for key in ("sentence1", "sentence2"):
                out += [(t, f"{folder.name}:{key}:{i}") for i, t in enumerate(columns[key])]
    return out


@dataclass
class LeakageIndex:
    """Normalised evaluation texts, indexed for exact and near-duplicate look-up."""

    cfg: LeakageConfig
    exact: dict[str, str] = field(default_factory=dict)  # normalised text -> origin
    texts: list[tuple[set[int], str]] = field(default_factory=list)  # shingle set, origin
    buckets: dict[tuple[int, bytes], list[int]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        rng = np.random.default_rng(0)
        self._a = rng.integers(1, _PRIME, self.cfg.num_perm, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, self.cfg.num_perm, dtype=np.uint64)

    def _bands(self, grams: set[int]) -> list[tuple[int, bytes]]:
        hashes = np.fromiter(grams, dtype=np.uint64, count=len(grams))
        signature = ((np.outer(self._a, hashes) + self._b[:, None]) % _PRIME).min(axis=1)
        rows = self.cfg.num_perm // self.cfg.bands
        return [(band, signature[band * rows : (band + 1) * rows].tobytes()) for band in range(self.cfg.bands)]

    def add(self, text: str, origin: str) -> None:
        norm = normalise(text)
        if not norm:
            return
        self.exact.setdefault(norm, origin)
        grams = shingles(norm, self.cfg.shingle_chars)
        self.texts.append((grams, origin))
        for key in self._bands(grams):
            self.buckets[key].append(len(self.texts) - 1)

    def match(self, text: str) -> str | None:
        """Why ``text`` leaks (``"exact <origin>"`` / ``"near-duplicate <origin> (J=0.83)"``), or None."""
        norm = normalise(text)
        if not norm:
            return None
        if norm in self.exact:
            return f"exact {self.exact[norm]}"
        grams = shingles(norm, self.cfg.shingle_chars)
        candidates = {i for key in self._bands(grams) for i in self.buckets.get(key, ())}
        best = max(((jaccard(grams, self.texts[i][0]), i) for i in candidates), default=(0.0, -1))
        if best[0] >= self.cfg.near_duplicate_threshold:
            return f"near-duplicate {self.texts[best[1]][1]} (J={best[0]:.2f})"
        return None


def build_index(cfg: LeakageConfig, data_dir: Path) -> LeakageIndex:
    index = LeakageIndex(cfg)
    for text, origin in eval_texts(cfg.eval_sets, data_dir):
        index.add(text, origin)
    logger.info("leakage index: %d evaluation texts", len(index.texts))
    return index


def guard(examples: list[Example], index: LeakageIndex) -> tuple[list[Example], list[tuple[Example, str]]]:
    """Split examples into kept and (dropped, reason); each text is looked up once."""
    seen: dict[str, str | None] = {}

    def leak(text: str) -> str | None:
        if text not in seen:
            seen[text] = index.match(text)
        return seen[text]

    kept, dropped = [], []
    for example in examples:
        reason = next((f"{side} {why}" for side, text in (("query", example.query), ("positive", example.positive))
                       if (why := leak(text))), None)
        if reason:
            dropped.append((example, reason))
        else:
            kept.append(example)
    return kept, dropped
