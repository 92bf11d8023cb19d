"""The instruction table, held to mteb's instruction checks (tests/test_models/test_get_task_instruction.py)."""

from __future__ import annotations

import json

import mteb
import pytest
from mteb.models.abs_encoder import AbsEncoder
from mteb.types import PromptType

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.instructions import load_instructions, parse_overrides
from linq_eval.models.encoder import LinqEncoder

TABLE = load_instructions()
ENCODER = LinqEncoder(model=None, instructions=TABLE)
CQADUPSTACK = ["Android", "English", "Gaming", "Gis", "Mathematica", "Physics", "Programmers", "Stats", "Tex", "Unix",
               "Webmasters", "Wordpress"]


def test_covers_mteb_eng_v1_and_every_cqadupstack_subforum() -> None:
    names = [t.metadata.name for t in mteb.get_benchmark("MTEB(eng, v1)").tasks]
    assert len(names) == 56
    missing = [n for n in names + [f"CQADupstack{s}Retrieval" for s in CQADUPSTACK] if n not in TABLE.tasks]
    assert missing == []


def test_prompts_dict_keys_are_valid_mteb_keys() -> None:
    assert AbsEncoder.validate_task_to_prompt_name(TABLE.prompts_dict(), raise_for_invalid_keys=True)


def test_template_has_instruction_slot() -> None:
    assert "{instruction}" in TABLE.template
    assert TABLE.format_query("Find X", "q?") == "Instruct: Find X\nQuery: q?"


@pytest.mark.parametrize("task", mteb.get_tasks(modalities=["text"]), ids=lambda t: t.metadata.name)
def test_every_text_task_gets_an_instruction_lookup_that_does_not_raise(task) -> None:
    meta = task.metadata
    for prompt_type in (PromptType.query, PromptType.document, None):
        ENCODER.get_task_instruction(meta, prompt_type)
    if meta.type in {"Retrieval", "Reranking"}:
        query_prefix = ENCODER.prefix_for(meta, PromptType.query)
        assert query_prefix.startswith("Instruct: ") and len(query_prefix) > len("Instruct: \nQuery: ")
        assert ENCODER.prefix_for(meta, PromptType.document) == ""
    if meta.type in {"STS", "Classification", "Clustering", "PairClassification"}:
        assert ENCODER.prefix_for(meta, None).startswith("Instruct: ")


def test_table_entries_win_then_task_prompt_then_type() -> None:
    scifact = mteb.get_task("SciFact").metadata
    assert ENCODER.prefix_for(scifact, PromptType.query) == TABLE.format_query(TABLE.tasks["SciFact"], "")
    adi = mteb.get_task("ADIRetrieval").metadata  # not in the table: its own mteb prompt
    assert adi.prompt["query"] in ENCODER.prefix_for(adi, PromptType.query)
    sts = mteb.get_task("STS12").metadata
    assert ENCODER.prefix_for(sts, None) == "Instruct: Retrieve semantically similar text.\nQuery: "


def test_overrides_and_user_files(tmp_path) -> None:
    table = TABLE.with_overrides(parse_overrides(["SciFact=Find the evidence"]))
    assert table.lookup("SciFact") == "Find the evidence" and table.checksum() != TABLE.checksum()
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"tasks": {"ArguAna": "Refute it"}}))
    mine = load_instructions(path)
    assert mine.lookup("ArguAna") == "Refute it" and mine.lookup("SciFact") == TABLE.tasks["SciFact"]


@pytest.mark.parametrize("bad", ["SciFact", "=x", "SciFact="])
def test_bad_override_is_one_clear_error(bad: str) -> None:
    with pytest.raises(LinqEvalError, match="TASK=INSTRUCTION"):
        parse_overrides([bad])


def test_bad_user_file(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(LinqEvalError, match="not valid JSON"):
        load_instructions(path)
    with pytest.raises(LinqEvalError, match="does not exist"):
        load_instructions(tmp_path / "missing.json")


@pytest.mark.parametrize(("content", "message"), [
    (b'{"tasks": {"SciFact": "caf\xe9"}}', r"bad.json:1: not UTF-8"),  # latin-1, not UTF-8
    (json.dumps({"tasks": {}, "template": 5}).encode(), r"bad.json: instruction template 5 lacks"),
    (json.dumps({"tasks": {}, "template": "{instruction} {0}"}).encode(), r"cannot be filled \(IndexError"),
    (json.dumps({"tasks": {}, "template": "{instruction} {x}"}).encode(), r"cannot be filled \(KeyError"),
    (json.dumps({"tasks": {}, "template": "{instruction} {"}).encode(), r"cannot be filled \(ValueError"),
    (json.dumps({"tasks": {}, "task_types": ["Retrieval"]}).encode(), r'"task_types" must be a mapping'),
    (json.dumps({"tasks": {"SciFact": 5}}).encode(), r"instruction for 'SciFact' must be a string, got 5"),
    (json.dumps({"tasks": {"SciFact": None}}).encode(), r"must be a string, got null"),
    (b"[" * 100_000, r"nested too deeply|not valid JSON"),
])
def test_bad_user_table_is_one_line(tmp_path, content: bytes, message: str) -> None:
    """Before: UnicodeDecodeError, TypeError or (at encoding time) KeyError/IndexError tracebacks."""
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(LinqEvalError, match=message) as info:
        load_instructions(path)
    assert "\n" not in str(info.value)
