"""Light sets as mteb tasks: ``<Parent>-light`` subclasses its parent and loads only the manifest's ids.

Everything else stays the parent's: evaluator, metrics, prompt, ``ignore_identical_ids``, data source (hub or
local copy). ``adapted_from=[parent]`` keeps mteb's zero-shot flag right; descriptive statistics ship next to
the manifests (mteb reads them from its own package otherwise). All light tasks form the ``LinqLight``
benchmark, for ``mteb run -b LinqLight``.

No mteb import at module level: importing mteb runs our registration hook, which imports this module.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_text
from linq_eval.core.light_manifest import (
    LIGHT_SUFFIX,
    LightManifest,
    available,
    load_manifest,
    manifest_path,
    stats_path,
)
from linq_eval.core.settings import light_dir

logger = logging.getLogger(__name__)

# Light sets whose manifests were refused at registration: name -> why. A request for one of them gets this
# reason instead of mteb's "unknown task" (see :func:`check_requested`).
REJECTED: dict[str, str] = {}


class LightTaskMixin:
    """Put before the parent's class: load the parent's data, check it is the manifest's, keep its ids."""

    manifest_file: Path

    @property
    def manifest(self) -> LightManifest:
        return load_manifest(self.manifest_file)

    def _data_name(self) -> str:  # a local copy is the parent's folder
        return self.metadata.adapted_from[0]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:  # noqa: ANN401
        if self.data_loaded:
            return
        manifest = self.manifest
        super().load_data(num_proc=num_proc, **kwargs)
        found = data_fingerprint(self)
        if found != manifest.data:
            self.data_loaded = False
            raise LinqEvalError(
                f"{self.metadata.name}: the manifest was built on other data ({_short(manifest.data)}) than "
                f"{manifest.source_task} now loads ({_short(found)}): point LINQ_DATA_DIR at the data it was "
                f"built on, or rebuild it with `linq-eval light build {manifest.source_task}`")
        split = self.dataset[manifest.subset][manifest.split]
        self.dataset[manifest.subset][manifest.split] = restrict(split, manifest, self.metadata.name)


def data_fingerprint(task: Any) -> dict[str, str]:  # noqa: ANN401 -- an mteb task with its data loaded
    """Where the task's data came from: the local copy's checksum, or the hub dataset's revision."""
    local = getattr(task, "local_source", None)
    if local:
        return {"kind": "local", "sha256": local["sha256"]}
    dataset = task.metadata.dataset
    return {"kind": "hub", "path": str(dataset["path"]), "revision": str(dataset.get("revision"))}


def _short(data: dict[str, str]) -> str:
    if data.get("kind") == "local":
        return f"local copy sha256 {data.get('sha256', '')[:12]}…"
    return f"hub {data.get('path')}@{data.get('revision')}"


def restrict(split: dict, manifest: LightManifest, name: str) -> dict:
    """Keep the manifest's queries and documents (and the qrels between them) of one retrieval split."""
    corpus, queries = split["corpus"], split["queries"]
    doc_pos = {d: i for i, d in enumerate(corpus["id"])}
    query_pos = {q: i for i, q in enumerate(queries["id"])}
    missing = [d for d in manifest.corpus_ids if d not in doc_pos] + [q for q in manifest.query_ids
                                                                       if q not in query_pos]
    if missing:
        raise LinqEvalError(f"{name}: {len(missing)} ids of the manifest (e.g. {missing[0]!r}) are not in "
                            f"{manifest.source_task}'s data: rebuild it with `linq-eval light build "
                            f"{manifest.source_task}`")
    kept_docs = set(manifest.corpus_ids)
    qrels = {q: {d: g for d, g in split["relevant_docs"][q].items() if d in kept_docs} for q in manifest.query_ids}
    top_ranked = split.get("top_ranked")
    return {
        **split,
        "corpus": corpus.select([doc_pos[d] for d in manifest.corpus_ids]),
        "queries": queries.select([query_pos[q] for q in manifest.query_ids]),
        "relevant_docs": qrels,
        "top_ranked": {q: [d for d in top_ranked[q] if d in kept_docs] for q in manifest.query_ids}
        if top_ranked else top_ranked,
    }


