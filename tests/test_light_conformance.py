"""Every shipped light task and the LinqLight benchmark: what mteb's per-entry tests ask of light sets in particular.

The per-entry checks every registered task gets (metadata filled and valid, task quality on the descriptive
statistics, citation formatting) run in tests/test_task_conformance.py, light tasks included. Here: the parent
link (``adapted_from``), statistics of the manifest's ids, registration in all three places, and mteb's
tests/test_benchmarks/ on the benchmark.
"""

from __future__ import annotations

import mteb
import pytest

from linq_eval.core.light_manifest import available, load_manifest, manifest_path
from linq_eval.core.settings import light_dir
from linq_eval.registry import LIGHT_BENCHMARK as BENCHMARK_NAME
from tests.mteb_checks.citation import citation_is_canonical

SHIPPED = available()
EXPECTED = {f"{name}-light" for name in ("ADIRetrieval", "CACMRetrieval", "CISIRetrieval", "CranfieldRetrieval",
                                         "LISARetrieval", "MedlineRetrieval", "VaswaniRetrieval",
                                         "LegalBenchCorporateLobbying", "CollectionsUnionRetrieval")}


def test_every_collection_and_the_union_ship_a_light_set() -> None:
    assert set(SHIPPED) >= EXPECTED, light_dir()


@pytest.mark.parametrize("name", SHIPPED)
def test_adapted_from_its_source_task(name: str) -> None:  # otherwise mteb's zero-shot flag is wrong
    assert mteb.get_task(name).metadata.adapted_from == [load_manifest(manifest_path(name)).source_task]


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


def test_benchmark_is_found_unique_and_holds_every_light_task() -> None:
    import mteb.benchmarks.benchmarks as module

    benchmark = mteb.get_benchmark(BENCHMARK_NAME)
    assert isinstance(benchmark, mteb.Benchmark)
    assert sorted(t.metadata.name for t in benchmark.tasks) == SHIPPED
    names = [b.name for b in vars(module).values() if isinstance(b, mteb.Benchmark)]
    assert len(names) == len(set(names))
    assert BENCHMARK_NAME in {b.name for b in mteb.get_benchmarks()}
    assert citation_is_canonical(benchmark.citation)


def test_a_model_trained_on_the_parent_is_not_zero_shot_on_the_light_set() -> None:
    meta = mteb.get_model_meta("sentence-transformers/all-MiniLM-L6-v2")
    trained = meta.model_copy(update={"training_datasets": {"LegalBenchCorporateLobbying"}})
    assert trained.is_zero_shot_on(["LegalBenchCorporateLobbying-light"]) is False
    assert trained.is_zero_shot_on(["ADIRetrieval-light"]) is True
