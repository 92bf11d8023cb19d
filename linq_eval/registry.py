"""``register()``: the only code that writes into mteb's registries. Idempotent.

mteb builds its registries once at import from its own files and has no plug-in mechanism, so we add our
entries to ``MODEL_REGISTRY`` (public) and to the private task registries of ``mteb.get_tasks`` (which is
why pyproject pins mteb to one minor version; ``tests/`` smoke-test each write).
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

LIGHT_BENCHMARK = "LinqLight"  # all light tasks, for `mteb run -b LinqLight`


def _get_tasks_module():  # noqa: ANN202
    import importlib

    # `mteb.get_tasks` the attribute is the function; the module holds the registries.
    return importlib.import_module("mteb.get_tasks")


def _put_tasks(by_name: dict[str, type]) -> None:
    """Write tasks into ``_TASKS_REGISTRY`` and ``TASK_LIST``: replace same-named entries, append new ones."""
    module = _get_tasks_module()
    module._TASKS_REGISTRY.update(by_name)
    listed = {t.metadata.name for t in module.TASK_LIST}
    module.TASK_LIST = (*(by_name.get(t.metadata.name, t) for t in module.TASK_LIST),
                        *(cls for name, cls in by_name.items() if name not in listed))


def register_tasks(task_classes: list[type]) -> None:
    """Add task classes to all three places ``mteb.get_tasks`` reads: registry, task list, similar tasks."""
    module = _get_tasks_module()
    for cls in task_classes:
        existing = module._TASKS_REGISTRY.get(cls.metadata.name)
        if existing is not None and existing is not cls and existing.__module__.startswith("mteb."):
            raise ValueError(f"task name {cls.metadata.name!r} is already one of mteb's tasks: rename ours")
    _put_tasks({cls.metadata.name: cls for cls in task_classes})
    for cls in task_classes:
        for parent in cls.metadata.adapted_from or []:
            similar = module._SIMILAR_TASKS.setdefault(parent, [])
            if cls.metadata.name not in similar:
                similar.append(cls.metadata.name)


def wrap_mteb_tasks() -> int:
    """Swap mteb's tasks of the types in ``local_mteb.TYPE_LOADERS`` for local-copy-aware subclasses."""
    from linq_eval.tasks.local_source import local_source_classes

    wrapped = {cls.metadata.name: cls for cls in local_source_classes(_get_tasks_module().TASK_LIST)}
    _put_tasks(wrapped)
    return len(wrapped)


def register() -> None:
    """Register the ``linq``, ``linq-8bit`` and ``linq-4bit`` models, the local collection tasks, and local
    copies for mteb's own tasks (``$LINQ_DATA_DIR/<TaskName>/``)."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    from linq_eval.models.entries import build_metas
    from linq_eval.tasks.ir_collections import ALL_COLLECTION_TASKS

    for key, meta in build_metas().items():
        MODEL_REGISTRY[key] = meta
    register_tasks(list(ALL_COLLECTION_TASKS))
    wrap_mteb_tasks()
    register_light()  # after wrapping: a light task subclasses its parent's local-copy-aware class
    logger.debug("linq-eval registered its models and %d tasks in mteb", len(ALL_COLLECTION_TASKS))


def register_light(directory: Path | None = None) -> list[type]:
    """Register every light task (all three mteb registries) and the ``LinqLight`` benchmark."""
    from linq_eval.tasks.light import light_task_classes

    classes = light_task_classes(directory)
    register_tasks(classes)
    if classes:
        register_benchmark([c.metadata.name for c in classes])
    return classes


def register_benchmark(task_names: list[str]) -> None:
    import mteb.benchmarks.benchmarks as benchmarks
    from mteb import Benchmark, get_tasks
    from mteb.benchmarks.get_benchmark import _build_aliases_registry, _build_registry

    benchmark = Benchmark(
        name=LIGHT_BENCHMARK,
        tasks=get_tasks(tasks=sorted(task_names)),
        description=("linq-eval's light retrieval sets: a seeded sample of each task's test queries over their "
                     "relevant documents plus the pooled top candidates of BM25 and a dense model. Compare "
                     "checkpoints with each other on it, never a light score with a full score."),
        reference="https://arxiv.org/abs/2412.03223",
        citation="",
    )
    setattr(benchmarks, "LINQ_LIGHT", benchmark)  # noqa: B010 -- where mteb's registry builder looks
    _build_registry.cache_clear()
    _build_aliases_registry.cache_clear()
