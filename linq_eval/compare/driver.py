"""``linq-eval compare --bits 4 16``: does a cheaper precision give the same answers, per model and per task?

Each (model, precision) is evaluated through mteb in a process of its own (``compare_run``), results in mteb's
cache with per-query scores; the highest precision is the reference and is also run a second time with other
batching (A/A) to measure the noise floor. ``compare_analysis`` turns the per-query scores into TOST verdicts
(docs/stats.md); ``compare_report`` prints and writes them.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_json, read_json_file
from linq_eval.core.precision import check_merge, merges

logger = logging.getLogger(__name__)

AA_BATCH = {"batch_size": 7, "max_tokens_per_batch": 512}  # the A/A rerun: other batch sizes, same everything else
SAMPLE_QUERIES, SAMPLE_DOCUMENTS = 64, 256  # texts embedded at every precision for similarity fidelity



@dataclass(frozen=True)
class CompareSystem:
    label: str
    model: str | None  # None: Linq-Embed-Mistral ($LINQ_MODEL)
    adapter: str | None = None
    merge_adapter: bool = False  # below 16 bits: the adapter merged into the base before quantising


@dataclass(frozen=True)
class CompareSpec:
    systems: list[CompareSystem]
    bits: list[int]  # highest first: the reference
    tasks: list[str]
    margin: float = 0.01
    cache: str = "results/mteb"
    out: str = "results/compare"
    batch_size: int = 32
    max_length: int | None = None
    allow_pooled: bool = False
    aa: bool = True
    dtype: str | None = None  # None: each precision's machine rule (bf16 where supported); else pinned
    pooled_warnings: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def make_systems(models: list[str] | None, adapters: list[str] | None, *, merge: bool = False) -> list[CompareSystem]:
    """Each --model as it is, then the first model with each --adapter (a checkpoint) on top; with ``merge``
    (--merge-adapter) the adapters are merged before quantising, and their labels say so."""
    check_merge(adapters, merge)
    models = models or [None]
    systems = [CompareSystem(m or "Linq-Embed-Mistral", m) for m in models]
    systems += [CompareSystem(f"{systems[0].label}+{Path(a).name}{' (merged)' if merge else ''}", models[0], a,
                              merge) for a in adapters or []]
    labels = [s.label for s in systems]
    if len(set(labels)) != len(labels):
        raise LinqEvalError(f"--model/--adapter name the same system twice ({labels}): give each once")
    return systems


def light_task_names(tasks: list[str]) -> list[str]:
    from linq_eval.core.light_manifest import available

    names = [t if t.endswith("-light") else t + "-light" for t in tasks] or available()
    missing = [n for n in names if n not in available()]
    if missing:
        raise LinqEvalError(f"no light set {missing[0]}: build it with `linq-eval light build "
                            f"{missing[0].removesuffix('-light')}`, or drop --light")
    return names


def check(spec: CompareSpec) -> CompareSpec:
    """Everything checkable before a model loads: bits, margin, models, adapters, tasks, pool independence."""
    from linq_eval.core.precision import check_bits

    bits = sorted({check_bits(b) for b in spec.bits}, reverse=True)  # the cheap checks first: no mteb import
    if len(bits) < 2:
        raise LinqEvalError(f"--bits {' '.join(map(str, spec.bits))}: give at least two precisions, e.g. --bits 4 16")
    if not 0 < spec.margin < 1:
        raise LinqEvalError(f"--margin {spec.margin}: give the equivalence margin on the score scale, e.g. 0.01")
    if not spec.tasks:
        raise LinqEvalError("no tasks: give --tasks TASK ... or --light")
    from linq_eval.evaluation.checks import PER_QUERY_ONLY, check_model_ref, check_pool_independence
    from linq_eval.evaluation.runner import get_task
    from linq_eval.models.build import check_adapter

    for system in spec.systems:
        check_model_ref(system.model)
        if system.adapter:
            check_adapter(system.adapter)
    for name in spec.tasks:
        get_task(name, task_type="Retrieval", purpose=PER_QUERY_ONLY.format(what="compare"))
    models = {s.label: s.model for s in spec.systems if not s.adapter}  # a checkpoint (base + adapter) did not pool
    warnings = check_pool_independence(spec.tasks, models, allow_pooled=spec.allow_pooled)
    for w in warnings:
        logger.warning("%s: the comparison is biased (--allow-pooled)", w)
    return CompareSpec(**{**asdict(spec), "systems": spec.systems, "bits": bits, "pooled_warnings": warnings})


def sample_texts(task_name: str, seed: int = 0) -> dict[str, list[str]]:
    """A fixed, seeded sample of one task's queries and documents, embedded at every precision."""
    import numpy as np

    from linq_eval.evaluation.runner import get_task
    from linq_eval.evaluation.systems import task_data

    task = get_task(task_name)
    data = task_data(task, task.metadata.eval_splits[0])
    rng = np.random.default_rng(seed)
    docs = data.doc_text()
    qtext = dict(zip(data.query_ids, data.queries["text"], strict=True))
    q = sorted(rng.choice(sorted(qtext), size=min(SAMPLE_QUERIES, len(qtext)), replace=False))
    d = sorted(rng.choice(sorted(docs), size=min(SAMPLE_DOCUMENTS, len(docs)), replace=False))
    return {"queries": [qtext[i] for i in q], "documents": [docs[i] for i in d]}


