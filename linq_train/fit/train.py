"""``fit(config)``: LoRA contrastive training in stages, on sentence-transformers' trainer.

Each stage reads the refined data, builds training rows with evaluation's prefixes (:mod:`linq_train.fit.data`),
loads the model through linq_eval's loader with a LoRA adapter (:mod:`linq_train.fit.model`) and trains it with
``SentenceTransformerTrainer``: one loss per task (cached InfoNCE, or :class:`~linq_train.fit.losses.OwnNegativesLoss`
for tasks without in-batch negatives), task-homogeneous batches in the configured schedule
(:mod:`linq_train.fit.sampler`) or a mixed stage over a weighted mixture of tasks, started from the previous stage's
adapter. Every checkpoint is a peft adapter that linq-eval loads directly; each is validated as it is written
(:mod:`linq_train.fit.callbacks`).

Resumable: a stage whose ``stage.json`` records the same fingerprint (its config, the base model, the LoRA and
loss settings, the exact training texts and its starting adapter) is skipped; an unfinished one continues from
its last checkpoint (model, optimizer, scheduler, RNG and data position: the trainer's
``resume_from_checkpoint``). ``accelerate launch`` runs the same code on several GPUs.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import atomic_write_text
from linq_train.fit.callbacks import CheckpointCallback, Report, Validator, read_validation, stage_provenance
from linq_train.fit.collapse import CollapseWatch
from linq_train.fit.config import FitConfig, HomogeneousStage, MixedStage, check_inputs, load_fit_config
from linq_train.store import fingerprint

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from linq_eval.models.encoder import LinqEncoder

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
FINAL = "final"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class StageResult:
    """One stage's outcome (also ``<output_dir>/<stage>/stage.json`` once it finished)."""

    name: str
    adapter: str | None  # the final adapter folder; None while unfinished
    finished: bool
    skipped: bool  # finished earlier with the same fingerprint: not retrained
    resumed_from: str | None
    global_step: int
    max_steps: int
    fingerprint: str
    data_sha256: str
    rows: dict[str, int]
    left_out: dict[str, int]
    losses: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss"} as logged
    validation: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class FitResult:
    output_dir: Path
    stages: list[StageResult]

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.stages)


def last_checkpoint(stage_dir: Path) -> Path | None:
    """The checkpoint with the highest step in a stage folder (None if there is none)."""
    found = [(int(m.group(1)), p) for p in stage_dir.glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name))
             and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def _fit_trainer_class() -> type:
    from sentence_transformers import SentenceTransformerTrainer

    class FitTrainer(SentenceTransformerTrainer):
        """sentence-transformers' trainer, resuming a peft adapter's weights from a checkpoint.

        Its own ``_load_from_checkpoint`` rebuilds a whole SentenceTransformer from the folder, which for an
        adapter checkpoint means re-resolving the base model by the adapter's recorded path and loading a
        differently wrapped state dict; here only the adapter weights are loaded into the model being trained.
        """

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:  # noqa: ANN401
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            peft_model = self.model[0].auto_model
            weights = load_file(str(Path(resume_from_checkpoint) / "adapter_model.safetensors"))
            result = set_peft_model_state_dict(peft_model, weights)
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise LinqEvalError(f"{resume_from_checkpoint}: adapter weights do not fit the model "
                                    f"({unexpected[0]} ...): resume with the config that wrote them, or use --force")

    return FitTrainer


