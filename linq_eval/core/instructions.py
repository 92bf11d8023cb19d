"""The instruction table: which instruction each task's inputs get (data in ``data/instructions.json``).

Queries of asymmetric tasks (retrieval, reranking) are written ``Instruct: {instruction}\\nQuery: {text}``;
documents stay plain. Symmetric tasks (STS, classification, clustering, pair classification,
summarization) instruct every input. A task missing from the table falls back to the task's own mteb
prompt, then to its task type's generic instruction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import check_file, parse_json

logger = logging.getLogger(__name__)

TEMPLATE = "Instruct: {instruction}\nQuery: "
# Task types whose documents are encoded without an instruction.
ASYMMETRIC_TYPES = frozenset({"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"})


@dataclass(frozen=True)
class InstructionTable:
    """Instructions per mteb task name, with a fallback per mteb task type.

    Args:
        tasks: task name -> instruction.
        task_types: task type (e.g. ``"Retrieval"``) -> instruction used when the task is not listed.
        template: a string containing ``{instruction}``; the query text follows it.
    """

    tasks: Mapping[str, str]
    task_types: Mapping[str, str]
    template: str = TEMPLATE
    source: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or "{instruction}" not in self.template:
            raise LinqEvalError(f"instruction template {self.template!r} lacks '{{instruction}}': add it")
        try:  # any other {field} would only fail while encoding
            self.template.format(instruction="")
        except (KeyError, IndexError, ValueError) as exc:
            raise LinqEvalError(f"instruction template {self.template!r} cannot be filled ({type(exc).__name__}: "
                                f"{exc}): use '{{instruction}}' as its only field, and '{{{{' '}}}}' for braces") from None
        for key, text in {**self.tasks, **self.task_types, **self.overrides}.items():
            if not isinstance(text, str):
                raise LinqEvalError(f"instruction for {key!r} must be a string, got {json.dumps(text)[:40]}")
            if not text.strip():
                raise LinqEvalError(f"instruction for {key!r} is empty: give a non-empty string")

    def with_overrides(self, overrides: Mapping[str, str]) -> InstructionTable:
        """A copy in which ``overrides`` (task name -> instruction) win over the table."""
        return InstructionTable(self.tasks, self.task_types, self.template, self.source, {**self.overrides, **overrides})

    def lookup(self, task_name: str, task_type: str | None = None, task_prompt: str | None = None) -> str:
        """The instruction for a task: override, table, the task's own prompt, then its type's fallback."""
        for candidate in (self.overrides.get(task_name), self.tasks.get(task_name), task_prompt):
            if candidate:
                return candidate
        if task_type and task_type in self.task_types:
            return self.task_types[task_type]
        return self.task_types["Retrieval"]

    def prompts_dict(self) -> dict[str, str]:
        """Task names and task types -> instruction, in the shape mteb's ``AbsEncoder.prompts_dict`` expects."""
        return {**self.task_types, **self.tasks, **self.overrides}

    def format_query(self, instruction: str, text: str) -> str:
        """``Instruct: {instruction}\\nQuery: {text}``."""
        return self.template.format(instruction=instruction) + text

    def checksum(self) -> str:
        """sha256 of the effective table: results and baselines record it to prove comparability."""
        payload = json.dumps(
            {"template": self.template, "prompts": self.prompts_dict()}, sort_keys=True, ensure_ascii=False
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def _read_table(text: str, origin: str) -> InstructionTable:
    raw = parse_json(text, origin, "fix the file")
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict):
        raise LinqEvalError(f'{origin}: expected an object with a "tasks" mapping of task name -> instruction')
    if not isinstance(raw.get("task_types", {}), dict):
        raise LinqEvalError(f'{origin}: "task_types" must be a mapping of task type -> instruction')
    try:
        table = InstructionTable(tasks=raw["tasks"], task_types=raw.get("task_types", {}),
                                 template=raw.get("template", TEMPLATE), source=str(raw.get("source", origin)))
    except LinqEvalError as exc:
        raise LinqEvalError(f"{origin}: {exc}") from None
    return table


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes().count(b"\n", 0, exc.start) + 1
        raise LinqEvalError(f"{path}:{line}: not UTF-8: save the instruction file as UTF-8") from None


def load_instructions(path: str | Path | None = None) -> InstructionTable:
    """Load the built-in table, or a user's JSON file of the same shape.

    A user file's ``tasks`` override the built-in entries; its ``task_types`` and ``template`` too.
    """
    builtin = _read_table(
        resources.files("linq_eval").joinpath("data/instructions.json").read_text(encoding="utf-8"), "built-in"
    )
    if path is None:
        return builtin
    path = check_file(path, "instruction file", "a JSON file with a 'tasks' mapping")
    user = _read_table(_read_text(path), str(path))
    return InstructionTable(
        tasks={**builtin.tasks, **user.tasks},
        task_types={**builtin.task_types, **user.task_types},
        template=user.template,
        source=f"{builtin.source} + {path}",
    )


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["SciFact=Given a claim, ..."]`` -> ``{"SciFact": "Given a claim, ..."}`` (CLI ``--instruction``)."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise LinqEvalError(f"--instruction {item!r}: write it as TASK=INSTRUCTION")
        out[name.strip()] = text.strip()
    return out
