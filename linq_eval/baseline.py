"""A gate's baseline: per-task and per-query scores of a reference system, with the provenance that defines comparability.

``results/baselines/NAME.json`` (``$LINQ_BASELINE_DIR``): typed (pydantic, closed), versioned, and sealed with a
checksum of its own content, so a truncated or hand-edited file is refused rather than trusted. A gate runs the
checkpoint under the baseline's settings; whatever it cannot reproduce (another instruction table, light
manifest, data copy or mteb version) is a mismatch, and a mismatch cannot be decided on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from linq_eval.errors import LinqEvalError

SCHEMA_VERSION = 1
BASELINE_DIR_ENV = "LINQ_BASELINE_DIR"
DEFAULT_DIR = "results/baselines"
PACKAGES = ("linq-eval", "mteb", "sentence-transformers", "transformers", "torch", "peft", "bitsandbytes",
            "pytrec-eval-terrier")
# settings under which the checkpoint must be evaluated exactly as the baseline was (else: CANNOT DECIDE)
COMPARABLE = ("bits", "max_length", "dtype", "instructions_sha256", "use_instructions", "light_manifests",
              "data_sha256")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provenance(_Closed):
    model: str | None  # the reference as given (None: Linq-Embed-Mistral / $LINQ_MODEL)
    model_name: str  # the mteb model name its results are filed under
    revision: str | None
    model_sha256: str  # content digest of the weights (or the hub id and pinned revision)
    adapter: str | None = None
    adapter_sha256: str | None = None
    bits: int
    max_length: int
    dtype: str
    batch_size: int
    instructions: str | None = None  # the JSON table given, if any (None: the built-in table)
    instructions_sha256: str
    use_instructions: bool
    light_manifests: dict[str, str] = Field(default_factory=dict)  # light task -> manifest checksum
    data_sha256: dict[str, str | None] = Field(default_factory=dict)  # task -> local data checksum (None: hub)
    packages: dict[str, str | None] = Field(default_factory=dict)


class TaskScores(_Closed):
    main_score: float
    metric: str = "ndcg_at_10"
    split: str
    per_query: dict[str, float]


class Baseline(_Closed):
    schema_version: int = SCHEMA_VERSION
    name: str
    created: str
    provenance: Provenance
    tasks: dict[str, TaskScores]
    checksum: str = ""

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude={"checksum"})

    def computed_checksum(self) -> str:
        payload = json.dumps(self.body(), sort_keys=True, separators=(",", ":"), allow_nan=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def sealed(self) -> Baseline:
        return self.model_copy(update={"checksum": self.computed_checksum()})


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def baseline_dir() -> Path:
    return Path(os.environ.get(BASELINE_DIR_ENV) or DEFAULT_DIR)


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise LinqEvalError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' (it names a file)")
    return name


def baseline_path(name: str, directory: Path | None = None) -> Path:
    return (directory or baseline_dir()) / f"{check_name(name)}.json"


def write_baseline(baseline: Baseline, directory: Path | None = None) -> Path:
    path = baseline_path(baseline.name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baseline.sealed().model_dump(), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: an interrupted save never leaves half a baseline
    return path


def load_baseline(name: str, directory: Path | None = None) -> Baseline:
    """Read and verify a baseline: present, JSON, this schema, its own checksum, finite per-query scores."""
    path = baseline_path(name, directory)
    fix = f"save it again with `linq-eval baseline save {name} ...`"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise LinqEvalError(f"no baseline {name!r} at {path} (known: {', '.join(known) or 'none'}): "
                            f"create it with `linq-eval baseline save {name} --model M ...`") from None
    except json.JSONDecodeError as exc:
        raise LinqEvalError(f"{path}:{exc.lineno}: baseline is not valid JSON ({exc.msg}): {fix}") from None
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        got = raw.get("schema_version") if isinstance(raw, dict) else None
        raise LinqEvalError(f"{path}: baseline schema_version {got!r} is not {SCHEMA_VERSION}: {fix}")
    try:
        baseline = Baseline.model_validate(raw)
    except ValueError as exc:
        first = (str(exc).splitlines()[1:2] or [str(exc)])[0].strip()
        raise LinqEvalError(f"{path}: not a baseline ({first}): {fix}") from None
    if baseline.checksum != baseline.computed_checksum():
        raise LinqEvalError(f"{path}: checksum does not match the content (corrupted or edited by hand): {fix}")
    if not baseline.tasks:
        raise LinqEvalError(f"{path}: the baseline holds no tasks: {fix}")
    return baseline


def mismatches(baseline: Provenance, candidate: Provenance) -> list[str]:
    """Settings that differ between the baseline's evaluation and the checkpoint's (each one a reason to refuse)."""
    out = []
    for key in COMPARABLE:
        a, b = getattr(baseline, key), getattr(candidate, key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                out.append(f"{key} differs for {', '.join(keys)}")
            else:
                out.append(f"{key} {a!r} (baseline) != {b!r} (checkpoint)")
    a, b = baseline.packages.get("mteb"), candidate.packages.get("mteb")
    if (a or "").split(".")[:2] != (b or "").split(".")[:2]:  # metrics and task definitions change between minors
        out.append(f"mteb {a} (baseline) != {b} (checkpoint)")
    return out


def version_notes(baseline: Provenance, candidate: Provenance) -> list[str]:
    """Package versions that differ but do not by themselves make the scores incomparable (reported)."""
    return [f"{name} {baseline.packages.get(name)} -> {candidate.packages.get(name)}" for name in PACKAGES
            if name != "mteb" and baseline.packages.get(name) != candidate.packages.get(name)]
