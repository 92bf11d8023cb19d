"""The one instruction policy of refinement (crafting, teacher scoring) and training: evaluation's.

Evaluation instructs a task through ``LinqEncoder.prefix_for`` on the task's mteb metadata (our collections and
light sets are mteb tasks once :func:`linq_eval.registry.register` ran). Crafting records that instruction, the
teacher embeds with those prefixes and ``linq_train.fit`` trains with them, so a model is scored, refined and
trained under the same prefixes. Only a task mteb does not know (a title-to-body set, a custom labelled set)
falls back to the instruction its examples record, written with the same encoder's template and policy.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from linq_eval.core.instructions import ASYMMETRIC_TYPES, InstructionTable

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata

    from linq_eval.models.encoder import LinqEncoder

logger = logging.getLogger(__name__)


def task_metadata(task: str) -> TaskMetadata | None:
    """mteb's metadata of ``task`` with linq-eval's tasks registered, or None when mteb does not know it."""
    import mteb

    from linq_eval.registry import register

    register()  # idempotent and cheap: without it our collections would look unknown
    try:
        return mteb.get_task(task).metadata
    except KeyError:
        return None


def recorded_prefixes(policy: LinqEncoder, instruction: str, task_type: str) -> tuple[str, str]:
    """(query, document) prefixes from an instruction itself: the fallback for tasks mteb does not know.

    The same rule as ``prefix_for``: nothing for a model without instructions, plain documents for asymmetric
    task types, the instruction on both sides of symmetric ones.
    """
    if not policy.use_instructions:
        return "", ""
    query = policy.instructions.format_query(instruction, "")
    return query, "" if task_type in ASYMMETRIC_TYPES else query


def prefixes_for(policy: LinqEncoder, task: str, task_type: str, instruction: str) -> tuple[str, str]:
    """(query prefix, document prefix) as evaluation writes them for ``task``.

    Args:
        policy: a loaded encoder (the teacher) or ``linq_eval.evaluation.runner.instruction_policy``'s model-less
            one: either decides whether the model takes instructions and which table it reads.
        task: the task name; mteb's metadata of it decides when mteb knows it (its own prompt first).
        task_type: used only for a task mteb does not know.
        instruction: the examples' recorded instruction, used only for a task mteb does not know.
    """
    from mteb.types import PromptType

    metadata = task_metadata(task)
    if metadata is None:
        logger.info("%s is not an mteb task: instructing it with its recorded instruction", task)
        return recorded_prefixes(policy, instruction, task_type)
    return policy.prefix_for(metadata, PromptType.query), policy.prefix_for(metadata, PromptType.document)


def task_instruction(table: InstructionTable, task: str, task_type: str, fallback: str | None = None) -> str:
    """The instruction evaluation gives ``task``'s queries (what ``prefix_for`` fills the template with).

    It is recorded on crafted examples whatever the teacher (a model without instructions still records
    it, for the model that trains on them). A task mteb does not know gets ``fallback`` (a source's own
    instruction) or else the table's entry or its task type's generic instruction.
    """
    metadata = task_metadata(task)
    if metadata is None:
        return fallback or table.lookup(task, task_type)
    if fallback:
        logger.warning("%s is an mteb task: its evaluation instruction is used, not the source's", task)
    from mteb.types import PromptType

    from linq_eval.models.encoder import LinqEncoder

    # an instructed encoder whose template is the bare instruction: prefix_for then writes exactly the instruction
    bare = InstructionTable(table.tasks, table.task_types, "{instruction}", table.source, table.overrides)
    return LinqEncoder(None, bare, use_instructions=True).prefix_for(metadata, PromptType.query)
