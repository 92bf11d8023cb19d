"""The classic IR test collections of ``$LINQ_DATA_DIR`` as mteb retrieval tasks (declarations only).

mteb has none of them; they give linq-eval real, offline retrieval tasks of 82 to 11,429 documents. Each
task reads its BEIR folder with :mod:`linq_eval.core.local_data` and checks the files against the checksums
below (the dataset "revision"), so a changed copy never produces a score silently.

Their descriptive statistics (which mteb's metadata and task-quality checks read) ship in the package, in
``linq_eval/tasks/descriptive_stats/Retrieval/<Task>.json``. Regenerate them from the checked data with::

    LINQ_DATA_DIR=<data> python -c "import mteb; from linq_eval.tasks.ir_collections import write_descriptive_stats; write_descriptive_stats()"
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_text, sha256_file
from linq_eval.core.local_data import (
    BeirData,
    data_sha256,
    read_beir,
)
from linq_eval.core.settings import DATA_ENV, data_dir
from linq_eval.tasks.local_source import LocalSourceMixin, to_mteb_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collection:
    """What differs between the collections; everything else is shared by :func:`_metadata`."""

    task: str
    folder: str
    title: str
    description: str
    instruction: str
    domains: tuple[str, ...]
    date: tuple[str, str]
    sha256: dict[str, str]  # file (relative to the folder) -> sha256, as the data's own README records them
    citation: str = ""


COLLECTIONS: tuple[Collection, ...] = (
    Collection(
        "ADIRetrieval", "adi", "ADI",
        "ADI (American Documentation Institute): 82 abstracts of information-science papers and 35 queries.",
        "Given a question about documentation and information science, retrieve relevant paper abstracts",
        ("Academic", "Written"), ("1963-01-01", "1963-12-31"),
        {"corpus.jsonl": "2a98868bbb93e38faf1cc4ef77b3f04b08085082b7527ebf40d7c8cd5d995dd1",
         "queries.jsonl": "8a2b44bc8b76b8b3ad8758fa0dcdf52d88ccc8d746bba3586041852170d85330",
         "qrels/test.tsv": "d77ca74ff56b2b8df44bc8db52f3e6a15ba4bc104d42602552743e229cc14b2e"},
    ),
    Collection(
        "CACMRetrieval", "cacm", "CACM",
        "CACM: 3,204 titles and abstracts from Communications of the ACM (1958-1979) and 52 queries.",
        "Given a question about computer science, retrieve relevant Communications of the ACM articles",
        ("Academic", "Written"), ("1958-01-01", "1979-12-31"),
        {"corpus.jsonl": "7e108e1449aad22648d2351ce55a50e55e86692ea090922f4af6d23818533eb1",
         "queries.jsonl": "ea9f845c73eca5070d71c6e596cd250c956c98e2e01daf414f43cbc8cdb812b3",
         "qrels/test.tsv": "1c571d27089f7b838c03aaf2a9d21a30b1129806580012aa1c523f1c4fa3e8a1"},
    ),
    Collection(
        "CISIRetrieval", "cisi", "CISI",
        "CISI: 1,460 information-science abstracts and 76 queries (Institute for Scientific Information).",
        "Given a question about library and information science, retrieve relevant paper abstracts",
        ("Academic", "Written"), ("1969-01-01", "1977-12-31"),
        {"corpus.jsonl": "1934260e2ffda83816126810e77e396bdd1207aab2d0f358cce67680a51ed9de",
         "queries.jsonl": "dff22bad572f0432fc19aec8dec5a468da6b49a78034a93edbbd05d3fdd738da",
         "qrels/test.tsv": "5ff417257cd005a90a06ad42f0468c791fb862f38cd9b53cac9e516ffe675011"},
    ),
    Collection(
        "CranfieldRetrieval", "cranfield", "Cranfield",
        "Cranfield 1400: aerodynamics abstracts and 225 queries with graded relevance (Cleverdon, 1960s).",
        "Given a question about aerodynamics, retrieve abstracts of papers that answer it",
        ("Academic", "Engineering", "Written"), ("1960-01-01", "1966-12-31"),
        {"corpus.jsonl": "75fb474b7d43175126a72850a4930d1aebd64bcf3fa6f8ec21d50a974c6bf7ec",
         "queries.jsonl": "70914f4cee2b861959813356b008b8c61b78400e4de7e03193c3ea0cff72a63f",
         "qrels/test.tsv": "1eea9d17af5fea31ca3a7a22c78b50fd6a8037484ab4389fe0f201b7d04a0cb5"},
    ),
    Collection(
        "LISARetrieval", "lisa", "LISA",
        "LISA: 5,999 Library and Information Science Abstracts (1982) and 35 requests.",
        "Given a library and information science research request, retrieve relevant abstracts",
        ("Academic", "Written"), ("1982-01-01", "1982-12-31"),
        {"corpus.jsonl": "370472fa6a9a4bacf5b292d7ffb532664832d1f1da6a5bbf151fd2c9c26fc817",
         "queries.jsonl": "ee16fcc537d26339946ba04572683daa0b01ec4bcd45f2a1afc65e202b9c20cb",
         "qrels/test.tsv": "6889c5f2c8a1b99e60de88280117d00c9a53b2cb1aebc9d10fa8947eaad2bdfa"},
    ),
    Collection(
        "MedlineRetrieval", "medline", "Medline",
        "MEDLINE (MED): 1,033 biomedical abstracts and 30 queries.",
        "Given a medical question, retrieve relevant MEDLINE abstracts",
        ("Medical", "Academic", "Written"), ("1960-01-01", "1970-12-31"),
        {"corpus.jsonl": "1d52efe62f41beab79e756c72352c8ef0d3c918b86668c81d48c0779e11d76b3",
         "queries.jsonl": "1dff39d1c68c4b987b0a9226d7e59a338438f8acf7ffb84b5d0768f4748a2faa",
         "qrels/test.tsv": "f57b2c318be6a6d5198d1b8b0e7203c75cb27eb124085775d4c39b6a2a734915"},
    ),
    Collection(
        "VaswaniRetrieval", "vaswani", "Vaswani (NPL)",
        "Vaswani / NPL: 11,429 physics and electronics abstracts and 93 queries.",
        "Given a query about physics or electronics, retrieve relevant abstracts",
        ("Academic", "Engineering", "Written"), ("1970-01-01", "1975-12-31"),
        {"corpus.jsonl": "6c4cd42df39a63e5c2f2b0382171f310029ec9c07aa90d3e11182271c532c139",
         "queries.jsonl": "a4b1fb21e45553d4c2036c519dd6201d4ca438fa517a64a74ee918fdc6d69860",
         "qrels/test.tsv": "e4ce1335ba4914ea0d574e6a08264e1c2d3677d93acf2ea699cfef31d19cca88"},
    ),
)


# What every local retrieval task here has in common (the seven collections and their union).
_SHARED: dict = {
    "reference": "http://ir.dcs.gla.ac.uk/resources/test_collections/", "type": "Retrieval", "category": "t2t",
    "modalities": ["text"], "eval_splits": ["test"], "eval_langs": ["eng-Latn"], "main_score": "ndcg_at_10",
    "task_subtypes": ["Article retrieval"], "license": "not specified", "annotations_creators": "expert-annotated",
    "dialect": [], "sample_creation": "found",
}


STATS_DIR = Path(__file__).resolve().parent / "descriptive_stats"  # shipped in the wheel with the package


class CollectionTaskMetadata(TaskMetadata):
    """mteb reads descriptive statistics from its own package; these tasks' statistics ship in :data:`STATS_DIR`."""

    @property
    def descriptive_stat_path(self) -> Path:
        return STATS_DIR / str(self.type) / f"{self.name}.json"


