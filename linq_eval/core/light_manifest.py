"""A light set's manifest: which queries and documents of a retrieval task it keeps, and how they were chosen.

One small JSON file per light task in ``tasks_light/`` (ids, parameters, pooling retrievers, checksums; no
text: the text comes from the task's own data). The file is canonical (sorted keys, fixed layout, no
timestamps), so the same inputs give a byte-identical manifest, and it carries a checksum of itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_text, read_json_file
from linq_eval.core.local_data import SAFE_NAME, check_name
from linq_eval.core.settings import light_dir

SCHEMA_VERSION = 1
COUNT_KEYS = ("queries", "corpus", "full_queries", "full_corpus")
LIGHT_SUFFIX = "-light"


class Retriever(BaseModel):
    """A pooling retriever and what pins it (package version and settings, or model weights)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # "bm25" or a model reference as linq-eval takes it (pypi:..., hub id, directory)
    kind: Literal["lexical", "dense"]
    canonical: str  # the model's canonical name (mteb name where known), for pool-independence checks
    fingerprint: dict[str, Any]  # e.g. {"bm25s": "0.2.x", "k1": 1.5} or {"weights_sha256": ...}


class LightParameters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    queries: int = Field(gt=0)  # sample size asked for (fewer when the task has fewer queries)
    depth: int = Field(gt=0)  # top-k candidates per query and retriever
    seed: int
    min_doc_chars: int = 4  # shorter pooled documents are left out (mteb's quality rule); judged ones never


class LightManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    name: str
    source_task: str
    split: str = "test"
    subset: str = "default"
    data: dict[str, str]  # {"kind": "local", "sha256": ...} or {"kind": "hub", "path": ..., "revision": ...}
    parameters: LightParameters
    retrievers: list[Retriever]
    counts: dict[str, int]
    query_ids: list[str]
    corpus_ids: list[str]
    checksum: str = ""

    # Names and the split become file paths (results, per-query scores, qrels/<split>.tsv): a hand-edited
    # manifest with a recomputed checksum must not steer a write outside the output folder.
    @field_validator("source_task", "split", "subset")
    @classmethod
    def _safe(cls, value: str) -> str:
        if not SAFE_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a plain name (letters, digits, '_', '.', '-'; no '/' or '..')")
        return value

    @field_validator("query_ids", "corpus_ids")
    @classmethod
    def _ids(cls, ids: list[str]) -> list[str]:
        if not ids:
            raise ValueError("keeps no ids")
        if any(not i for i in ids):
            raise ValueError("holds an empty id")
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"holds {twice[:80]!r} twice")
        return ids

    @model_validator(mode="after")
    def _consistent(self) -> LightManifest:
        if self.name != light_name(self.source_task):
            raise ValueError(f"name {self.name[:80]!r} is not {light_name(self.source_task)!r} (source_task + "
                             f"'{LIGHT_SUFFIX}')")
        missing = [k for k in COUNT_KEYS if k not in self.counts]
        if missing:
            raise ValueError(f"counts lacks {missing}")
        if self.counts["queries"] != len(self.query_ids) or self.counts["corpus"] != len(self.corpus_ids):
            raise ValueError("counts.queries / counts.corpus differ from the number of ids")
        if self.data.get("kind") not in {"local", "hub"}:
            raise ValueError(f"data.kind {self.data.get('kind')!r} is neither 'local' nor 'hub'")
        return self

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"checksum"})

    def computed_checksum(self) -> str:
        return hashlib.sha256(_canonical(self.body()).encode()).hexdigest()

    def sealed(self) -> LightManifest:
        return self.model_copy(update={"checksum": self.computed_checksum()})

    def to_json(self) -> str:
        return _canonical({**self.body(), "checksum": self.computed_checksum()})

    def pooled_canonicals(self) -> set[str]:
        return {r.canonical for r in self.retrievers if r.kind == "dense"}


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def light_name(source_task: str) -> str:
    return source_task + LIGHT_SUFFIX


def manifest_path(name: str, directory: Path | None = None) -> Path:
    check_name(name, "light set")  # a name from the command line reaches the file system here
    return (directory or light_dir()) / f"{name}.json"


