"""The one training-example schema every refinement stage reads and writes, and its ``datasets`` form.

An example is (task, instruction, query, positive, hard negatives, source) plus metadata. Stages never
change the schema, only fill fields (teacher score and rank, mined negatives), so any stage's output is a
valid training set and the trainer (issue 7) reads one shape.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

# Task kinds whose positives are "another text of the same label": other same-label texts in a batch are
# positives too, so in-batch negatives must be off for them (docs/training.md, Crafting).
NO_IN_BATCH_NEGATIVES = frozenset({"Classification", "Clustering"})


@dataclass
class Example:
    """One training example.

    Args:
        task: task name (a key of the instruction table, e.g. ``CACMRetrieval``).
        task_type: mteb task type (``Retrieval``, ``STS``, ``Classification``, ``Clustering``...).
        instruction: the instruction evaluation gives the task (``linq_train.refine.policy.task_instruction``).
        query: the raw query text (the instruction is not baked in).
        positive: the positive text.
        negatives: mined hard negatives, hardest first.
        source: where it came from (``beir:cacm/test``, ``pairs:SICK-R``, ``synthetic:retrieval_query``...).
        query_id / positive_id / negative_ids: ids inside the task's corpus (for reports and leakage audits).
        known_positive_ids: every id that is a positive for this query (never mined as a negative).
        answers: known answer strings (QA data); the answer-containment filter reads them.
        in_batch_negatives: False for classification and clustering.
        teacher_score / teacher_rank: the teacher's cosine for (query, positive) and the positive's rank
            among the non-positive documents (1 = best); NaN / -1 until the teacher stage.
        negative_scores: the teacher's scores of ``negatives``.
        meta: anything else, as a JSON string (grade, pair score, label, generator prompt...).
    """

    task: str
    task_type: str
    instruction: str
    query: str
    positive: str
    source: str
    query_id: str = ""
    positive_id: str = ""
    known_positive_ids: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    negative_ids: list[str] = field(default_factory=list)
    negative_scores: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    in_batch_negatives: bool = True
    teacher_score: float = float("nan")
    teacher_rank: int = -1
    meta: str = "{}"


COLUMNS = tuple(f.name for f in fields(Example))


def features() -> Any:  # noqa: ANN401 -- datasets.Features, imported lazily
    """Explicit column types, so an empty task or an all-empty list column still saves and loads."""
    from datasets import Features, Sequence, Value

    string_list = Sequence(Value("string"))
    return Features({
        "task": Value("string"), "task_type": Value("string"), "instruction": Value("string"),
        "query": Value("string"), "positive": Value("string"), "source": Value("string"),
        "query_id": Value("string"), "positive_id": Value("string"), "known_positive_ids": string_list,
        "negatives": string_list, "negative_ids": string_list, "negative_scores": Sequence(Value("float32")),
        "answers": string_list, "in_batch_negatives": Value("bool"), "teacher_score": Value("float32"),
        "teacher_rank": Value("int32"), "meta": Value("string"),
    })


def to_dataset(examples: list[Example]) -> Dataset:
    from datasets import Dataset

    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for example in examples:
        for name, value in asdict(example).items():
            columns[name].append(value)
    return Dataset.from_dict(columns, features=features())
