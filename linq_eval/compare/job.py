"""One (model, precision) evaluation for ``linq-eval compare``, measured, in a process of its own.

A fresh process per precision makes peak memory (RSS on CPU, ``max_memory_allocated`` on GPU) that precision's
own, and a crash or an out-of-memory kill of one precision leaves the others running. The evaluation itself is
``runner.run`` (mteb, result cache, per-query scores), so a finished precision is never recomputed and an
interrupted one resumes. Writes ``<out>.json``: status, per-query file of each task, cost, and the embeddings of
a fixed sample of texts (similarity fidelity). Under torchrun / accelerate launch one such process runs per rank
(``driver.execute``), each encoding a share; rank 0's writes.

    python -m linq_eval.compare.job JOB.json
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_bytes, atomic_write_json, read_json_file


@dataclass(frozen=True)
class Job:
    model: str | None
    bits: int
    adapter: str | None
    tasks: list[str]
    cache: str  # mteb result cache folder
    out: str  # this job's JSON (its sample embeddings go beside it, .npy)
    batch_size: int = 32
    max_tokens_per_batch: int | None = None  # None: the encoder's default (A/A runs change it)
    max_length: int | None = None
    sample: dict[str, list[str]] = field(default_factory=dict)  # "queries"/"documents" -> texts to embed
    # content digests of a local model directory and adapter: a stored job is reused only for the same weights
    digests: dict[str, str] = field(default_factory=dict)
    dtype: str | None = None  # None: the machine's rule (bf16 where supported); a study pins it across machines
    merge_adapter: bool = False  # the adapter merged into the base before quantising (below 16 bits only)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _peak_memory() -> dict[str, int]:
    import resource

    import torch

    peak = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux reports KiB
    if torch.cuda.is_available():
        peak["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    return peak


def throughput(usage: dict[str, dict[str, float]]) -> float | None:
    """Tokens per second of the evaluation's query and document encoding."""
    sides = [usage[s] for s in ("query", "document") if s in usage]
    seconds = sum(v["seconds"] for v in sides)
    return sum(v["tokens"] for v in sides) / seconds if seconds else None


def execute(job: Job) -> dict[str, Any]:
    """Run the job; never raises for a precision that cannot run or fails: that is the result."""
    import mteb
    import numpy as np

    from linq_eval.core.per_query import per_query_path
    from linq_eval.core.precision import cpu_isa
    from linq_eval.evaluation.runner import RunSpec, load_encoder, on_this_rank, run
    from linq_eval.models import distributed
    from linq_eval.models.build import describe

    spec = on_this_rank(RunSpec(model=job.model, bits=job.bits, adapter=job.adapter, max_length=job.max_length,
                                 dtype=job.dtype, merge_adapter=job.merge_adapter))
    result: dict[str, Any] = {"job": asdict(job), "status": "ok"}
    t0 = time.perf_counter()
    try:
        encoder = load_encoder(spec)
    except Exception as exc:  # noqa: BLE001 -- no bitsandbytes backend, no GPU for a kernel: reported, not raised
        return {**result, "status": "unavailable", "reason": _first_line(exc)}
    load_seconds = time.perf_counter() - t0
    encoder.show_progress = False
    if job.max_tokens_per_batch:
        encoder.max_tokens_per_batch = job.max_tokens_per_batch
    cache = mteb.ResultCache(job.cache)
    meta = encoder.mteb_model_meta
    resumed = [t for t in job.tasks if cache.get_task_result_path(t, meta).is_file()]
    try:
        t0 = time.perf_counter()
        run(spec, job.tasks, job.cache, batch_size=job.batch_size, encoder=encoder)
        eval_seconds = time.perf_counter() - t0
        usage = {side: dict(v) for side, v in encoder.usage.items()}  # the evaluation's, not the sample's
        sample = {side: encoder.encode_texts(texts, label=f"sample {side}") for side, texts in job.sample.items()}
    except LinqEvalError as exc:  # NaN/inf embeddings among them
        return {**result, "status": "failed", "reason": str(exc)}
    per_query = {}
    for task in job.tasks:
        path = per_query_path(cache.cache_path, cache.get_task_result_path(task, meta))
        if not path.is_file():
            return {**result, "status": "failed", "reason": f"{task}: no per-query scores at {path}"}
        per_query[task] = str(path)
    for side, emb in sample.items() if distributed.world().main else ():  # under a launcher rank 0 writes
        buffer = io.BytesIO()
        np.save(buffer, emb)
        atomic_write_bytes(Path(job.out).with_suffix(f".{side}.npy"), buffer.getvalue())
    cost = {"load_seconds": load_seconds, "eval_seconds": eval_seconds, "encode": usage,
            "resumed_tasks": resumed,  # their results came from the cache: the times above leave them out
            "tokens_per_second": throughput(usage),
            "processes": distributed.world().size,  # under a launcher: seconds and memory rank 0's, tokens all ranks'
            "weight_bytes": describe(encoder.model)["weight_bytes"], "dtype": describe(encoder.model)["dtype"],
            "cpu_isa": cpu_isa(),  # quantised CPU kernels differ by instruction set, even at a pinned dtype
            **_peak_memory()}
    return {**result, "model_name": meta.name, "per_query": per_query, "cost": cost}


def main(argv: list[str] | None = None) -> int:
    from linq_eval.core.children import stop_with_parent
    from linq_eval.core.quiet import quiet_harmless_warnings
    from linq_eval.models import distributed

    quiet_harmless_warnings()  # a logger's level is not inherited from the parent, as the quiet environment is
    stop_with_parent()  # a killed compare or study never leaves this job writing into a restarted run's folders
    path = Path((argv or sys.argv[1:])[0])
    job = Job(**read_json_file(path))
    result = execute(job)
    # under torchrun / accelerate launch: every rank finished its share (a rank that died fails this barrier, so
    # no result is written); then rank 0 writes
    distributed.barrier()
    if distributed.world().main:
        # a job's JSON exists only once it finished (written atomically): an interrupted one is simply rerun
        atomic_write_json(job.out, result, default=str)
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
