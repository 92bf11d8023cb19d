"""The document store shared by `linq-eval run --embedding-cache` and light validation: the same scores as
without it, each document text encoded once across runs, titles not doubled, a damaged store rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linq_eval.core.per_query import read_per_query
from linq_eval.evaluation.runner import RunSpec, load_encoder, run

SPEC = RunSpec(model="pypi:all-MiniLM-L6-v2", max_length=16, dtype="float32")
TASK = "ADIRetrieval"  # its documents have titles: a title put in twice would change the scores


def _scores(folder: Path) -> dict[str, float]:
    return read_per_query(next((folder / "per_query").rglob(f"{TASK}.json")))


def test_a_cached_run_scores_as_an_uncached_one_and_encodes_each_document_once(tmp_path: Path) -> None:
    plain, cached, again = (load_encoder(SPEC) for _ in range(3))
    store = tmp_path / "store"
    run(SPEC, [TASK], tmp_path / "plain", show_progress=False, encoder=plain)
    run(SPEC, [TASK], tmp_path / "cached", show_progress=False, encoder=cached, embedding_cache=store)
    assert _scores(tmp_path / "cached") == _scores(tmp_path / "plain")
    assert cached.usage["document"]["texts"] == plain.usage["document"]["texts"] > 0
    run(SPEC, [TASK], tmp_path / "again", show_progress=False, encoder=again, embedding_cache=store)
    assert _scores(tmp_path / "again") == _scores(tmp_path / "plain")
    assert "document" not in again.usage and again.usage["query"]["texts"] > 0  # queries are encoded afresh
    (folder,) = [p for p in store.iterdir() if p.is_dir()]  # one store for this model and settings
    assert folder.name.startswith("sentence-transformers_all-MiniLM-L6-v2-")
    assert (folder.with_name(folder.name + ".lock")).exists()


def test_an_unreadable_store_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "store"
    run(SPEC, [TASK], tmp_path / "first", show_progress=False, embedding_cache=store)
    (index,) = store.rglob("index.json")
    json.loads(index.read_text())  # written whole (atomically)
    index.write_text(index.read_text()[:100])  # what a writer killed mid-write left before the writes were atomic
    encoder = load_encoder(SPEC)
    with caplog.at_level("WARNING"):
        run(SPEC, [TASK], tmp_path / "second", show_progress=False, encoder=encoder, embedding_cache=store)
    assert "unreadable" in caplog.text and encoder.usage["document"]["texts"] > 0
    assert _scores(tmp_path / "second") == _scores(tmp_path / "first")


def test_the_cli_refuses_a_file_as_the_store(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    (tmp_path / "f").write_text("")
    done = run_cli("linq-eval", "run", "-m", "pypi:all-MiniLM-L6-v2", "-t", TASK, "--embedding-cache", str(tmp_path / "f"),
                   "--output-folder", str(tmp_path / "out"))
    assert done.returncode == 2 and "--embedding-cache" in done.stderr and "give a folder" in done.stderr
    assert not (tmp_path / "out").exists()
