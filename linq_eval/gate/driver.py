"""``linq-eval baseline save`` and ``linq-eval gate``: is a checkpoint no worse than its baseline, beyond delta?

Both evaluate through ``runner.run`` (mteb, its result cache, per-query nDCG@10), one task at a time into a cache
folder keyed by the evaluated weights' content digest: an interrupted run resumes at the next task, and a
checkpoint rewritten in place is evaluated afresh. A stored task is reused only when its files read back and
its per-query scores average to mteb's own score; otherwise that task alone is recomputed, with a warning.
Everything that can be checked is checked before a model loads (baseline file, checkpoint, tasks, light
manifests, instruction table, data copies, pool independence). The decision itself is ``gate_rule.decide``
(pure). Whatever goes wrong is a ``LinqEvalError`` (exit 2, ``errors.EXIT_ERROR``), never a FAIL.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import pickle
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linq_eval.core.baseline import Baseline, Provenance, TaskScores
from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import read_json_file

if TYPE_CHECKING:
    from linq_eval.core.gate_rule import GateDecision
    from linq_eval.evaluation.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

DEFAULT_CACHE = "results/gate-cache"
DEFAULT_OUT = "results/gate"
Progress = Callable[[str, str], None]  # (task, "stored" | "running" | "done")
# mteb rounds its retrieval metrics to 5 decimals (and its result files to 6): a stored per-query file whose mean
# is further than that from mteb's score belongs to another run, or was damaged or edited
MEAN_TOLERANCE = 5e-6 + 1e-9


class StoredResultError(LinqEvalError):
    """A stored result or per-query file that cannot be trusted (unreadable, or disagreeing with mteb's score)."""


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes a system's scores besides its weights (what a baseline pins)."""

    bits: int = 16
    max_length: int | None = None  # None: the model's own limit (recorded as the effective value)
    dtype: str | None = None  # None: bf16 where supported, else fp32 (recorded as the effective value)
    instructions: str | None = None
    batch_size: int = 32
    use_instructions: bool | None = None  # None: the loader's choice (mteb's entry, or the linq policy)
    merge_adapter: bool = False  # below 16 bits: an adapter checkpoint is merged into its base before quantising


@dataclass(frozen=True)
class Prepared:
    """The checks' results: the tasks and the parts of the provenance known before any model loads."""

    tasks: list[str]
    light_manifests: dict[str, str]
    data_sha256: dict[str, str | None]
    instructions_sha256: str


def prepare(tasks: list[str], instructions: str | None) -> Prepared:
    """Check tasks (retrieval, known, data present) and read what pins them; loads data, no model."""
    from linq_eval.core.instructions import load_instructions
    from linq_eval.core.light_manifest import load_manifest, manifest_path
    from linq_eval.evaluation.checks import PER_QUERY_ONLY
    from linq_eval.evaluation.runner import check_tasks
    from linq_eval.tasks.light import is_light

    if not tasks:
        raise LinqEvalError("no tasks: give --tasks TASK ... or --light")
    table = load_instructions(instructions)
    loaded = check_tasks(list(dict.fromkeys(tasks)), task_type="Retrieval",
                         purpose=PER_QUERY_ONLY.format(what="the gate"))
    manifests = {t.metadata.name: load_manifest(manifest_path(t.metadata.name)).checksum for t in loaded
                 if is_light(t.metadata.name)}
    data = {t.metadata.name: (getattr(t, "local_source", None) or {}).get("sha256") for t in loaded}
    for task in loaded:
        task.unload_data()
    return Prepared([t.metadata.name for t in loaded], manifests, data, table.checksum())


def _cache_folder(root: str | Path, sha256: str, settings: EvalSettings) -> Path:
    """One folder per (weights, settings): mteb's experiment names do not record every setting (instructions on/off)."""
    items = {k: v for k, v in asdict(settings).items() if k != "merge_adapter" or v}  # off: the folders it had
    key = hashlib.sha256(f"{sha256}|{sorted(items.items())}".encode()).hexdigest()
    return Path(root) / key[:16]


def _task_scores(result_path: Path, per_query_file: Path) -> tuple[TaskScores, str | None]:
    """A task's stored scores, checked: both files read back, and the per-query mean is mteb's own score.

    Raises ``StoredResultError`` (a ``LinqEvalError``) naming the file and what is wrong with it.
    """
    from linq_eval.core.per_query import read_per_query
    from linq_eval.tasks.local_source import recorded_local_sha256

    try:
        result = read_json_file(result_path)
        stored = read_json_file(per_query_file)
        metric = stored.get("metric", "ndcg_at_10")
        recorded = stored.get("eval_split")
        split = recorded if recorded in result["scores"] else next(iter(result["scores"]))  # the task's eval split
        rows = result["scores"][split]
        row = next((r for r in rows if r.get("hf_subset") == "default"), rows[0])
        main, expected = float(row["main_score"]), float(row.get(metric, row["main_score"]))
        per_query = read_per_query(per_query_file, split)
        data = recorded_local_sha256(result)
    except LinqEvalError as exc:  # empty, cut, not UTF-8, not JSON
        raise StoredResultError(str(exc)) from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise StoredResultError(f"{result_path} or {per_query_file}: not a result of this task "
                                f"({type(exc).__name__}: {exc})") from None
    values = list(per_query.values()) if isinstance(per_query, dict) else []
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise StoredResultError(f"{per_query_file}: no per-query scores, or scores that are not numbers")
    mean = math.fsum(values) / len(values)
    if not abs(mean - expected) <= MEAN_TOLERANCE:  # NaN fails too
        raise StoredResultError(f"{per_query_file}: its {len(values)} per-query {metric} scores average {mean:.6f}, "
                                f"but mteb's {result_path.name} says {expected:.6f}")
    return TaskScores(main_score=main, split=split, per_query=per_query), data


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _readable(path: Path) -> bool:
    try:
        read_json_file(path)
        return True
    except LinqEvalError:
        return False


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:200]}"


