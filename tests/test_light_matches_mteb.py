"""The light validator scores a system exactly as mteb's evaluation does, on every shipped task.

Its full-task per-query scores come from its own cosine matrix (so hundreds of light corpora can be scored
without re-encoding); they must equal the per-query scores of the same system evaluated by mteb
(`linq-eval run`, mteb's search and pytrec_eval). all-MiniLM-L6-v2 cut to 16 tokens keeps this affordable
on a CPU; titles come first in every document text, so a lost title still shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import mteb
import numpy as np
import pytest

from linq_eval.evaluation.runner import RunSpec, run
from linq_eval.evaluation.systems import System, cache_root
from linq_eval.light.validate import prepare

MINILM = "pypi:all-MiniLM-L6-v2"
SYSTEM = System("minilm-16tok", MINILM, max_length=16)
REPO = Path(__file__).resolve().parents[1]
# the source task of every shipped light set
TASKS = sorted(json.loads(p.read_text())["source_task"] for p in (REPO / "tasks_light").glob("*-light.json"))


# Float noise: documents whose first 16 tokens are the same (Cranfield's series of reports, say) embed to
# vectors equal up to the last bits, so their order differs between any two encodes of them.
NOISE = 1e-5


@pytest.fixture(scope="module")
def mteb_evaluation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    """Task -> (mteb's per-query scores, mteb's saved ranking) of the system, from `linq-eval run`."""
    cache = tmp_path_factory.mktemp("mteb-cache")
    # the validator's document store (LINQ_EMBEDDING_CACHE): the union reuses its collections' embeddings and
    # the validator reuses these, so only texts built differently from mteb's would be encoded (and score) apart
    run(RunSpec(model=MINILM, max_length=16, dtype="float32"), TASKS, cache, show_progress=False,
        embedding_cache=cache_root())
    out = {}
    for path in (cache / "per_query").rglob("*.json"):
        data = json.loads(path.read_text())
        task = data["task_name"]
        ranking = next((cache / "predictions").rglob(f"{task}_predictions.json"))
        out[task] = (data["scores"]["test"]["default"], json.loads(ranking.read_text())["default"]["test"])
    return out


def _top_scores(run_: dict[str, float], k: int = 11) -> np.ndarray:
    return np.sort(np.array(list(run_.values())))[::-1][:k]


@pytest.mark.parametrize("task", TASKS)
def test_validator_per_query_scores_equal_mtebs(task: str, mteb_evaluation: dict) -> None:
    """Equal on every query, except where documents tied up to float noise straddle rank 10: there the two
    rankings must hold the same scores (to NOISE) at every rank, so only the order of near-ties differs."""
    theirs_scores, theirs_runs = mteb_evaluation[task]
    panel = prepare(mteb.get_task(task), panel=(SYSTEM,), pool_refs=())
    ours = panel.full[SYSTEM.name]
    theirs = {q: s for q, s in theirs_scores.items() if q in ours}
    assert set(ours) == set(theirs)
    differing = [q for q in ours if abs(ours[q] - theirs[q]) >= 1e-6]
    assert len(differing) <= max(1, len(ours) // 50), f"{task}: {len(differing)} of {len(ours)} queries differ"
    for q in differing:
        mine = _top_scores(panel.rankers[SYSTEM.name].run(query_ids=[q], top_k=11)[q])
        np.testing.assert_allclose(mine, _top_scores(theirs_runs[q]), atol=NOISE, err_msg=f"{task} query {q}")
        gaps = np.diff(mine)
        assert (np.abs(gaps) < NOISE).any(), f"{task} query {q}: differs without a near-tie"


def test_every_shipped_task_is_covered() -> None:
    assert len(TASKS) == 9 and "CollectionsUnionRetrieval" in TASKS and "CACMRetrieval" in TASKS


def test_damaged_embedding_cache_is_detected_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """What two processes writing one mteb embedding cache do (each saves its own index over the other's, so
    texts point at other texts' vectors) is caught by the spot check, and the cache is rebuilt."""
    from linq_eval.evaluation.systems import DenseScorer, task_data

    monkeypatch.setenv("LINQ_EMBEDDING_CACHE", str(tmp_path))
    data = task_data(mteb.get_task("ADIRetrieval"))
    clean = DenseScorer(SYSTEM, data).scores
    (index_file,) = [p for p in tmp_path.rglob("index.json") if "_documents" in p.parts]
    index = json.loads(index_file.read_text())
    n = len(index)
    index_file.write_text(json.dumps({h: (i + 1) % n for h, i in index.items()}))  # every text -> a neighbour's
    with caplog.at_level("WARNING"):
        again = DenseScorer(SYSTEM, data).scores
    assert "does not match fresh encodes" in caplog.text
    np.testing.assert_allclose(again, clean, atol=1e-6)
