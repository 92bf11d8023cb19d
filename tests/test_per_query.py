"""Per-query scores: their mean is mteb's own main score, and mteb's result loader is unaffected."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mteb
import numpy as np
import pytest

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.per_query import read_per_query, retrieval_per_query, write_retrieval_per_query
from linq_eval.evaluation.runner import RunSpec, run


def test_per_query_ndcg_averages_to_mtebs_main_score(tmp_path: Path) -> None:
    results = run(RunSpec(model="pypi:all-MiniLM-L6-v2"), ["ADIRetrieval"], tmp_path)
    files = list((tmp_path / "per_query").rglob("ADIRetrieval.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    scores = data["scores"]["test"]["default"]
    assert len(scores) == 35 and data["metric"] == "ndcg_at_10"
    assert np.mean(list(scores.values())) == pytest.approx(results.task_results[0].get_score(), abs=1e-5)
    loaded = mteb.ResultCache(tmp_path).load_results()  # our extra files live outside mteb's results tree
    assert [t.task_name for m in loaded.model_results for t in m.task_results] == ["ADIRetrieval"]


def test_unretrieved_judged_query_scores_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run_ = {"q1": {"d1": 0.9, "d3": 0.5}}
    assert retrieval_per_query(run_, qrels) == {"q1": 1.0, "q2": 0.0}


def _fake_task(main_score: str, dataset: dict) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(name="FakeRetrieval", main_score=main_score, eval_splits=["test"]),
                           dataset=dataset)


def test_per_query_scores_are_the_tasks_own_main_metric(tmp_path: Path) -> None:
    """A task whose main score is recall@1 gets recall@1 per query, not nDCG@10."""
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    ranking = {"q1": {"d1": 0.9, "d3": 0.5}, "q2": {"d3": 0.9, "d2": 0.8}}
    predictions = tmp_path / "pred.json"
    predictions.write_text(json.dumps({"default": {"test": ranking}}))
    task = _fake_task("recall_at_1", {"default": {"test": {"relevant_docs": qrels}}})
    data = json.loads(write_retrieval_per_query(task, predictions, tmp_path / "pq.json").read_text())
    assert data["metric"] == "recall_at_1" and data["eval_split"] == "test"
    assert data["scores"]["test"]["default"] == {"q1": 1.0, "q2": 0.0}  # nDCG@10 would give q2 about 0.63
    assert retrieval_per_query(ranking, qrels, "map_at_5")["q2"] == pytest.approx(0.5)


def test_main_metric_without_per_query_form_is_refused(tmp_path: Path) -> None:
    predictions = tmp_path / "pred.json"
    predictions.write_text(json.dumps({"default": {"test": {}}}))
    task = _fake_task("mrr_at_10", {"default": {"test": {"relevant_docs": {"q1": {"d1": 1}}}}})
    with pytest.raises(LinqEvalError, match="FakeRetrieval's main score mrr_at_10 has no per-query form"):
        write_retrieval_per_query(task, predictions, tmp_path / "pq.json")
    assert not (tmp_path / "pq.json").exists()


def test_read_per_query_takes_the_evaluation_split_not_the_first_name(tmp_path: Path) -> None:
    """'dev' sorts before 'test': the task's evaluation split (recorded in the file) must win."""
    path = tmp_path / "pq.json"
    path.write_text(json.dumps({"eval_split": "test", "scores": {"dev": {"default": {"q": 0.1}},
                                                                 "test": {"default": {"q": 0.9}}}}))
    assert read_per_query(path) == {"q": 0.9}
    assert read_per_query(path, "dev") == {"q": 0.1}
    path.write_text(json.dumps({"scores": {"dev": {"default": {"q": 0.1}}, "test": {"default": {"q": 0.9}}}}))
    with pytest.raises(LinqEvalError, match="no per-query scores for split None"):
        read_per_query(path)  # two splits and no record of which one is evaluated: refuse, never guess