def _load_encoder(spec: Any) -> Any:  # noqa: ANN401 -- a RunSpec in, a LinqEncoder out
    """``runner.load_encoder``, with a damaged checkpoint (wrong-typed config, pickled weights) as one line."""
    from linq_eval.evaluation.runner import load_encoder

    what = spec.adapter or spec.model
    try:
        return load_encoder(spec)
    except LinqEvalError:
        raise
    except pickle.UnpicklingError as exc:
        raise LinqEvalError(f"{what}: pickled weights are refused (loading a pickle can run code; {_first_line(exc)}):"
                            " save the checkpoint as safetensors (save_pretrained does by default)") from None
    except (ValueError, TypeError, KeyError, AttributeError, OSError, RuntimeError) as exc:
        # peft, transformers and torch raise anything on a damaged checkpoint; the traceback is theirs, not ours
        logger.info("loading %s failed", what, exc_info=True)
        raise LinqEvalError(f"{what}: cannot be loaded ({_first_line(exc)}): check its config files and weights, "
                            "or save the checkpoint again") from None


def _stored_scores(task: str, result_path: Path,
                   pq: Path) -> tuple[tuple[TaskScores, str | None] | None, str | None]:
    """A task's stored scores, if any can be trusted, and the note to record when they could not (then removed)."""
    try:
        if result_path.is_file() and pq.is_file():
            return _task_scores(result_path, pq), None
        if result_path.is_file() and not _readable(result_path):  # mteb would trip over it
            raise StoredResultError(f"{result_path}: unreadable")
    except StoredResultError as exc:  # a kill at a write, a disk error, an edit: recompute this task only
        message = f"{task}: the stored result cannot be trusted ({exc}): recomputing this task"
        logger.warning("%s", message)
        _remove(result_path, pq)
        return None, message.replace("recomputing", "recomputed")
    return None, None


def _fresh_scores(task: str, result_path: Path, pq: Path, cache_folder: Path) -> tuple[TaskScores, str | None]:
    """The scores of a task just evaluated, checked like stored ones."""
    if not pq.is_file():
        raise LinqEvalError(f"{task}: mteb wrote no per-query scores at {pq}: delete {cache_folder} (or give "
                            "another --cache) and run again")
    try:
        return _task_scores(result_path, pq)
    except StoredResultError as exc:
        raise LinqEvalError(f"{task}: freshly computed scores do not check out ({exc}): delete "
                            f"{cache_folder} (or give another --cache) and run again") from None


