"""Every task linq-eval registers, held to mteb's own per-entry task tests.

mteb's tests/test_tasks/test_metadata.py (``test_all_metadata_is_filled_and_valid``),
tests/test_tasks/test_task_quality.py (``test_dataset_quality``, vendored in tests/mteb_checks) and
tests/test_validate_metadata/test_citation_formatting.py, run on our entries: the seven collections, their
union, every light set, and mteb's own tasks that we wrap with a local copy in the data folder. (The other
wrapped mteb tasks keep mteb's metadata object, so mteb's own suite covers them: checked below.) mteb's suite
is not in its wheel, so the checks are repeated here.

Quality findings are allowed only where :data:`KNOWN_ISSUES` lists the task and the check with its reason, the
way mteb's own ``KNOWN_ISSUES`` does; an entry that no longer fails is stale and fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import mteb
import pytest
from mteb.abstasks import AbsTaskRetrieval
from mteb.get_tasks import _TASKS_REGISTRY

import linq_eval
from linq_eval.core.light_manifest import available
from linq_eval.core.local_data import read_beir
from linq_eval.tasks import ir_collections
from linq_eval.tasks.ir_collections import ALL_COLLECTION_TASKS, COLLECTIONS, STATS_DIR
from linq_eval.tasks.local_source import LocalSourceMixin
from tests.conftest import DATA
from tests.mteb_checks.citation import citation_is_canonical
from tests.mteb_checks.task_quality import _WARNING_CHECK_KINDS, _task_quality

linq_eval.register()  # idempotent; the lists below must not depend on the start-up hook

OURS = sorted(name for name, cls in _TASKS_REGISTRY.items() if cls.__module__.startswith("linq_eval."))
WRAPPED = sorted(name for name, cls in _TASKS_REGISTRY.items()
                 if issubclass(cls, LocalSourceMixin) and name not in OURS)
WRAPPED_LOCAL = [name for name in WRAPPED if (DATA / name).is_dir()]
CHECKED = OURS + WRAPPED_LOCAL

COLLECTION_NAMES = [cls.metadata.name for cls in ALL_COLLECTION_TASKS]
LOCAL_MTEB_TASKS = ["BIOSSES", "LegalBenchCorporateLobbying", "SICK-R", "STS12", "STS13", "STS14", "STS15",
                    "STS16", "STSBenchmark"]

_MTEB_KNOWN = "listed for this task in mteb's own KNOWN_ISSUES (tests/test_tasks/test_task_quality.py)"
# check id (kind:field, or kind where the check has no field) -> task -> why the finding is accepted. The data
# is published as is: dropping or merging documents would change the collection and every score on it.
KNOWN_ISSUES: dict[str, dict[str, str]] = {
    "short_text:documents_text_statistics": {
        "CACMRetrieval": "document 262 is the article 'MAP' (3 characters): 1,617 of CACM's 3,204 articles have "
                         "a title and no abstract in the original cacm.all, and this title is that short",
        "CranfieldRetrieval": "documents 471 and 995 are empty in the original cran.all.1400; 995 is even judged "
                              "relevant (grade 2) to query 125",
        "CollectionsUnionRetrieval": "holds CranfieldRetrieval's two empty documents and CACMRetrieval's 'MAP'",
    },
    "duplicate_text:documents_text_statistics": {
        "CACMRetrieval": "191 of 3,204 documents (6.0%) repeat another's text: title-only articles sharing a "
                         "title, e.g. 'Incomplete Elliptic Integrals (Algorithm 73)' five times (ids 244, 247, 468, "
                         "875, 921: an algorithm and its later certifications and remarks are separate articles, "
                         "each with its own judgments)",
    },
    "duplicate_text:queries_text_statistics": {
        "CollectionsUnionRetrieval": "CISI's queries 1-35 are ADI's 35 queries word for word, so 35 of the "
                                     "union's 886 queries (4.0%) repeat another's text; each keeps its own "
                                     "collection's judgments",
    },
    "short_text:text1_statistics": {"STS12": _MTEB_KNOWN},
    "duplicate_pairs": {"STS12": _MTEB_KNOWN, "STS14": _MTEB_KNOWN},
}


def _known(name: str) -> set[str]:
    return {check for check, tasks in KNOWN_ISSUES.items() if name in tasks}


def test_every_task_we_register_is_checked() -> None:
    assert set(OURS) >= {*COLLECTION_NAMES, *available()}
    assert set(WRAPPED_LOCAL) == set(LOCAL_MTEB_TASKS), DATA
    listed = {name for tasks in KNOWN_ISSUES.values() for name in tasks}
    assert listed <= set(CHECKED)
    assert all(reason.strip() for tasks in KNOWN_ISSUES.values() for reason in tasks.values())


@pytest.mark.parametrize("name", CHECKED)
def test_metadata_is_filled_and_valid(name: str) -> None:  # mteb: test_all_metadata_is_filled_and_valid
    task = mteb.get_task(name)
    task.metadata._validate_metadata()
    assert task.metadata.is_filled()
    assert task.metadata.dataset.get("trust_remote_code", False) is False
    assert isinstance(task.metadata.simplified_task_type, str)
    assert task.is_aggregate is False
    assert task.metadata.descriptive_stats is not None, task.metadata.descriptive_stat_path
    assert task.metadata.n_samples is not None
    if isinstance(task.metadata.prompt, dict):
        assert isinstance(task, AbsTaskRetrieval)


@pytest.mark.parametrize("name", CHECKED)
def test_task_quality(name: str) -> None:  # mteb: test_dataset_quality, with its known-issue rule
    findings = [check for check, _ in _task_quality(mteb.get_task(name))
                if check.split(":", 1)[0] not in _WARNING_CHECK_KINDS]
    known = _known(name)
    unexplained = [check for check in findings if check not in known]
    stale = known - set(findings)
    assert not unexplained, f"{name} fails {unexplained}: fix the data or list it in KNOWN_ISSUES with the reason"
    assert not stale, f"{name} no longer fails {sorted(stale)}: remove those KNOWN_ISSUES entries"


@pytest.mark.parametrize("name", CHECKED)
def test_task_bibtex(name: str) -> None:  # mteb: test_citation_formatting
    assert citation_is_canonical(mteb.get_task(name).metadata.bibtex_citation)


def test_other_wrapped_tasks_keep_mtebs_own_metadata() -> None:
    """Wrapping only changes where data is read from: mteb's own per-entry tests hold for the metadata object."""
    assert len(WRAPPED) > len(WRAPPED_LOCAL)
    for name in WRAPPED:
        cls = _TASKS_REGISTRY[name]
        original = cls.__bases__[1]
        assert cls.__bases__[0] is LocalSourceMixin and original.__module__.startswith("mteb.")
        assert cls.metadata is original.metadata, name