def _jobs(spec: CompareSpec, sample: dict[str, list[str]]) -> list[tuple[str, int, bool, Any]]:
    from linq_eval.compare.job import Job
    from linq_eval.evaluation.runner import RunSpec, content_digests

    runs = Path(spec.out) / "runs"
    jobs = []
    for s in spec.systems:
        digests = content_digests(RunSpec(model=s.model, adapter=s.adapter))
        for bits in spec.bits:
            out = runs / f"{_slug(s.label)}-{bits}bit.json"
            jobs.append((s.label, bits, False, Job(s.model, bits, s.adapter, spec.tasks, spec.cache, str(out),
                                                    spec.batch_size, None, spec.max_length, sample, digests,
                                                    spec.dtype, merges(bits, s.adapter, s.merge_adapter))))
        if spec.aa:  # the reference precision again, batched otherwise, into a cache of its own
            out = runs / f"{_slug(s.label)}-{spec.bits[0]}bit-aa.json"
            jobs.append((s.label, spec.bits[0], True, Job(s.model, spec.bits[0], s.adapter, spec.tasks,
                                                           str(Path(spec.out) / "aa-cache"), str(out),
                                                           AA_BATCH["batch_size"], AA_BATCH["max_tokens_per_batch"],
                                                           spec.max_length, {}, digests, spec.dtype,
                                                           merges(spec.bits[0], s.adapter, s.merge_adapter))))
    return jobs


def _finished(job: Any) -> dict[str, Any] | None:  # noqa: ANN401
    out = Path(job.out)
    if not out.is_file():
        return None
    try:
        result = read_json_file(out)
    except LinqEvalError as exc:  # cut or damaged: the job runs again
        logger.warning("%s: recomputing this precision", exc)
        return None
    if not isinstance(result, dict) or _stored_job(result.get("job")) != asdict(job) or result.get("status") != "ok":
        return None  # another job, or one that failed: run again
    if not all(Path(p).is_file() for p in result["per_query"].values()):
        return None
    return result


def _stored_job(stored: Any) -> Any:  # noqa: ANN401 -- whatever the JSON holds
    """A stored job with the fields added since it was written at their defaults (the same job then)."""
    from dataclasses import MISSING, fields

    from linq_eval.compare.job import Job

    if not isinstance(stored, dict):
        return stored
    return {**{f.name: f.default for f in fields(Job) if f.default is not MISSING}, **stored}


def execute(job: Any) -> dict[str, Any]:  # noqa: ANN401
    """One job in a child process; a crash (out of memory, a segfault in a kernel) is a result too.

    Under torchrun / accelerate launch every rank starts its child; the children form a group of their own, each
    encodes a share, rank 0's writes the job's JSON, and every rank returns rank 0's outcome. There a crash stops
    the run instead (exit 2; the launcher then stops every rank and its child): a sibling child on another rank
    could wait for the crashed one until the group's timeout (30 minutes), before the group has even formed.
    """
    from linq_eval.core.children import child_env
    from linq_eval.models import distributed

    env = child_env(distributed.child_env())  # the job stops if this process is killed
    with tempfile.TemporaryDirectory(prefix="linq-eval-job-") as folder:  # private: every rank writes its own
        job_file = Path(folder) / "job.json"
        atomic_write_json(job_file, asdict(job))
        proc = subprocess.run([sys.executable, "-m", "linq_eval.compare.job", str(job_file)], env=env,
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0 and distributed.active():
        raise LinqEvalError(f"rank {distributed.world().rank}: {job.bits} bits of {job.model or 'Linq-Embed-Mistral'} "
                            f"crashed ({_crash_reason(proc)}): under a launcher a crash stops the run; finished "
                            "precisions are kept, run the same command again to resume")
    return distributed.from_main(functools.partial(_outcome, job, proc))


def _crash_reason(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['no output'])[-1][:300]}"


def _outcome(job: Any, proc: subprocess.CompletedProcess) -> dict[str, Any]:  # noqa: ANN401
    out = Path(job.out)
    if proc.returncode != 0 or not out.is_file():
        return {"job": asdict(job), "status": "crashed", "reason": _crash_reason(proc)}
    try:
        return read_json_file(out)
    except LinqEvalError as exc:
        return {"job": asdict(job), "status": "crashed", "reason": str(exc)}


def compare(spec: CompareSpec, progress: Any = None) -> dict[str, Any]:  # noqa: ANN401
    """Run (or reuse) every job, then analyse; returns the report written to ``spec.out``."""
    from linq_eval.compare.analysis import analyse
    from linq_eval.models import distributed

    sample = sample_texts(spec.tasks[0])
    results = []
    for label, bits, aa, job in _jobs(spec, sample):
        done = distributed.from_main(functools.partial(_finished, job))  # under a launcher: rank 0's files decide
        if progress:
            progress(f"{label} at {bits} bits{' (A/A)' if aa else ''}: {'stored' if done else 'running'}")
        results.append({"system": label, "bits": bits, "aa": aa, **(done or execute(job))})
    return distributed.from_main(functools.partial(analyse, spec, results))  # it reads rank 0's files


def check_outcome(report: dict[str, Any], out: Path) -> None:
    """Refuse a comparison where nothing was compared: every precision failed, or every reference did (exit 2).

    A partial failure (one precision of several) is a result, reported in the table and in compare.md.
    """
    failed = [p for p in report["precisions"] if p["status"] != "ok"]
    if report["rows"] or not failed:
        return
    first = failed[0]
    cause = f"first: {first['system']} at {first['bits']} bits, {first['status']}: {first['reason']}"
    if len(failed) == len(report["precisions"]):
        raise LinqEvalError(f"all {len(failed)} precisions failed, nothing was compared ({cause}): see "
                            f"{out / 'compare.md'}")
    raise LinqEvalError(f"the reference precision ({report['reference_bits']} bits) failed for every system, "
                        f"nothing was compared ({cause}): see {out / 'compare.md'}")