def evaluate(model: str | None, adapter: str | None, settings: EvalSettings, tasks: list[str], cache_root: str | Path,
             sha256: str, progress: Progress | None = None,
             notes: list[str] | None = None) -> tuple[dict[str, TaskScores], dict[str, Any]]:
    """Evaluate one system, task by task (stored tasks are reused); returns scores and the effective settings.

    A stored task whose files cannot be trusted is recomputed, with a warning (logged, and appended to ``notes``).
    """
    import mteb

    from linq_eval.core.per_query import per_query_path
    from linq_eval.evaluation.runner import RunSpec, on_this_rank, run
    from linq_eval.models import distributed
    from linq_eval.models.build import describe

    spec = on_this_rank(RunSpec(model=model, bits=settings.bits, adapter=adapter, max_length=settings.max_length,
                                instructions=settings.instructions, dtype=settings.dtype,
                                merge_adapter=settings.merge_adapter))
    cache_folder = _cache_folder(cache_root, sha256, settings)
    encoder = _load_encoder(spec)
    if settings.use_instructions is not None:  # a gate evaluates as its baseline did, whatever the checkpoint's kind
        encoder.use_instructions = settings.use_instructions
    encoder.show_progress = False
    meta = encoder.mteb_model_meta
    cache = mteb.ResultCache(cache_folder)
    scores: dict[str, TaskScores] = {}
    data: dict[str, str | None] = {}
    for task in tasks:
        result_path = cache.get_task_result_path(task, meta)
        pq = per_query_path(cache.cache_path, result_path)
        # the cache is rank 0's (under torchrun / accelerate launch): it alone reads it, every rank gets its answer
        stored, message = distributed.from_main(functools.partial(_stored_scores, task, result_path, pq))
        if message is not None and notes is not None:
            notes.append(message)
        if progress:
            progress(task, "stored" if stored else "running")
        if stored is None:
            run(spec, [task], cache_folder, batch_size=settings.batch_size, encoder=encoder, show_progress=False)
            stored = distributed.from_main(functools.partial(_fresh_scores, task, result_path, pq, cache_folder))
        scores[task], data[task] = stored
        if progress:
            progress(task, "done")
    effective = {"model_name": meta.name, "revision": meta.revision, "max_length": int(encoder.model.max_seq_length),
                 "dtype": settings.dtype or describe(encoder.model)["dtype"], "use_instructions": encoder.use_instructions,
                 "data_sha256": data}
    return scores, effective


def _provenance(model: str | None, adapter: str | None, model_sha: str, adapter_sha: str | None,
                settings: EvalSettings, prepared: Prepared, effective: dict[str, Any]) -> Provenance:
    from linq_eval.core.baseline import package_versions

    return Provenance(model=model, model_name=effective["model_name"], revision=effective["revision"],
                      model_sha256=model_sha, adapter=adapter, adapter_sha256=adapter_sha, bits=settings.bits,
                      max_length=effective["max_length"], dtype=effective["dtype"], batch_size=settings.batch_size,
                      instructions=settings.instructions, instructions_sha256=prepared.instructions_sha256,
                      use_instructions=effective["use_instructions"], light_manifests=prepared.light_manifests,
                      data_sha256=effective["data_sha256"], packages=package_versions(),
                      merge_adapter=settings.merge_adapter)


def _resolve_dtype(settings: EvalSettings) -> EvalSettings:
    """Pin the 16-bit dtype by name, so that a baseline records it and a gate on another CPU reproduces it."""
    if settings.dtype is not None or settings.bits != 16:
        return settings
    import torch

    from linq_eval.models.build import sixteen_bit_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return EvalSettings(**{**settings.__dict__, "dtype": sixteen_bit_dtype(device)})


