"""Per-query scores: their mean is mteb's own main score, and mteb's result loader is unaffected."""

from __future__ import annotations

import json
from pathlib import Path

import mteb
import numpy as np
import pytest

from linq_eval.core.per_query import retrieval_per_query
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