def light_metadata(parent: Any, manifest: LightManifest) -> Any:  # noqa: ANN401 -- mteb TaskMetadata
    import mteb  # noqa: F401 -- first, so that mteb (and our registration) is complete before the next line

    from linq_eval.tasks.light_metadata import LightTaskMetadata
    c, p = manifest.counts, manifest.parameters
    pooled = ", ".join(r.name for r in manifest.retrievers)
    description = (f"Light set of {parent.name}: {c['queries']} of its {c['full_queries']} test queries (seed "
                   f"{p.seed}) over {c['corpus']} of its {c['full_corpus']} documents (all relevant ones plus the "
                   f"top {p.depth} of {pooled}). Built by linq-eval; manifest checksum {manifest.checksum[:12]}.")
    fields = parent.model_dump()
    fields.update(name=manifest.name, description=description, adapted_from=[parent.name],
                  eval_splits=[manifest.split], superseded_by=None)
    return LightTaskMetadata(**fields)


def light_task_class(parent_cls: type, manifest: LightManifest, path: Path) -> type:
    meta = light_metadata(parent_cls.metadata, manifest)
    class_name = manifest.name.replace("-", "_")
    return type(class_name, (LightTaskMixin, parent_cls), {"metadata": meta, "manifest_file": path,
                                                           "__module__": __name__, "__qualname__": class_name})


def light_task_classes(directory: Path | None = None) -> list[type]:
    """A task class per manifest whose source task mteb knows and whose split and subset are the source's.

    Refused manifests (damaged, unknown source, a split the source does not evaluate, a name claimed by two
    files or differing from the file's) are skipped with a warning and recorded in :data:`REJECTED`, so that
    asking for them names the reason rather than an unknown task.
    """
    from mteb.get_tasks import _TASKS_REGISTRY

    REJECTED.clear()
    loaded: dict[str, list[tuple[Path, LightManifest]]] = {}
    for stem in available(directory):
        path = manifest_path(stem, directory)
        try:
            manifest = load_manifest(path)
            parent = _TASKS_REGISTRY.get(manifest.source_task)
            if parent is None:
                raise LinqEvalError(f"{path}: its source task {manifest.source_task} is not registered in mteb")
            _check_against_parent(path, manifest, parent.metadata)
        except LinqEvalError as exc:
            _reject(stem, str(exc))
            continue
        loaded.setdefault(manifest.name, []).append((path, manifest))
    classes = []
    for name, claims in loaded.items():
        if len(claims) > 1:  # by file order one would silently shadow the other
            files = " and ".join(str(p) for p, _ in claims)
            _reject(name, f"light set {name} is claimed by two manifests, {files}: delete or rebuild one")
            continue
        path, manifest = claims[0]
        if path.stem != name:
            _reject(name, f"{path}: names the light set {name}, not {path.stem}: rename the file to {name}.json")
            _reject(path.stem, REJECTED[name])
            continue
        classes.append(light_task_class(_TASKS_REGISTRY[manifest.source_task], manifest, path))
    return classes


def _check_against_parent(path: Path, manifest: LightManifest, parent: Any) -> None:  # noqa: ANN401 -- TaskMetadata
    """The manifest's split and subset must be ones its source task evaluates (they reach paths and dict keys)."""
    if manifest.split not in parent.eval_splits:
        raise LinqEvalError(f"{path}: split {manifest.split!r} is not one of {manifest.source_task}'s evaluation "
                            f"splits {parent.eval_splits}: rebuild it with `linq-eval light build`")
    if manifest.subset not in parent.hf_subsets:
        raise LinqEvalError(f"{path}: subset {manifest.subset!r} is not one of {manifest.source_task}'s subsets: "
                            "rebuild it with `linq-eval light build`")


def _reject(name: str, reason: str) -> None:
    logger.warning("skipping light set: %s", reason)
    REJECTED[name] = reason


def check_requested(names: list[str]) -> None:
    """Refuse task names that could not be file names, and raise the recorded reason for any requested light
    set whose manifest was refused at registration."""
    from linq_eval.core.local_data import check_name

    for name in names:
        check_name(name, "task")
        if name in REJECTED:
            raise LinqEvalError(REJECTED[name])


def write_descriptive_stats(name: str, directory: Path | None = None) -> Path:
    """Compute a light task's descriptive statistics with mteb and store them beside the manifests."""
    import mteb

    task = mteb.get_task(name)
    stats = task.calculate_descriptive_statistics(overwrite_results=True)  # never the stale file
    return atomic_write_text(stats_path(name, directory), json.dumps(stats, indent=4, sort_keys=True) + "\n",
                             folder=directory or light_dir())


def is_light(name: str) -> bool:
    return name.endswith(LIGHT_SUFFIX)