def save_baseline(name: str, model: str | None, adapter: str | None, settings: EvalSettings, tasks: list[str], *,
                  directory: Path | None = None, cache_root: str | Path = DEFAULT_CACHE,
                  progress: Progress | None = None, force: bool = False) -> Path:
    """Evaluate ``model`` (+ ``adapter``) and write ``<directory>/<name>.json``.

    An existing baseline of that name is refused before anything is evaluated; with ``force`` it is replaced and
    kept beside the new one as ``<name>.<UTC time>.json``.
    """
    from linq_eval.core.baseline import Baseline, check_new, write_baseline
    from linq_eval.core.precision import check_bits
    from linq_eval.evaluation.checkpoint import content_sha256, reference_sha256
    from linq_eval.evaluation.checks import check_model_ref, check_pool_independence
    from linq_eval.models import distributed
    from linq_eval.models.build import check_adapter

    check_new(name, directory, force=force)  # a bad or taken name fails first
    check_bits(settings.bits)
    check_model_ref(model)
    adapter_sha = content_sha256(check_adapter(adapter)) if adapter else None
    prepared = prepare(tasks, settings.instructions)
    check_pool_independence(prepared.tasks, {} if adapter else {"baseline": model}, override=None)
    settings = _resolve_dtype(settings)
    from linq_eval.core.settings import default_model

    model_sha = reference_sha256(model or default_model())
    scores, effective = evaluate(model, adapter, settings, prepared.tasks, cache_root, adapter_sha or model_sha,
                                 progress)
    baseline = Baseline(name=name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        provenance=_provenance(model, adapter, model_sha, adapter_sha, settings, prepared, effective),
                        tasks=scores)
    return distributed.from_main(lambda: write_baseline(baseline, directory, force=force))  # rank 0 writes


@dataclass
class GateReport:
    baseline: str
    checkpoint: dict[str, Any]
    decision: GateDecision
    scores: dict[str, dict[str, float]]  # task -> {"baseline", "checkpoint"} main scores as mteb reports them
    notes: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.decision.exit_code

    def to_dict(self) -> dict[str, Any]:
        # numpy and scipy: imported here, not with the module (the CLI's --help stays instant)
        from linq_eval.core.stats import finite_or_none

        d = self.decision
        return finite_or_none({"verdict": d.verdict, "exit_code": d.exit_code, "error": None,
                "rule": d.rule.describe(), "interval": d.rule.method,
                "delta": d.rule.delta, "alpha": d.rule.alpha, "baseline": self.baseline, "checkpoint": self.checkpoint,
                "macro": {"difference": d.difference, "ci": [d.ci_low, d.ci_high], "mde": d.mde,
                          "queries": sum(t.queries for t in d.tasks), "queries_to_decide": d.queries_to_decide},
                "reasons": d.reasons, "tasks": [asdict(t) for t in d.tasks], "main_scores": self.scores,
                "notes": self.notes, "resumed_tasks": self.resumed, "seconds": self.seconds,
                "provenance": self.provenance})


def _pairs(baseline: Baseline, scores: dict[str, TaskScores]) -> tuple[dict[str, tuple[list[float], list[float]]],
                                                                      list[str]]:
    """Paired per-query scores in the baseline's query order, and the tasks whose queries do not pair up."""
    pairs, unpaired = {}, []
    for task, base in baseline.tasks.items():
        cand = scores[task].per_query
        queries = sorted(base.per_query)
        missing, extra = set(queries) - set(cand), set(cand) - set(queries)
        if missing or extra:
            unpaired.append(f"{task}: the checkpoint lacks {len(missing)} of the baseline's {len(queries)} queries "
                            f"and has {len(extra)} it lacks (missing data, or another query set)")
        else:
            pairs[task] = ([cand[q] for q in queries], [base.per_query[q] for q in queries])
    return pairs, unpaired


