"""A gate's baseline: per-task and per-query scores of a reference system, with the provenance that defines comparability.

``results/baselines/NAME.json`` (``$LINQ_BASELINE_DIR``): typed (pydantic, closed), versioned, and sealed with a
checksum of its own content, so a truncated or hand-edited file is refused rather than trusted. A gate runs the
checkpoint under the baseline's settings; whatever it cannot reproduce (another instruction table, light
manifest, data copy or mteb version) is a mismatch, and a mismatch cannot be decided on. A baseline is never
replaced silently: saving over one needs ``--force`` and keeps the old file beside it as
``NAME.<UTC time>.json`` (a backup, listed as such).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_bytes, atomic_write_json, read_json_file
from linq_eval.core.settings import baseline_dir

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PACKAGES = ("linq-eval", "mteb", "sentence-transformers", "transformers", "torch", "peft", "bitsandbytes",
            "pytrec-eval-terrier")
# settings under which the checkpoint must be evaluated exactly as the baseline was (else refused: exit 2)
COMPARABLE = ("bits", "max_length", "dtype", "instructions_sha256", "use_instructions", "light_manifests",
              "data_sha256", "merge_adapter")
# NAME.2026-12-04T071230Z: a replaced baseline, kept beside its successor (such names are not given to new ones)
BACKUP = re.compile(r"(?P<name>.+)\.(?P<stamp>\d{4}-\d{2}-\d{2}T\d{6}Z)")


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
    merge_adapter: bool = False  # below 16 bits: adapter checkpoints merged into their base before quantising


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
        body = self.model_dump(exclude={"checksum"})
        if not body["provenance"]["merge_adapter"]:  # off: the body (and checksum) of baselines saved before it
            del body["provenance"]["merge_adapter"]
        return body

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


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise LinqEvalError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' (it names a file)")
    return name


def baseline_path(name: str, directory: Path | None = None) -> Path:
    return (directory or baseline_dir()) / f"{check_name(name)}.json"


def check_new(name: str, directory: Path | None = None, *, force: bool = False) -> Path:
    """The path a new baseline NAME is saved to: refused when one is there, unless ``force`` (then backed up)."""
    path = baseline_path(name, directory)
    if backup_of(name):
        raise LinqEvalError(f"baseline name {name!r} ends like a backup's (NAME.<UTC time>): choose another name")
    if path.exists() and not force:
        raise LinqEvalError(f"baseline {name!r} already exists at {path}: pass --force to replace it (the old one "
                            f"is kept beside it as {name}.<UTC time>.json), or choose another name")
    return path


def write_baseline(baseline: Baseline, directory: Path | None = None, *, force: bool = False) -> Path:
    """Write ``<directory>/<name>.json`` atomically; an existing one is refused, or with ``force`` backed up first."""
    path = check_new(baseline.name, directory, force=force)
    sealed = baseline.sealed()
    if not all(math.isfinite(s.main_score) and all(math.isfinite(v) for v in s.per_query.values())
               for s in sealed.tasks.values()):
        raise LinqEvalError(f"baseline {baseline.name!r}: NaN or infinite scores cannot be a baseline: fix the model")
    if path.exists():  # forced: the old file is copied aside before the new one replaces it (each step atomic)
        backup = backup_path(path)
        atomic_write_bytes(backup, path.read_bytes())
        logger.warning("baseline %s replaced (--force): the old one is kept as %s", baseline.name, backup)
    atomic_write_json(path, sealed.model_dump())  # an interrupted save never leaves half a baseline
    return path


def backup_path(path: Path) -> Path:
    """``NAME.<UTC time>.json`` beside ``path``, the first free one (two replacements in one second get -1, -2)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    candidate = path.with_name(f"{path.stem}.{stamp}.json")
    n = 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}.{stamp}-{n}.json")
    return candidate


def list_baselines(directory: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The baseline names in a folder, and its backups (backup name -> the baseline it replaced)."""
    folder = directory or baseline_dir()
    names, backups = [], {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        original = backup_of(path.stem)
        if original:
            backups[path.stem] = original
        else:
            names.append(path.stem)
    return names, backups


def backup_of(stem: str) -> str | None:
    """The baseline a backup's file stem replaced (None: not a backup's name)."""
    match = BACKUP.fullmatch(re.sub(r"-\d+$", "", stem))
    return match["name"] if match else None


def load_baseline(name: str, directory: Path | None = None) -> Baseline:
    """Read and verify a baseline: present, JSON, this schema, its own checksum, finite per-query scores."""
    path = baseline_path(name, directory)
    fix = f"save it again with `linq-eval baseline save {name} --force ...`"
    if not path.is_file():
        known = list_baselines(path.parent)[0]
        raise LinqEvalError(f"no baseline {name!r} at {path} (known: {', '.join(known) or 'none'}): "
                            f"create it with `linq-eval baseline save {name} --model M ...`")
    try:
        raw = read_json_file(path)  # empty, cut, not UTF-8 or not JSON: one line
    except LinqEvalError as exc:
        raise LinqEvalError(f"baseline {exc}; or {fix}") from None
    except OSError as exc:
        raise LinqEvalError(f"{path}: baseline cannot be read ({exc.strerror}): {fix}") from None
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