def _save_at_end() -> TrainerCallback:
    """A checkpoint (hence a validation) at the last step too, whatever ``save_steps`` is."""
    from transformers import TrainerCallback

    class SaveAtEnd(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            if state.global_step >= state.max_steps:
                control.should_save = True
            return control

    return SaveAtEnd()


def check_validation_tasks(names: Sequence[str]) -> None:
    """Every validation task is a retrieval task mteb knows (after linq_eval's registration)."""
    import mteb

    for name in names:
        try:
            task = mteb.get_task(name)
        except KeyError:
            raise LinqEvalError(f"validation task {name!r} is unknown: see `linq-eval light list` for light sets") \
                from None
        if task.metadata.type != "Retrieval":
            raise LinqEvalError(f"validation task {name} is {task.metadata.type}: validation takes retrieval tasks")


def build_trainer(cfg: FitConfig, stage: HomogeneousStage | MixedStage, stage_dir: Path, dataset: Any,  # noqa: ANN401
                  in_batch: dict[str, bool], model: Any, callbacks: Sequence[TrainerCallback] = (), *,  # noqa: ANN401
                  progress: bool = True) -> Any:  # noqa: ANN401 -- a SentenceTransformerTrainer
    """The trainer of one stage: a loss per dataset, the stage's batch schedule, the config's training settings.

    Args:
        dataset: a ``DatasetDict``: one split per task (homogeneous), or the single split ``mixed``.
        in_batch: task -> whether its loss uses in-batch negatives.
        model: from :func:`linq_train.fit.model.training_model`.
    """
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    from linq_train.fit.losses import contrastive_loss
    from linq_train.fit.model import resolve_bf16
    from linq_train.fit.sampler import SCHEDULES

    losses = {name: contrastive_loss(model, in_batch_negatives=all(in_batch.values()) if name == "mixed"
                                     else in_batch[name], scale=cfg.loss.scale, mini_batch_size=cfg.loss.mini_batch_size,
                                     gather_across_devices=cfg.loss.gather_across_devices)
              for name in dataset}
    # a mixed stage is one dataset: the multi-dataset schedule has nothing to order
    schedule = SCHEDULES[stage.schedule] if isinstance(stage, HomogeneousStage) else SCHEDULES["proportional"]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(stage_dir), per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation_steps, learning_rate=stage.learning_rate,
        warmup_steps=stage.warmup_steps, lr_scheduler_type="linear", max_steps=stage.max_steps or -1,
        num_train_epochs=stage.epochs, save_strategy="steps", save_steps=stage.save_steps,
        logging_steps=stage.logging_steps, seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        bf16=resolve_bf16(cfg.bf16, str(model.device)), **_checkpointing(cfg.gradient_checkpointing),
        # no two rows of a batch share a text: a query with several positives never meets itself as a negative
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=schedule, dataloader_drop_last=True, disable_tqdm=not progress,
        use_cpu=model.device.type == "cpu")
    return _fit_trainer_class()(model=model, args=args, train_dataset=dataset, loss=losses,
                                callbacks=[_save_at_end(), *callbacks])


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Activation checkpointing under the name this transformers knows: 5.2x renamed ``gradient_checkpointing`` to
    ``activation_checkpointing`` and warns (a FutureWarning on every stage) when the old name is used."""
    import dataclasses

    from sentence_transformers import SentenceTransformerTrainingArguments

    names = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: enabled, f"{key}_kwargs": {"use_reentrant": False}}


class _Fit:
    """One ``fit`` run: its config, the instruction policy and the refined data, loaded once."""

    def __init__(self, cfg: FitConfig, force: bool, report: Report | None, callbacks: Sequence[TrainerCallback],
                 progress: bool) -> None:
        from linq_eval.evaluation.runner import RunSpec, instruction_policy
        from linq_eval.registry import register
        from linq_train.fit.data import load_refined

        register()  # our local collections and light sets as mteb tasks (idempotent)
        if cfg.validation.enabled:
            check_validation_tasks(cfg.validation.tasks)
        self.cfg, self.force, self.report, self.callbacks, self.progress = cfg, force, report, callbacks, progress
        self.out = Path(cfg.output_dir).expanduser()
        self.policy: LinqEncoder = instruction_policy(RunSpec(model=cfg.base_model, instructions=cfg.instructions))
        self.refined = load_refined(cfg.data)

    def _say(self, line: str) -> None:
        logger.info(line)
        if self.report is not None:
            self.report(line)

    def rows(self, stage: HomogeneousStage | MixedStage) -> tuple[Any, dict[str, bool], dict[str, int], dict[str, int]]:
        """(train dataset, task -> in-batch negatives, rows per task, left-out examples per task)."""
        from datasets import DatasetDict

        from linq_train.fit.data import mixture_rows, task_rows

        parts = {t: task_rows(self.refined[t], t, self.policy, stage.hard_negatives, stage.max_examples_per_task,
                                 self.cfg.seed)
                 for t in self.cfg.stage_tasks(stage)}
        in_batch = {t: p.in_batch_negatives for t, p in parts.items()}
        left_out = {t: p.left_out for t, p in parts.items()}
        if isinstance(stage, HomogeneousStage):
            return DatasetDict({t: p.rows for t, p in parts.items()}), in_batch, \
                {t: len(p.rows) for t, p in parts.items()}, left_out
        without = [t for t, flag in in_batch.items() if not flag]
        if without:
            raise LinqEvalError(f"stage '{stage.name}': {without[0]} trains without in-batch negatives, so it cannot "
                                "be mixed with other tasks: train it in a homogeneous stage")
        weights = stage.mixture if isinstance(stage.mixture, dict) else None  # a list: tasks in proportion to rows
        mixed = mixture_rows(parts, weights, stage.examples, self.cfg.seed)
        return DatasetDict({"mixed": mixed}), in_batch, {t: len(p.rows) for t, p in parts.items()}, left_out

    def stage_fingerprint(self, stage: HomogeneousStage | MixedStage, data_sha: str, init: Path | None,
                          upstream: str | None) -> str:
        from linq_eval.evaluation.checkpoint import content_sha256

        cfg = self.cfg
        start = upstream if stage.init == "previous" else (content_sha256(init) if init else None)
        # only what is set, not defaults: a new optional setting does not invalidate finished stages
        return fingerprint("fit-stage", stage.model_dump(mode="json", exclude_defaults=True), cfg.base_model,
                           cfg.max_length, cfg.dtype, cfg.bf16, cfg.gradient_checkpointing, cfg.seed, cfg.instructions,
                           cfg.lora.model_dump(mode="json", exclude_defaults=True) if init is None else None,
                           cfg.loss.model_dump(mode="json", exclude_defaults=True), data_sha, start)

    def run_stage(self, stage: HomogeneousStage | MixedStage, previous: StageResult | None) -> StageResult:
        from linq_train.fit.data import rows_sha256

        stage_dir = self.out / stage.name
        init = None if stage.init == "fresh" else (Path(previous.adapter) if stage.init == "previous"
                                                    else Path(stage.init).expanduser())
        dataset, in_batch, rows, left_out = self.rows(stage)
        data_sha = rows_sha256(dict(dataset))
        stamp = self.stage_fingerprint(stage, data_sha, init, previous.fingerprint if previous else None)
        record_path = stage_dir / STAGE_FILE
        if self.force:
            shutil.rmtree(stage_dir, ignore_errors=True)
        elif record_path.is_file():
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("fingerprint") == stamp:
                self._say(f"stage {stage.name}: finished earlier (step {record['global_step']}), skipped")
                return StageResult(**{**record, "skipped": True})
            raise LinqEvalError(f"{stage_dir} holds a finished stage trained with another config or data: use "
                                "--force to retrain it, or another output_dir")
        resume = last_checkpoint(stage_dir) if stage_dir.is_dir() else None
        if resume is not None:
            written = json.loads((resume / "training_provenance.json").read_text(encoding="utf-8")) \
                if (resume / "training_provenance.json").is_file() else {}
            if written.get("stage_fingerprint") != stamp:
                raise LinqEvalError(f"{resume} was written with another config or data: use --force to start the "
                                    "stage afresh, or another output_dir")
            self._say(f"stage {stage.name}: resuming from {resume.name}")
        return self._train(stage, stage_dir, dataset, in_batch, init, stamp, data_sha, rows, left_out, resume)

    def _train(self, stage: HomogeneousStage | MixedStage, stage_dir: Path, dataset: Any, in_batch: dict[str, bool],  # noqa: ANN401
               init: Path | None, stamp: str, data_sha: str, rows: dict[str, int], left_out: dict[str, int],
               resume: Path | None) -> StageResult:
        from linq_train.fit.model import training_model

        cfg = self.cfg
        start = time.perf_counter()
        model = training_model(cfg, init)
        validator = None
        if cfg.validation.enabled:
            validator = Validator(cfg.base_model, cfg.validation, cfg.max_length, cfg.instructions,
                                  self.out / "validation-cache")
        provenance = stage_provenance(cfg, stage.name, stamp, data_sha, init, rows)
        callbacks = [CheckpointCallback(provenance, validator, self.report), *self.callbacks]
        if len(set(in_batch.values())) == 1:  # one chance level for every batch of the stage
            callbacks.append(CollapseWatch(stage.name, stage.batch_size, stage.hard_negatives,
                                           in_batch_negatives=next(iter(in_batch.values())),
                                           gathered=cfg.loss.gather_across_devices, report=self.report))
        trainer = build_trainer(cfg, stage, stage_dir, dataset, in_batch, model, callbacks, progress=self.progress)
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        state = trainer.state
        losses = [{"step": e["step"], "loss": e["loss"]} for e in state.log_history if "loss" in e]
        result = StageResult(name=stage.name, adapter=None, finished=state.global_step >= state.max_steps,
                             skipped=False, resumed_from=str(resume) if resume else None,
                             global_step=state.global_step, max_steps=state.max_steps, fingerprint=stamp,
                             data_sha256=data_sha, rows=rows, left_out=left_out, losses=losses,
                             validation=read_validation(stage_dir), seconds=round(time.perf_counter() - start, 1))
        if not result.finished:
            self._say(f"stage {stage.name}: stopped at step {state.global_step} of {state.max_steps}; rerun to resume")
            return result
        if trainer.is_world_process_zero():
            final = stage_dir / FINAL
            trainer.save_model(str(final))
            atomic_write_text(final / "training_provenance.json", json.dumps(
                {**provenance, "step": state.global_step, "max_steps": state.max_steps,
                 "train_loss": float(output.training_loss)}, indent=2, sort_keys=True) + "\n")
            result.adapter = str(final)
            record = asdict(result)
            record.pop("skipped")
            atomic_write_text(stage_dir / STAGE_FILE, json.dumps(record, indent=2) + "\n")  # last
        else:
            result.adapter = str(stage_dir / FINAL)
        return result


def fit(config: FitConfig | str | Path, *, force: bool = False, report: Report | None = None,
        callbacks: Sequence[TrainerCallback] = (), progress: bool = True) -> FitResult:
    """Train (or resume) every stage a config describes; see the module docstring.

    Args:
        config: a :class:`~linq_train.fit.config.FitConfig`, or the path of a YAML/TOML file.
        force: retrain every stage from scratch, deleting its checkpoints.
        report: called with one line per stage event and validation (the CLI prints them).
        callbacks: extra ``transformers.TrainerCallback`` s for every stage.
        progress: show the trainer's progress bar and loss logs.

    Returns:
        Each stage's result; a stage stopped early (by a callback) ends the run, unfinished and resumable.

    Raises:
        LinqEvalError: bad config, data or validation set (one line), before any model loads.
    """
    cfg = load_fit_config(config) if not isinstance(config, FitConfig) else config
    if isinstance(config, FitConfig):
        check_inputs(cfg)
    run = _Fit(cfg, force, report, callbacks, progress)
    results: list[StageResult] = []
    previous: StageResult | None = None
    for stage in cfg.stages:
        result = run.run_stage(stage, previous)
        results.append(result)
        if not result.finished:
            break
        previous = result
    return FitResult(run.out, results)
