"""The one runner: build an encoder for a model reference and evaluate it on tasks through ``mteb.evaluate``.

Results go to mteb's result cache (``<cache>/results/<name>/<revision>[/experiments/<exp>]/<Task>.json``);
finished tasks are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import read_json_file
from linq_eval.core.precision import merges

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from linq_eval.models.encoder import LinqEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """What to evaluate: the model reference and everything that changes its scores."""

    model: str | None = None  # None: Linq-Embed-Mistral (or $LINQ_MODEL)
    bits: int = 16
    adapter: str | None = None
    max_length: int | None = None
    instructions: str | None = None  # a JSON table overriding the built-in one
    overrides: dict[str, str] = field(default_factory=dict)  # task -> instruction
    device: str | None = None
    dtype: str | None = None  # None: bf16 where supported, else fp32
    devices: list[str] | None = None  # several devices, or ["all"]: encode in parallel processes
    merge_adapter: bool = False  # at 4/8 bits: quantise base + adapter merged (models/build.py: merged_model), not the base alone

    @property
    def merges(self) -> bool:
        """Whether the adapter is merged before quantising (at 16 bits the option is moot; without an adapter it
        is a gate baseline's setting for its checkpoints, nothing to merge here)."""
        return self.adapter is not None and merges(self.bits, self.adapter, self.merge_adapter)


def get_task(name: str, *, task_type: str | None = None, purpose: str = "") -> AbsTask:
    """The mteb task object for ``name`` (data not loaded): the one lookup, with the one error for a bad name.

    ``task_type`` (e.g. "Retrieval") refuses other types, naming ``purpose`` (what needs that type).
    """
    import mteb

    try:
        task = mteb.get_task(name)
    except KeyError:
        from linq_eval.tasks.light import check_requested

        check_requested([name])  # a light set whose manifest was refused: its own reason, not "unknown task"
        raise LinqEvalError(f"unknown task {name!r}: see `mteb available_tasks`, `linq-eval light list`, or ours in "
                            "linq_eval/tasks/ir_collections.py") from None
    if task_type is not None and task.metadata.type != task_type:
        raise LinqEvalError(f"{name} is a {task.metadata.type} task: {purpose or f'give {task_type} tasks'}")
    return task


def check_tasks(names: list[str], *, task_type: str | None = None, purpose: str = "") -> list[AbsTask]:
    """mteb task objects for names, with their data loaded and verified (before any model loads)."""
    tasks = [get_task(name, task_type=task_type, purpose=purpose) for name in names]
    for task in tasks:
        task.load_data()
    return tasks


def _experiment(spec: RunSpec) -> dict[str, Any]:
    values = {"bits": spec.bits if spec.bits != 16 else None, "adapter": spec.adapter,
              "max_length": spec.max_length, "dtype": spec.dtype, "instructions": spec.instructions,
              "instruction_overrides": dict(sorted(spec.overrides.items())) or None,
              "merge_adapter": True if spec.merges else None, **content_digests(spec)}
    return {k: v for k, v in values.items() if v is not None}


def content_digests(spec: RunSpec) -> dict[str, str]:
    """Short content digests of a local model directory and adapter: they enter the experiment name, so a
    checkpoint rewritten in place gets a result folder of its own instead of its old scores."""
    from linq_eval.core.files import content_sha256

    out = {}
    if spec.model and not spec.model.startswith("pypi:") and Path(spec.model).is_dir():
        out["weights_sha256"] = content_sha256(Path(spec.model))[:DIGEST_CHARS]
    if spec.adapter:
        out["adapter_sha256"] = content_sha256(Path(spec.adapter))[:DIGEST_CHARS]
    return out


DIGEST_CHARS = 16  # 64 bits: collisions between checkpoints of one folder are not a practical concern


def load_encoder(spec: RunSpec) -> LinqEncoder:
    """The encoder for ``spec`` (see ``_load_encoder``), spread over ``spec.devices`` when given."""
    if spec.devices and spec.bits != 16:
        raise LinqEvalError("--devices needs --bits 16: a quantised model cannot be copied to other devices; "
                            "run one process per device instead")
    encoder = _load_encoder(spec)
    if spec.devices:
        encoder.devices = "all" if spec.devices == ["all"] else list(spec.devices)
    return encoder


def _load_encoder(spec: RunSpec) -> LinqEncoder:
    """An mteb-ready encoder whose ``mteb_model_meta`` files its results under the right name.

    ``pypi:`` models whose weights mteb knows (all-MiniLM-L6-v2) keep mteb's own entry (name, revision,
    instructions or none); everything else runs as the ``linq`` entry of the requested precision, with a
    stand-in model recorded in its experiment.
    """
    import mteb

    from linq_eval.models.build import build_model
    from linq_eval.models.entries import ENTRIES
    from linq_eval.models.references import mteb_name

    known = mteb_name(spec.model)
    if known is not None:
        meta = mteb.get_model_meta(known)
        model = build_model(spec.model, bits=spec.bits, adapter=spec.adapter, max_length=spec.max_length,
                            device=spec.device, dtype=spec.dtype, merge_adapter=spec.merges)
        encoder = instruction_policy(spec)
        encoder.model = model
        encoder.mteb_model_meta = meta.model_copy(update={"experiment_kwargs": _experiment(spec) or None})
        return encoder
    key = {bits: name for name, bits in ENTRIES.items()}[spec.bits]
    kwargs = {"model": spec.model, "adapter": spec.adapter, "max_length": spec.max_length,
              "instructions": spec.instructions, "dtype": spec.dtype, "merge_adapter": True if spec.merges else None,
              **content_digests(spec)}
    encoder = mteb.get_model(key, device=spec.device, **{k: v for k, v in kwargs.items() if v is not None})
    if spec.overrides:
        from linq_eval.core.instructions import load_instructions

        table = load_instructions(spec.instructions).with_overrides(spec.overrides)
        encoder.instructions = table
        encoder.prompts_dict = table.prompts_dict()
    return encoder


def instruction_policy(spec: RunSpec) -> LinqEncoder:
    """A model-less encoder whose ``prefix_for`` writes instructions exactly as ``load_encoder(spec)``'s does.

    ``pypi:`` models whose weights mteb knows follow their mteb entry (all-MiniLM-L6-v2: no instructions); every
    other model is the ``linq`` entry (instructed). Training uses it to give its inputs the evaluation's prefixes
    without loading the model a second time.
    """
    import mteb

    from linq_eval.core.instructions import load_instructions
    from linq_eval.models.encoder import LinqEncoder
    from linq_eval.models.references import mteb_name

    table = load_instructions(spec.instructions).with_overrides(spec.overrides)
    known = mteb_name(spec.model)
    use_instructions = bool(mteb.get_model_meta(known).use_instructions) if known is not None else True
    return LinqEncoder(None, table, use_instructions=use_instructions)


def check_stored_results(encoder: LinqEncoder, tasks: list[AbsTask], cache_folder: str | Path) -> None:
    """Refuse to resume over stored results computed on a different local copy of a task's data."""
    import mteb

    from linq_eval.evaluation.result_store import readable_result
    from linq_eval.tasks.local_source import recorded_local_sha256

    cache = mteb.ResultCache(cache_folder)
    for task in tasks:
        local = getattr(task, "local_source", None)
        path = cache.get_task_result_path(task.metadata.name, encoder.mteb_model_meta)
        if local is None or not readable_result(path):
            continue
        stored = recorded_local_sha256(read_json_file(path))
        if stored is None:
            logger.warning("%s: stored results do not record their data source; resuming over them", path)
        elif stored != local["sha256"]:
            raise LinqEvalError(
                f"{path}: stored results were computed on data sha256 {stored[:12]}…, but {local['folder']} "
                f"now has sha256 {local['sha256'][:12]}…: restore that data, or rerun with --overwrite"
            )


def on_this_rank(spec: RunSpec) -> RunSpec:
    """``spec`` for this process: under torchrun / accelerate launch, the group joined and this rank's device (one
    per rank); else ``spec`` itself. Callers that load the encoder before :func:`run` call it first."""
    from linq_eval.models import distributed

    here = distributed.init(spec.device)
    if here.size == 1:
        return spec
    if spec.devices:
        raise LinqEvalError("--devices spreads encoding over one machine's processes; under torchrun or "
                            "accelerate launch each process already has its device: leave --devices out")
    return replace(spec, device=distributed.device_for(spec.device))


def run(spec: RunSpec, task_names: list[str], cache_folder: str | Path, *, overwrite: bool = False,
        batch_size: int = 32, encoder: LinqEncoder | None = None, show_progress: bool = True,
        on_reuse: Callable[[str, Path], None] | None = None,
        embedding_cache: str | Path | None = None) -> Any:  # noqa: ANN401 -- mteb's ModelResult
    """Evaluate ``spec`` on the tasks (with ``encoder`` when already loaded from it); returns mteb's ``ModelResult``.

    One task at a time, each staged and committed atomically under a per-task lock (``result_store``): a
    kill loses at most the task in flight, a damaged stored result is recomputed, and a concurrent run on
    the same folder waits and then reuses. ``on_reuse(task, path)`` is told of every stored result reused.
    ``embedding_cache``: a folder of per-model document stores (``embedding_store``): a document text encoded
    once, in any task or by light validation, is not encoded again.
    """
    import mteb

    from linq_eval.core.precision import check_batch_size, check_bits
    from linq_eval.models import distributed
    from linq_eval.models.build import check_adapter, check_device_visible

    check_bits(spec.bits)
    check_batch_size(batch_size, "batch_size")
    check_device_visible(spec.device, "device")
    if spec.adapter:
        check_adapter(spec.adapter)
    tasks = check_tasks(task_names)
    spec = on_this_rank(spec)
    encoder = encoder or load_encoder(spec)
    if not overwrite and distributed.world().main:
        check_stored_results(encoder, tasks, cache_folder)
    encoder.batch_size = batch_size
    cache = mteb.ResultCache(cache_folder)
    task_results = []
    model_result = None
    for task in tasks:
        task.unload_data()  # loaded above only to check the data: mteb reloads it and records where it came from
        one, reused = _run_task(encoder, task, cache, overwrite=overwrite, batch_size=batch_size,
                                show_progress=show_progress, embedding_cache=embedding_cache)
        if reused:
            path = cache.get_task_result_path(task.metadata.name, encoder.mteb_model_meta)
            (on_reuse or (lambda t, p: logger.info("%s: reusing the stored result %s", t, p)))(task.metadata.name, path)
        model_result = model_result or one
        task_results.extend(one.task_results)
    # mteb.evaluate leaves experiment_name empty; the folder the results went to is named by the encoder's meta
    return model_result.model_copy(update={"task_results": task_results,
                                           "experiment_name": encoder.mteb_model_meta.experiment_name})


def _run_task(encoder: LinqEncoder, task: AbsTask, cache: Any, *, overwrite: bool, batch_size: int,  # noqa: ANN401
              show_progress: bool, embedding_cache: str | Path | None = None) -> tuple[Any, bool]:  # noqa: ANN401
    """Evaluate one task into a staging cache and commit it; (mteb's result, whether the stored one was reused)."""
    import shutil

    import mteb

    from linq_eval.core.per_query import per_query_path, sibling_path
    from linq_eval.core.quiet import library_bars
    from linq_eval.evaluation.result_store import commit, readable_result, staging_folder, task_lock
    from linq_eval.models import distributed

    bars = show_progress and library_bars()  # mteb's bars beside our encoder's display only with -v
    meta = encoder.mteb_model_meta
    root = cache.cache_path
    result_path = cache.get_task_result_path(task.metadata.name, meta)
    if not distributed.world().main:
        return _follow_task(encoder, task, cache, overwrite=overwrite, batch_size=batch_size)
    with task_lock(root, result_path), staging_folder(root) as staged:
        staged_cache = mteb.ResultCache(staged)
        rel_result = result_path.relative_to(root)
        rel_predictions = (sibling_path(root, result_path, "predictions").parent
                           / task.prediction_file_name).relative_to(root)
        before = None
        if not overwrite and readable_result(result_path):  # mteb decides what is missing (splits, versions)
            (staged / rel_result).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(result_path, staged / rel_result)
            before = (staged / rel_result).read_bytes()
            if (root / rel_predictions).is_file():
                (staged / rel_predictions).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel_predictions, staged / rel_predictions)
        # every rank must make mteb's decision (what is missing) on the same files: they get rank 0's
        distributed.broadcast({rel: (staged / rel).read_bytes() for rel in (rel_result, rel_predictions)
                               if (staged / rel).is_file()})
        with _documents_from(encoder, embedding_cache) as model:
            result = mteb.evaluate(model, [task], cache=staged_cache,
                                   overwrite_strategy="always" if overwrite else "only-missing",
                                   encode_kwargs={"batch_size": batch_size, "show_progress_bar": bars},
                                   prediction_folder=(staged / rel_predictions).parent,
                                   show_progress_bar=bars)
        reused = before is not None and (staged / rel_result).read_bytes() == before
        if not reused:
            rel_per_query = per_query_path(root, result_path).relative_to(root)
            _write_per_query(task, staged / rel_predictions, staged / rel_per_query)
            rel_meta = rel_result.parent / "model_meta.json"
            commit(staged, root, [rel_predictions, rel_per_query, rel_meta, rel_result.parent / "run_settings.jsonl",
                                  rel_result])
        else:
            _write_per_query(task, root / rel_predictions, per_query_path(root, result_path), result_path)
    return result, reused