def gate_checkpoint(checkpoint: str, baseline: str, *, delta: float = 0.01, alpha: float = 0.05,
                    directory: Path | None = None, cache_root: str | Path = DEFAULT_CACHE,
                    instructions: str | None = None, progress: Progress | None = None,
                    n_resamples: int = 10_000, method: str = "bca") -> GateReport:
    """Evaluate CHECKPOINT under the baseline's settings and decide (exit code on the report: 0, 1 or 3).

    Bad input and settings that differ from the baseline's raise ``LinqEvalError`` (exit 2) before any model
    loads, as does a checkpoint that cannot be loaded; NaN or infinite embeddings during the evaluation are a
    CANNOT DECIDE report. ``method``: the bootstrap interval (``gate_rule.GateRule.method``).
    """
    from linq_eval.core.baseline import load_baseline, mismatches, package_versions, version_notes
    from linq_eval.core.gate_rule import GateDecision, GateRule, decide
    from linq_eval.core.settings import default_model
    from linq_eval.evaluation.checkpoint import reference_sha256, resolve_checkpoint
    from linq_eval.evaluation.checks import check_pool_independence
    from linq_eval.models.encoder import NonFiniteEmbeddings

    t0 = time.perf_counter()
    try:
        rule = GateRule(delta=delta, alpha=alpha, n_resamples=n_resamples, method=method)  # type: ignore[arg-type]
    except ValueError as exc:
        raise LinqEvalError(f"--delta/--alpha/--interval: {exc}") from None
    base = load_baseline(baseline, directory)
    bp = base.provenance
    try:
        ck: Checkpoint = resolve_checkpoint(checkpoint, bp.model)
    except (ValueError, OSError) as exc:  # a config that is not UTF-8 (a ValueError), a folder we may not read
        raise LinqEvalError(f"checkpoint {checkpoint}: cannot be read ({_first_line(exc)}): check its "
                            "adapter_config.json, or save the checkpoint again") from None
    settings = EvalSettings(bits=bp.bits, max_length=bp.max_length, dtype=bp.dtype,
                            instructions=instructions if instructions is not None else bp.instructions,
                            batch_size=bp.batch_size, use_instructions=bp.use_instructions,
                            merge_adapter=bp.merge_adapter)
    prepared = prepare(list(base.tasks), settings.instructions)
    check_pool_independence(prepared.tasks, {**({} if bp.adapter else {"baseline": bp.model}),
                                             **({} if ck.adapter else {"checkpoint": ck.model})}, override=None)
    expected = bp.model_copy(update={"instructions_sha256": prepared.instructions_sha256,
                                     "light_manifests": prepared.light_manifests, "data_sha256": prepared.data_sha256,
                                     "packages": package_versions()})
    problems = mismatches(bp, expected)  # before any model loads
    if problems:
        raise LinqEvalError(f"the checkpoint cannot be evaluated as baseline {baseline!r} was: {'; '.join(problems)}: "
                            "save the baseline again under today's settings, or restore them")
    checkpoint_info = {"ref": ck.ref, "kind": ck.kind, "model": ck.model, "adapter": ck.adapter, "sha256": ck.sha256}
    resumed: list[str] = []
    recomputed: list[str] = []
    try:
        scores, effective = evaluate(ck.model, ck.adapter, settings, prepared.tasks, cache_root, ck.sha256,
                                     _recording(progress, resumed), notes=recomputed)
    except NonFiniteEmbeddings as exc:
        nan = float("nan")
        decision = GateDecision("CANNOT DECIDE", rule, nan, nan, nan, nan, [], [f"the checkpoint's embeddings: {exc}"])
        return GateReport(baseline, checkpoint_info, decision, {}, notes=recomputed, seconds=time.perf_counter() - t0)
    # an adapter sits on the baseline's base model: pin that base's weights too (a note if they changed)
    model_sha = reference_sha256(ck.model or default_model()) if ck.adapter else ck.sha256
    candidate = _provenance(ck.model, ck.adapter, model_sha, ck.sha256 if ck.adapter else None, settings, prepared,
                            effective)
    problems = mismatches(bp, candidate)  # the effective settings (max length, dtype, data actually read)
    if problems:
        raise LinqEvalError(f"the checkpoint was not evaluated as baseline {baseline!r} was: {'; '.join(problems)}: "
                            "save the baseline again under today's settings")
    pairs, unpaired = _pairs(base, scores)
    if unpaired:
        nan = float("nan")
        decision = GateDecision("CANNOT DECIDE", rule, nan, nan, nan, nan, [], unpaired)
    else:
        decision = decide(pairs, rule)
    notes = recomputed + version_notes(bp, candidate)
    if ck.adapter and bp.adapter is None and model_sha != bp.model_sha256:
        notes.append(f"the adapter's base {ck.model} has other weights than the baseline's model")
    main = {t: {"baseline": base.tasks[t].main_score, "checkpoint": scores[t].main_score} for t in base.tasks}
    return GateReport(baseline, checkpoint_info, decision, main, notes=notes, resumed=resumed,
                      seconds=time.perf_counter() - t0, provenance=candidate.model_dump())


def _recording(progress: Progress | None, resumed: list[str]) -> Progress:
    def record(task: str, state: str) -> None:
        if state == "stored":
            resumed.append(task)
        if progress:
            progress(task, state)
    return record


def report_folder(baseline: str) -> Path:
    """``results/gate/<baseline>``, the default ``--out``; a baseline name that is no file name is not a path."""
    return Path(DEFAULT_OUT) / (re.sub(r"[^A-Za-z0-9._-]+", "_", baseline).strip("._") or "baseline")
