"""Weak title -> body pairs (``kind: titles``) crafted from real corpora: CISI (titles, clean bodies), CACM (1,617
title-only records), Cranfield (every body repeats its title as a first sentence). The end-to-end refine run
with a titles source is in tests/test_train_refine.py, next to the fixtures it shares.
"""

from __future__ import annotations

import json

import pytest

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.instructions import load_instructions
from tests.conftest import DATA

INSTRUCTION = "Given the title of a scientific article, retrieve the article"


def _raw(folder: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in (DATA / folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    return {str(r["_id"]): r for r in rows}


def _craft(folder: str, seed: int = 0, **fields: object):  # noqa: ANN202 -- TaskData
    from linq_train.refine.config import TitleSource
    from linq_train.refine.craft import craft_titles

    return craft_titles(TitleSource(folder=folder, task=f"{folder}Titles", **fields), DATA, load_instructions(), seed)


def test_cisi_titles_pair_each_title_with_its_own_body() -> None:
    raw = _raw("cisi")
    task = _craft("cisi")
    eligible = {d for d, r in raw.items() if len(r["title"].strip()) >= 10 and len(r["text"].strip()) >= 40}
    assert len(eligible) == len(raw) - 2  # 'AD695049' and 'Monocle' are too short to be titles
    assert {e.positive_id for e in task.examples} == eligible == set(task.corpus)
    assert task.instruction == INSTRUCTION and {e.instruction for e in task.examples} == {INSTRUCTION}
    for e in task.examples:
        title, text = raw[e.positive_id]["title"].strip(), raw[e.positive_id]["text"].strip()
        assert e.query == title and e.positive == task.corpus[e.positive_id]
        assert e.positive == text  # the body alone: no title prepended, so the title is never in it twice
        assert not e.positive.startswith(f"{title} {title}") and e.positive_id in e.known_positive_ids
        assert e.task_type == "Retrieval" and e.in_batch_negatives and e.source == "titles:cisi"
    # documents sharing a title (volumes of one series) are each other's positives, so none is mined as a negative
    shared = [e for e in task.examples if len(e.known_positive_ids) > 1]
    assert shared and all({raw[d]["title"].strip().lower() for d in e.known_positive_ids} == {e.query.lower()}
                          for e in shared)


def test_title_only_records_are_skipped() -> None:
    raw = _raw("cacm")
    title_only = {d for d, r in raw.items() if r.get("title") and not r["text"].strip()}
    assert len(title_only) > 1000  # real CACM: most records are a title alone
    task = _craft("cacm")
    kept = {e.positive_id for e in task.examples}
    assert not kept & title_only and not set(task.corpus) & title_only
    assert kept == {d for d, r in raw.items() if len((r.get("title") or "").strip()) >= 10
                    and len(r["text"].strip()) >= 40}
    assert all(len(e.positive) >= 40 and len(e.query) >= 10 for e in task.examples)


def test_a_title_repeated_as_the_first_sentence_is_cut_off() -> None:
    from linq_train.refine.craft import body_without_title

    raw = _raw("cranfield")
    task = _craft("cranfield")
    repeated = [e for e in task.examples if raw[e.positive_id]["text"].startswith(e.query)]
    assert len(repeated) > 1300  # real Cranfield repeats nearly every title
    for e in repeated:
        assert not e.positive.startswith(e.query) and raw[e.positive_id]["text"].endswith(e.positive)
    # a title that only opens the first sentence is part of the body (CISI 244)
    cisi = _raw("cisi")["244"]
    assert body_without_title(cisi["title"], cisi["text"]) == cisi["text"].strip()
    assert body_without_title("A title", "A title") == "" and body_without_title("A title", "A title .\nBody") == "Body"
    doubled = next(e for e in task.examples if e.positive_id == "410")  # the title twice before the abstract
    assert raw["410"]["text"].count(doubled.query) == 2 and doubled.positive.startswith("a method to determine")


def test_max_pairs_is_a_seeded_sample_and_max_corpus_caps_the_pool() -> None:
    full = _craft("cisi")
    a, b, c = _craft("cisi", 0, max_pairs=40), _craft("cisi", 0, max_pairs=40), _craft("cisi", 1, max_pairs=40)
    ids = [[e.positive_id for e in t.examples] for t in (a, b, c)]
    assert len(ids[0]) == 40 and ids[0] == ids[1] != ids[2]
    assert set(ids[0]) <= {e.positive_id for e in full.examples} and len(a.corpus) == len(full.corpus)
    capped = _craft("cisi", 0, max_pairs=40, max_corpus=100)
    assert [e.positive_id for e in capped.examples] == ids[0]
    assert len(capped.corpus) == 140 and set(ids[0]) <= set(capped.corpus)


def test_leakage_guard_sees_title_pairs_like_any_other() -> None:
    from linq_train.refine.config import EvalSet, LeakageConfig
    from linq_train.refine.leakage import build_index, guard

    index = build_index(LeakageConfig(eval_sets=[EvalSet(folder="cisi"), EvalSet(folder="cranfield")]), DATA)
    for folder in ("cisi", "cranfield"):
        task = _craft(folder, max_pairs=40)
        kept, dropped = guard(task.examples, index)
        assert not kept and len(dropped) == 40
        assert all(r.startswith(f"query exact {folder}:doc:") for _, r in dropped)  # the title alone is indexed
        # and so is the body without its repeated title (Cranfield): the positive alone is caught too
        assert all((index.match(e.positive) or "").startswith(f"exact {folder}:doc:") for e in task.examples)


def test_bad_title_sources_fail_in_one_line(tmp_path) -> None:  # noqa: ANN001
    from linq_train.refine.config import RefineConfig, TitleSource

    with pytest.raises(LinqEvalError, match="no document with a title of >= 500"):
        _craft("cisi", min_title_chars=500)
    with pytest.raises(LinqEvalError, match="corpus.jsonl does not exist"):
        _craft(str(tmp_path))
    with pytest.raises(ValueError, match="is blank"):
        TitleSource(folder="cisi", task="T", instruction="  ")
    with pytest.raises(ValueError, match="'cisi' is both a training source"):
        RefineConfig.model_validate({"sources": [{"kind": "titles", "folder": "cisi", "task": "CISITitles"}],
                                     "leakage": {"eval_sets": [{"folder": "cisi"}]}})
