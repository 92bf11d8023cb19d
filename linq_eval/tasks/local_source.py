"""mteb's own tasks with their data read from a local copy (``$LINQ_DATA_DIR/<TaskName>/``).

Everything about a task stays mteb's (name, metadata, evaluator, main score, result file) except where its
data comes from. One reader per task type, in :data:`TYPE_LOADERS`; adding a type (pair classification,
reranking, classification, clustering) is one entry there. A task without a local folder takes mteb's hub
path unchanged; offline, that fails with one line naming ``LINQ_DATA_DIR``.

The result file records the source: its ``evaluation_phases`` hold a data-loading phase named
``Data loading (local copy <folder>, sha256 <digest>)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.local_data import BeirData, check_name, data_sha256, read_beir, read_pairs
from linq_eval.core.settings import DATA_ENV, data_dir, hub_offline

logger = logging.getLogger(__name__)

LOCAL_PHASE = re.compile(r"Data loading \(local copy (?P<folder>.+), sha256 (?P<sha256>[0-9a-f]{64})\)")


def to_mteb_split(data: BeirData) -> dict:
    """The ``RetrievalSplitData`` dict that mteb's retrieval evaluator reads."""
    from datasets import Dataset

    ids = list(data.corpus)
    return {
        "corpus": Dataset.from_dict({
            "id": ids,
            "title": [data.corpus[i]["title"] for i in ids],
            "text": [data.corpus[i]["text"] for i in ids],
        }),
        "queries": Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
        "relevant_docs": data.qrels,
        "top_ranked": None,
    }


def _load_retrieval(task: Any, folder: Path) -> dict:  # noqa: ANN401 -- any mteb retrieval task
    return {"default": {split: to_mteb_split(read_beir(folder, split)) for split in task.eval_splits}}


def _load_sts(task: Any, folder: Path) -> dict:  # noqa: ANN401 -- any mteb STS task
    from datasets import Dataset, DatasetDict

    return DatasetDict({
        split: Dataset.from_dict(read_pairs(folder / f"{check_name(split, 'split')}.jsonl", task.min_score,
                                            task.max_score))
        for split in task.eval_splits
    })


# mteb task type -> reader of a local folder into the task's ``dataset``; the one place to add a type.
TYPE_LOADERS: dict[str, Callable[[Any, Path], dict]] = {
    "Retrieval": _load_retrieval,
    "STS": _load_sts,
}


def _phase_name(folder: str, sha256: str) -> str:
    return f"Data loading (local copy {folder}, sha256 {sha256})"


def local_folder(task_name: str) -> Path | None:
    folder = data_dir() / check_name(task_name, "task")  # a task name is one folder below the data dir
    return folder if folder.is_dir() else None


class LocalSourceMixin:
    """Put before an mteb task class: load from ``$LINQ_DATA_DIR/<name>`` when that folder exists."""

    def load_data(self, num_proc: int | None = None, *, timer: Any = None, **kwargs: Any) -> None:  # noqa: ANN401
        if self.data_loaded:
            return
        folder = self._local_folder()
        if folder is None:
            self._load_from_hub(num_proc=num_proc, timer=timer, **kwargs)
            return
        self._verify(folder)
        from mteb.timing import TimingStack

        timer = timer or TimingStack()
        digest = self._digest(folder)
        with timer(_phase_name(str(folder), digest),
                   log_message=f"Loading {self.metadata.name} from {folder}"):
            self.dataset = self._read(folder)
        if self.metadata.type != "Retrieval":  # retrieval data is already in evaluator shape
            with timer("Dataset transform"):
                self.dataset_transform(num_proc=num_proc)
        self.data_loaded = True
        self.local_source = {"folder": str(folder), "sha256": digest}

    def _local_folder(self) -> Path | None:
        return local_folder(self._data_name())

    def _data_name(self) -> str:
        """The task whose data this is (a light set reads its parent's)."""
        return self.metadata.name

    def _digest(self, folder: Path) -> str:
        return data_sha256(folder)

    def _read(self, folder: Path) -> Any:  # noqa: ANN401 -- the task's ``dataset``
        return TYPE_LOADERS[self.metadata.type](self, folder)

    def _verify(self, folder: Path) -> None:
        """Checks before reading (e.g. recorded checksums); the readers check the content itself."""

    def _load_from_hub(self, **kwargs: Any) -> None:  # noqa: ANN401
        try:
            super().load_data(**kwargs)
        except Exception as exc:
            if hub_offline():
                raise LinqEvalError(
                    f"{self.metadata.name}: no local copy in {data_dir() / self._data_name()} and the hub is "
                    f"offline (HF_HUB_OFFLINE=1): put the task's data there or point {DATA_ENV} at a folder "
                    "that has it"
                ) from None
            raise exc


def local_source_classes(task_classes: tuple[type, ...]) -> list[type]:
    """A ``LocalSourceMixin`` subclass, with the same name and metadata, for each task of a supported type."""
    wrapped = []
    for cls in task_classes:
        meta = cls.metadata
        if meta.type not in TYPE_LOADERS or issubclass(cls, LocalSourceMixin) or cls.__module__.startswith("linq_eval"):
            continue
        wrapped.append(type(cls.__name__, (LocalSourceMixin, cls), {"__module__": cls.__module__,
                                                                   "__qualname__": cls.__qualname__}))
    return wrapped


def recorded_local_sha256(result_json: dict) -> str | None:
    """The local-data checksum a stored mteb result file was computed on, if any."""
    for phase in result_json.get("evaluation_phases") or []:
        match = LOCAL_PHASE.fullmatch(phase.get("name", ""))
        if match:
            return match["sha256"]
    return None