def stats_path(name: str, directory: Path | None = None) -> Path:
    check_name(name, "light set")
    return (directory or light_dir()) / "descriptive_stats" / "Retrieval" / f"{name}.json"


def available(directory: Path | None = None) -> list[str]:
    """Names of the light tasks whose manifests are present."""
    folder = directory or light_dir()
    return sorted(p.stem for p in folder.glob(f"*{LIGHT_SUFFIX}.json")) if folder.is_dir() else []


def _field_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as ``field.path: message`` (one line, user text quoted)."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown field {where!r}"
    if error["type"] == "missing":
        return f"missing field {where!r}"
    message = error["msg"].removeprefix("Value error, ")
    text = f"field {where!r}: {message}" if error["loc"] else message
    return text.replace("\n", " ").replace("\r", " ")


def load_manifest(path: Path) -> LightManifest:
    """Read and verify a manifest: schema, content (names, split, ids, counts), and its own checksum."""
    path = Path(path)
    if not path.is_file():
        raise LinqEvalError(f"{path}: no such light manifest: build it with `linq-eval light build`")
    try:
        raw = read_json_file(path)
    except RecursionError:
        raw = None
    except LinqEvalError as exc:
        raise LinqEvalError(f"{str(exc).removesuffix(': restore or delete it')}: rebuild it with "
                            "`linq-eval light build`") from None
    if not isinstance(raw, dict):
        raise LinqEvalError(f"{path}: not a light manifest (expected a JSON object): rebuild it with "
                            "`linq-eval light build`")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise LinqEvalError(f"{path}: schema_version {repr(raw.get('schema_version'))[:40]} is not {SCHEMA_VERSION}: "
                            "rebuild it with this version of `linq-eval light build`")
    edited = "checksum does not match its content (edited by hand?)"
    try:
        manifest = LightManifest.model_validate(raw)
    except ValidationError as exc:
        also = f"{edited}, and it is " if not _raw_checksum_matches(raw) else ""
        raise LinqEvalError(f"{path}: {also}not a light manifest ({_field_error(exc)}): rebuild it with "
                            "`linq-eval light build`") from None
    if manifest.checksum != manifest.computed_checksum():
        raise LinqEvalError(f"{path}: {edited}: rebuild it with `linq-eval light build`")
    return manifest


def _raw_checksum_matches(raw: dict[str, Any]) -> bool:
    """Whether a manifest's JSON still has the checksum it was written with (before any validation)."""
    try:
        body = _canonical({k: v for k, v in raw.items() if k != "checksum"})
    except (TypeError, ValueError, RecursionError):
        return False
    return raw.get("checksum") == hashlib.sha256(body.encode()).hexdigest()


def write_manifest(manifest: LightManifest, directory: Path | None = None) -> Path:
    """Write the sealed manifest atomically (an interrupted build never leaves half a manifest), inside
    ``directory``."""
    folder = directory or light_dir()
    return atomic_write_text(manifest_path(manifest.name, folder), manifest.to_json(), folder=folder)


def require_pool_independence(manifests: list[LightManifest], models: dict[str, str], *,
                              allow_pooled: bool = False, override: str | None = "--allow-pooled") -> list[str]:
    """Refuse a comparison on light sets pooled by one of the compared models (docs/stats.md).

    ``models`` maps a label (e.g. "baseline") to the model's canonical name. A pooled model keeps its full-corpus
    score while every other system gains, so the comparison is biased against it. With ``allow_pooled`` the
    conflicts are returned as warnings instead (``override`` names the option; the gate has none: a biased gate
    passes regressions). ``compare`` and ``gate`` call this before anything loads.
    """
    conflicts = [f"{m.name} was pooled with {name} ({label})" for m in manifests
                 for label, name in models.items() if name in m.pooled_canonicals()]
    if conflicts and not allow_pooled:
        fix = f"pass {override} to compare anyway (biased)" if override else "use the full task"
        raise LinqEvalError(f"{conflicts[0]}: a light set favours models that did not pool it; rebuild it with "
                            f"other --retrievers, or {fix}")
    return conflicts