def _metadata(c: Collection) -> TaskMetadata:
    return CollectionTaskMetadata(
        name=c.task,
        dataset={"path": f"local/{c.folder}", "revision": c.sha256["corpus.jsonl"][:40]},
        description=c.description + f" Read from a local BEIR folder (${DATA_ENV}/{c.folder}).",
        **_SHARED,
        date=c.date,
        domains=list(c.domains),
        bibtex_citation=c.citation,
        prompt={"query": c.instruction},
    )


class LocalCollectionRetrieval(LocalSourceMixin, AbsTaskRetrieval):
    """A retrieval task whose data is a local BEIR folder, verified against its recorded checksums."""

    collection: Collection

    def _local_folder(self) -> Path:
        return data_dir() / self.collection.folder  # no hub fallback: read_beir reports a missing folder

    def _verify(self, folder: Path) -> None:
        _verify_files(folder, self.collection.sha256, self.metadata.name)


def _verify_files(folder: Path, sha256: dict[str, str], task: str) -> None:
    for name, expected in sha256.items():
        path = folder / name
        if path.is_file() and sha256_file(path) != expected:
            raise LinqEvalError(
                f"{path}: sha256 does not match {task}'s recorded checksum: "
                f"restore the original file or point {DATA_ENV} at an unmodified copy"
            )


