"""Every shipped light task and the LinqLight benchmark, held to mteb's own per-entry tests.

mteb's tests/test_tasks/test_metadata.py, tests/test_tasks/test_task_quality.py (vendored in
tests/mteb_checks), tests/test_validate_metadata/test_citation_formatting.py and tests/test_benchmarks/, run
on our entries (mteb's suite is not in its wheel, so the checks are repeated here).
"""

from __future__ import annotations

import bibtexparser
import mteb
import pytest
from bibtexparser.bwriter import BibTexWriter
from mteb.abstasks import AbsTaskRetrieval

from linq_eval.core.light_manifest import available, load_manifest, manifest_path
from linq_eval.core.settings import light_dir
from linq_eval.registry import LIGHT_BENCHMARK as BENCHMARK_NAME
from tests.mteb_checks.task_quality import _WARNING_CHECK_KINDS, _task_quality

SHIPPED = available()
EXPECTED = {f"{name}-light" for name in ("ADIRetrieval", "CACMRetrieval", "CISIRetrieval", "CranfieldRetrieval",
                                         "LISARetrieval", "MedlineRetrieval", "VaswaniRetrieval",
                                         "LegalBenchCorporateLobbying", "CollectionsUnionRetrieval")}


def test_every_collection_and_the_union_ship_a_light_set() -> None:
    assert set(SHIPPED) >= EXPECTED, light_dir()


@pytest.mark.parametrize("name", SHIPPED)
def test_metadata_is_filled_and_valid(name: str) -> None:  # mteb: test_all_metadata_is_filled_and_valid
    task = mteb.get_task(name)
    task.metadata._validate_metadata()
    assert task.metadata.is_filled()
    assert task.metadata.dataset.get("trust_remote_code", False) is False
    assert isinstance(task.metadata.simplified_task_type, str)
    assert task.metadata.descriptive_stats is not None and task.metadata.n_samples is not None
    if isinstance(task.metadata.prompt, dict):
        assert isinstance(task, AbsTaskRetrieval)
    assert task.metadata.adapted_from == [load_manifest(manifest_path(name)).source_task]
    assert task.is_aggregate is False


@pytest.mark.parametrize("name", SHIPPED)
def test_task_quality(name: str) -> None:  # mteb: test_dataset_quality, no known issues allowed
    findings = _task_quality(mteb.get_task(name))
    errors = [message for check, message in findings if check.split(":", 1)[0] not in _WARNING_CHECK_KINDS]
    assert not errors, errors


@pytest.mark.parametrize("name", SHIPPED)
def test_descriptive_stats_match_the_manifest(name: str) -> None:
    manifest = load_manifest(manifest_path(name))
    stats = mteb.get_task(name).metadata.descriptive_stats["test"]
    assert stats["num_documents"] == len(manifest.corpus_ids)
    assert stats["num_queries"] == len(manifest.query_ids)


@pytest.mark.parametrize("name", SHIPPED)
def test_registered_in_all_three_places(name: str) -> None:
    from mteb.get_tasks import _SIMILAR_TASKS, _TASKS_REGISTRY, TASK_LIST

    parent = load_manifest(manifest_path(name)).source_task
    assert name in _TASKS_REGISTRY
    assert any(t.metadata.name == name for t in TASK_LIST)
    assert name in _SIMILAR_TASKS[parent]


def _format_bibtex(text: str) -> str | None:  # mteb: test_citation_formatting.format_bibtex
    parser = bibtexparser.bparser.BibTexParser(common_strings=True, ignore_nonstandard_types=False,
                                               interpolate_strings=False)
    database = bibtexparser.loads(text, parser)
    if not database.entries:
        return None
    writer = BibTexWriter()
    writer.indent = "  "
    writer.comma_first = False
    writer.add_trailing_comma = True
    return writer.write(database).strip()


@pytest.mark.parametrize("name", SHIPPED)
def test_task_bibtex(name: str) -> None:
    citation = (mteb.get_task(name).metadata.bibtex_citation or "").strip()
    if citation:
        assert _format_bibtex(citation) == citation


def test_benchmark_is_found_unique_and_holds_every_light_task() -> None:
    import mteb.benchmarks.benchmarks as module

    benchmark = mteb.get_benchmark(BENCHMARK_NAME)
    assert isinstance(benchmark, mteb.Benchmark)
    assert sorted(t.metadata.name for t in benchmark.tasks) == SHIPPED
    names = [b.name for b in vars(module).values() if isinstance(b, mteb.Benchmark)]
    assert len(names) == len(set(names))
    assert BENCHMARK_NAME in {b.name for b in mteb.get_benchmarks()}
    citation = (benchmark.citation or "").strip()
    if citation:
        assert _format_bibtex(citation) == citation


def test_a_model_trained_on_the_parent_is_not_zero_shot_on_the_light_set() -> None:
    meta = mteb.get_model_meta("sentence-transformers/all-MiniLM-L6-v2")
    trained = meta.model_copy(update={"training_datasets": {"LegalBenchCorporateLobbying"}})
    assert trained.is_zero_shot_on(["LegalBenchCorporateLobbying-light"]) is False
    assert trained.is_zero_shot_on(["ADIRetrieval-light"]) is True
