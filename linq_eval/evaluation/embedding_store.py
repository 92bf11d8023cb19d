"""One store of document embeddings per model, shared by every task and command that encodes with it.

A document's embedding depends on the model and its text alone (documents carry no task instruction), so a
text encoded once, in any task, need not be encoded again: the collections' union reuses its collections,
light-set validation reuses `linq-eval run`'s documents, and a rerun after a crash reuses the chunks already
saved. ``linq-eval run --embedding-cache DIR`` opts in; light validation always uses one.

mteb's ``CachedEmbeddingWrapper`` (a numpy store keyed by a hash of the text) does the caching. What this
module adds, because mteb 2.26 lacks it:

- one document store for all tasks (mteb keys its stores by task);
- the title column dropped before mteb rebuilds a loader for the texts it has not seen: its corpus
  transform, run again on rows it already transformed, would put the title in twice;
- an index written atomically, so a kill mid-save leaves the previous index, whose vectors were flushed
  before it (mteb writes it in place); an unreadable store is rebuilt with a warning;
- a key per model and settings (name, revision, experiment: bits, dtype, max length, adapter digest...), and
  one writer at a time per store (:func:`store_lock`): two processes saving one index lose each other's
  entries and point texts at other texts' vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from linq_eval.core.files import atomic_write_json, atomic_write_text, file_lock

logger = logging.getLogger(__name__)

STORE_VERSION = 4  # bump when what is stored changes (4: keyed by the encoder's mteb meta, shared with `run`)
DOCUMENTS = "_documents"


def store_key(encoder: Any) -> str:  # noqa: ANN401 -- an mteb encoder
    """The store folder's name for an encoder: its mteb name, revision and experiment (what changes its
    embeddings), and the store version."""
    meta = encoder.mteb_model_meta
    pins = {"name": meta.name, "revision": meta.revision, "experiment": meta.experiment_kwargs or {},
            "encoder": type(encoder).__name__, "version": STORE_VERSION}
    digest = hashlib.sha256(json.dumps(pins, sort_keys=True, default=str).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(meta.name))
    return f"{safe}-{digest}-v{STORE_VERSION}"


def store_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on a store (a lock file beside it); waits for other holders."""
    return file_lock(folder.with_name(folder.name + ".lock"))


def cached_encoder(encoder: Any, folder: Path, *, queries: bool = True) -> Any:  # noqa: ANN401
    """``encoder`` wrapped so that documents come from (and go to) the store at ``folder``; queries too, per task,
    when ``queries``. Hold :func:`store_lock` while it encodes."""
    from mteb.models.cache_wrappers import CachedEmbeddingWrapper
    from mteb.models.cache_wrappers.cache_backends.numpy_cache import NumpyCache
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

    class AtomicNumpyCache(NumpyCache):
        def save(self) -> None:  # the vectors first (flushed in place), then the index that points at them
            if self.vectors is not None:
                self.vectors.flush()
            atomic_write_json(self.index_file, self.hash_to_index)
            atomic_write_text(self.dimension_file, str(self.vector_dim))

        def load(self) -> None:
            try:
                super().load()
            except (ValueError, OSError) as exc:  # a truncated index (older writers) or a short vectors file
                logger.warning("embedding store %s is unreadable (%s): rebuilding it", self.directory, exc)
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory.mkdir(parents=True, exist_ok=True)
                self.hash_to_index, self.vectors, self.vector_dim = {}, None, None

    class SharedDocumentStore(CachedEmbeddingWrapper):
        def encode(self, inputs: Any, *, task_metadata: Any, prompt_type: Any = None, **kwargs: Any) -> Any:  # noqa: ANN401
            if prompt_type != PromptType.document and not queries:
                return self._model.encode(inputs, task_metadata=task_metadata, prompt_type=prompt_type, **kwargs)
            dataset = inputs.dataset
            if prompt_type == PromptType.document and "title" in dataset.column_names:
                # the texts are built already (title and body joined): without the column, mteb's rebuilt
                # loader keeps them as they are
                inputs = DataLoader(dataset.remove_columns(["title"]), batch_size=inputs.batch_size)
            with warnings.catch_warnings():  # a text twice in one corpus is stored once: not worth a warning each
                warnings.filterwarnings("ignore", message="Hash collision or duplicate item")
                return super().encode(inputs, task_metadata=task_metadata, prompt_type=prompt_type, **kwargs)

        def _get_or_create_cache(self, task_name: str, prompt_type: Any, encode_kwargs: Any = None) -> Any:  # noqa: ANN401
            if prompt_type == PromptType.document:  # one store for every task's documents
                task_name = DOCUMENTS
            # a new store is the normal case, yet mteb warns of it twice (logger and warnings) per store
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="(Dimension file not found|No existing files found)")
                return super()._get_or_create_cache(task_name, prompt_type, encode_kwargs)

        def __getattr__(self, name: str) -> Any:  # noqa: ANN401 -- the encoder's own attributes (usage, batch size)
            if name.startswith("__") or name == "_model":
                raise AttributeError(name)
            return getattr(self._model, name)

    logging.getLogger("mteb.models.cache_wrappers.cache_backends.numpy_cache").setLevel(logging.ERROR)
    logging.getLogger("mteb.models.cache_wrappers.cache_wrapper").setLevel(logging.WARNING)
    return SharedDocumentStore(encoder, folder, cache_backend=AtomicNumpyCache)
