"""One instruction policy: refine's crafting and teacher, fit and evaluation instruct every task alike.

Every shipped retrieval task of ours (what ``linq_eval.registry.register`` puts into mteb: the local collections,
their union, the light sets, and mteb's tasks we ship a local copy of) is run through the teacher's real
``embed_task`` / ``embed_queries`` with an encoder that records the prefixes it is handed, and compared with
``LinqEncoder.prefix_for`` on the task's mteb metadata: for an instructed decoder (SmolLM2, the ``linq`` entry's
policy) and for all-MiniLM-L6-v2 (no instructions). No model weights are needed: the policy is model-less.
"""

from __future__ import annotations

import mteb
import numpy as np
import pytest
from mteb.get_tasks import _TASKS_REGISTRY
from mteb.types import PromptType

import linq_eval
from linq_eval.core.instructions import load_instructions
from linq_eval.evaluation.runner import RunSpec, instruction_policy
from linq_eval.tasks.ir_collections import ALL_COLLECTION_TASKS, COLLECTIONS
from linq_eval.tasks.light import light_task_classes
from linq_eval.tasks.local_source import LocalSourceMixin
from tests.conftest import DATA

linq_eval.register()  # idempotent; what it registers is what is iterated below

OURS = sorted(name for name, cls in _TASKS_REGISTRY.items() if cls.__module__.startswith("linq_eval."))
SHIPPED_COPIES = sorted(name for name, cls in _TASKS_REGISTRY.items()
                        if issubclass(cls, LocalSourceMixin) and name not in OURS and (DATA / name).is_dir())
RETRIEVAL = sorted(name for name in OURS + SHIPPED_COPIES if _TASKS_REGISTRY[name].metadata.type == "Retrieval")
MODELS = ["pypi:SmolLM2-135M", "pypi:all-MiniLM-L6-v2"]
TABLE = load_instructions()


def test_the_iteration_covers_every_shipped_retrieval_task() -> None:
    expected = {c.metadata.name for c in ALL_COLLECTION_TASKS} | {c.metadata.name for c in light_task_classes()}
    assert {c.task for c in COLLECTIONS} | {"CollectionsUnionRetrieval"} <= expected
    assert expected | {"LegalBenchCorporateLobbying"} <= set(RETRIEVAL)
    assert len(RETRIEVAL) >= 18


class _Recorder:
    """Wraps a model-less policy: ``encode_texts`` records each prefix instead of running a model."""

    def __init__(self, model: str) -> None:
        self.policy = instruction_policy(RunSpec(model=model))
        self.seen: dict[str, str] = {}
        self.policy.encode_texts = self._encode  # the teacher calls this with the prefix it chose

    def _encode(self, texts: list[str], *, prefix: str = "", label: str = "", **_: object) -> np.ndarray:
        self.seen[label] = prefix
        return np.ones((len(texts), 2), dtype=np.float32)


def _teacher_prefixes(model: str, task: str, instruction: str, task_type: str = "Retrieval") -> dict[str, str]:
    """The prefixes refine's teacher hands the encoder for the pool, the queries and synthetic queries."""
    from linq_train.refine.craft import TaskData
    from linq_train.refine.teacher import embed_queries, embed_task
    from linq_train.schema import Example

    recorder = _Recorder(model)
    data = TaskData(task, task_type, instruction, {"d1": "a document"})
    example = Example(task=task, task_type=task_type, instruction=instruction, query="a query", positive="a document",
                      source="t", positive_id="d1")
    emb = embed_task(recorder.policy, data, [example])
    embed_queries(recorder.policy, data, ["another query"], emb)
    return {label.removeprefix(f"{task} "): prefix for label, prefix in recorder.seen.items()}


@pytest.mark.parametrize("model", MODELS)
def test_teacher_prefixes_are_evaluations_for_every_shipped_retrieval_task(model: str) -> None:
    from linq_train.refine.policy import task_instruction

    policy = instruction_policy(RunSpec(model=model))
    for name in RETRIEVAL:
        metadata = mteb.get_task(name).metadata
        query = policy.prefix_for(metadata, PromptType.query)
        document = policy.prefix_for(metadata, PromptType.document)
        recorded = task_instruction(TABLE, name, "Retrieval")  # what crafting records on the task's examples
        seen = _teacher_prefixes(model, name, recorded)
        assert seen == {"pool": document, "queries": query, "new queries": query}, name
        if policy.use_instructions:
            assert query == TABLE.format_query(recorded, "") and document == "", name
        else:
            assert query == document == "", name
    assert instruction_policy(RunSpec(model=MODELS[0])).use_instructions
    assert not instruction_policy(RunSpec(model=MODELS[1])).use_instructions


def test_our_collections_get_their_own_instruction_not_the_generic_one() -> None:
    from linq_train.refine.policy import task_instruction

    generic = TABLE.task_types["Retrieval"]
    policy = instruction_policy(RunSpec(model=MODELS[0]))
    for name in (c.task for c in COLLECTIONS):
        recorded = task_instruction(TABLE, name, "Retrieval")
        assert recorded != generic and recorded == mteb.get_task(name).metadata.prompt["query"], name
        assert _teacher_prefixes(MODELS[0], name, generic)["queries"] == policy.prefix_for(
            mteb.get_task(name).metadata, PromptType.query) != TABLE.format_query(generic, ""), name
    # a light set is instructed as its parent
    assert task_instruction(TABLE, "CACMRetrieval-light", "Retrieval") == task_instruction(TABLE, "CACMRetrieval",
                                                                                           "Retrieval")


def test_crafting_records_the_evaluation_instruction() -> None:
    from linq_train.refine.config import BeirSource
    from linq_train.refine.craft import craft_beir

    task = craft_beir(BeirSource(folder="cacm", task="CACMRetrieval", split="test", max_queries=2, max_corpus=5),
                      DATA, TABLE)
    expected = mteb.get_task("CACMRetrieval").metadata.prompt["query"]
    assert task.instruction == expected != TABLE.task_types["Retrieval"]
    assert task.examples and {e.instruction for e in task.examples} == {expected}


def test_a_task_mteb_does_not_know_uses_its_recorded_instruction() -> None:
    from linq_train.refine.policy import prefixes_for, task_instruction

    mine = "Given the title of a scientific article, retrieve the article"
    assert task_instruction(TABLE, "CISITitles", "Retrieval", fallback=mine) == mine
    assert task_instruction(TABLE, "CISITitles", "Retrieval") == TABLE.task_types["Retrieval"]  # no fallback given
    assert _teacher_prefixes(MODELS[0], "CISITitles", mine) == {
        "pool": "", "queries": f"Instruct: {mine}\nQuery: ", "new queries": f"Instruct: {mine}\nQuery: "}
    assert _teacher_prefixes(MODELS[1], "CISITitles", mine) == {"pool": "", "queries": "", "new queries": ""}
    symmetric = prefixes_for(instruction_policy(RunSpec(model=MODELS[0])), "MyLabels", "Classification", "Sort")
    assert symmetric == ("Instruct: Sort\nQuery: ", "Instruct: Sort\nQuery: ")  # both sides, as evaluation does


def test_training_imports_the_same_function() -> None:
    import linq_train.fit.data as fit_data
    import linq_train.refine.policy as policy

    assert fit_data.prefixes_for is policy.prefixes_for