@contextlib.contextmanager
def _documents_from(encoder: LinqEncoder, embedding_cache: str | Path | None) -> Iterator[Any]:
    """``encoder``, or with ``embedding_cache`` the encoder whose documents come from its store there, the store
    locked meanwhile (one writer at a time). Under a launcher every rank encodes afresh (as light validation)."""
    from linq_eval.models import distributed

    if embedding_cache is None or distributed.active():
        yield encoder
        return
    from linq_eval.evaluation.embedding_store import cached_encoder, store_key, store_lock

    folder = Path(embedding_cache).expanduser() / store_key(encoder)
    with store_lock(folder):
        yield cached_encoder(encoder, folder, queries=False)


def _follow_task(encoder: LinqEncoder, task: AbsTask, cache: Any, *, overwrite: bool,  # noqa: ANN401
                 batch_size: int) -> tuple[Any, bool]:  # noqa: ANN401 -- mteb's ModelResult
    """A rank other than 0 under ``torch.distributed``: the same evaluation (it encodes its share of every
    batch list), staged from rank 0's stored files in a private temporary folder, and nothing written to the
    result folder (rank 0 writes, so the folder need not be shared)."""
    import tempfile

    import mteb

    from linq_eval.core.per_query import sibling_path
    from linq_eval.models import distributed

    stored = distributed.broadcast(None)
    with tempfile.TemporaryDirectory(prefix="linq-eval-rank-") as folder:
        staged = Path(folder)
        for rel, content in stored.items():
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            (staged / rel).write_bytes(content)
        root = cache.cache_path
        result_path = cache.get_task_result_path(task.metadata.name, encoder.mteb_model_meta)
        predictions = (staged / sibling_path(root, result_path, "predictions").relative_to(root)).parent
        before = stored.get(result_path.relative_to(root))
        result = mteb.evaluate(encoder, [task], cache=mteb.ResultCache(staged),
                               overwrite_strategy="always" if overwrite else "only-missing",
                               encode_kwargs={"batch_size": batch_size}, prediction_folder=predictions,
                               show_progress_bar=False)
        reused = before is not None and (staged / result_path.relative_to(root)).read_bytes() == before
    return result, reused


def _write_per_query(task: AbsTask, ranking: Path, out: Path, result_path: Path | None = None) -> None:
    """The per-query file of a retrieval result, unless an up-to-date one exists (newer than ``result_path``)."""
    from linq_eval.core.per_query import write_retrieval_per_query

    if task.metadata.type != "Retrieval" or not ranking.is_file():
        return
    if result_path is not None and out.is_file() and out.stat().st_mtime >= result_path.stat().st_mtime:
        return
    if not task.data_loaded:
        task.load_data()
    write_retrieval_per_query(task, ranking, out)