@pytest.mark.parametrize("name", COLLECTION_NAMES)
def test_collection_stats_ship_in_the_package(name: str) -> None:
    path = mteb.get_task(name).metadata.descriptive_stat_path
    assert path == STATS_DIR / "Retrieval" / f"{name}.json" and path.is_file()
    assert path.is_relative_to(Path(linq_eval.__file__).parent)  # inside the package, so in the wheel


def test_collection_stats_count_the_data() -> None:
    """Each collection's statistics count its local data; the union's add up the parts."""
    totals = {"num_documents": 0, "num_queries": 0, "num_relevant_docs": 0}
    for c in COLLECTIONS:
        data = read_beir(DATA / c.folder)
        stats = mteb.get_task(c.task).metadata.descriptive_stats["test"]
        counts = {"num_documents": len(data.corpus), "num_queries": len(data.queries),
                  "num_relevant_docs": sum(len(docs) for docs in data.qrels.values())}
        assert {k: stats.get(k, stats["relevant_docs_statistics"].get(k)) for k in counts} == counts, c.task
        totals = {k: totals[k] + counts[k] for k in totals}
    legal = mteb.get_task("LegalBenchCorporateLobbying").metadata.descriptive_stats["test"]  # mteb's, = our copy
    union = mteb.get_task("CollectionsUnionRetrieval").metadata.descriptive_stats["test"]
    assert union["num_documents"] == totals["num_documents"] + legal["num_documents"]
    assert union["num_queries"] == totals["num_queries"] + legal["num_queries"]
    assert (union["relevant_docs_statistics"]["num_relevant_docs"]
            == totals["num_relevant_docs"] + legal["relevant_docs_statistics"]["num_relevant_docs"])


def test_regenerating_the_stats_reproduces_the_shipped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = (STATS_DIR / "Retrieval" / "ADIRetrieval.json").read_text()
    monkeypatch.setattr(ir_collections, "STATS_DIR", tmp_path)
    adi = next(cls for cls in ALL_COLLECTION_TASKS if cls.metadata.name == "ADIRetrieval")
    (path,) = ir_collections.write_descriptive_stats((adi,))
    assert path == tmp_path / "Retrieval" / "ADIRetrieval.json"
    assert path.read_text() == shipped
    assert json.loads(shipped)["test"]["num_samples"] == 82 + 35