def _task_class(c: Collection) -> type[LocalCollectionRetrieval]:
    return type(c.task, (LocalCollectionRetrieval,), {"metadata": _metadata(c), "collection": c,
                                                       "__module__": __name__})


COLLECTION_TASKS: tuple[type[LocalCollectionRetrieval], ...] = tuple(_task_class(c) for c in COLLECTIONS)


# -- the union: every collection's queries over all their corpora ------------------------------------
UNION_FOLDERS: tuple[str, ...] = (*(c.folder for c in COLLECTIONS), "LegalBenchCorporateLobbying")


def _union_metadata() -> TaskMetadata:
    return CollectionTaskMetadata(
        name="CollectionsUnionRetrieval",
        dataset={"path": "local/union", "revision": "union-of-" + "-".join(UNION_FOLDERS)},
        description=("Every query of the seven classic IR collections and LegalBenchCorporateLobbying over the "
                     f"union of all their corpora (about 25k documents, 886 queries), read from ${DATA_ENV}. "
                     "Ids are '<folder>:<id>'. Each query's distractors now include other domains."),
        **_SHARED,
        date=("1958-01-01", "2023-12-31"),
        domains=["Academic", "Legal", "Medical", "Written"],
        bibtex_citation="",
        prompt={"query": "Given a question or a search request, retrieve documents that answer it"},
    )


def read_union(root: Path, split: str = "test") -> BeirData:
    """All folders of :data:`UNION_FOLDERS` under ``root`` as one BEIR split, ids prefixed by folder."""
    corpus: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for folder in UNION_FOLDERS:
        part = read_beir(root / folder, split)
        corpus.update({f"{folder}:{i}": doc for i, doc in part.corpus.items()})
        queries.update({f"{folder}:{i}": text for i, text in part.queries.items()})
        qrels.update({f"{folder}:{q}": {f"{folder}:{d}": g for d, g in docs.items()} for q, docs in part.qrels.items()})
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


class CollectionsUnionRetrieval(LocalCollectionRetrieval):
    """The union task: checks each collection against its recorded checksums, then reads them all."""

    metadata = _union_metadata()

    def _local_folder(self) -> Path:
        return data_dir()

    def _verify(self, folder: Path) -> None:
        for c in COLLECTIONS:
            _verify_files(folder / c.folder, c.sha256, self.metadata.name)

    def _digest(self, folder: Path) -> str:  # the union's own folders, not everything else in the data folder
        parts = "".join(f"{name}\0{data_sha256(folder / name)}\n" for name in UNION_FOLDERS)
        return hashlib.sha256(parts.encode()).hexdigest()

    def _read(self, folder: Path) -> dict:
        return {"default": {split: to_mteb_split(read_union(folder, split)) for split in self.eval_splits}}


ALL_COLLECTION_TASKS: tuple[type[LocalCollectionRetrieval], ...] = (*COLLECTION_TASKS, CollectionsUnionRetrieval)


def write_descriptive_stats(tasks: tuple[type[LocalCollectionRetrieval], ...] = ALL_COLLECTION_TASKS) -> list[Path]:
    """Compute each task's descriptive statistics with mteb from ``$LINQ_DATA_DIR`` (checked against the recorded
    checksums) and store them, sorted, where :class:`CollectionTaskMetadata` points."""
    written = []
    for cls in tasks:
        task = cls()
        stats = task.calculate_descriptive_statistics(overwrite_results=True)  # never the stored file
        path = task.metadata.descriptive_stat_path
        written.append(atomic_write_text(path, json.dumps(stats, indent=4, sort_keys=True) + "\n", folder=path.parent))
    return written
