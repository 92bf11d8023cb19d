"""What happens at every checkpoint: a provenance record, the streamlined validation and, optionally, the gate.

A checkpoint is the trainer's ``checkpoint-N`` folder: a peft adapter (``adapter_config.json``,
``adapter_model.safetensors``) with the sentence-transformers files and the trainer's resume state beside it.
``linq-eval run -m BASE --adapter checkpoint-N`` and ``build_model(BASE, adapter=checkpoint-N)`` load it as it is.
Validation evaluates that folder from disk through ``linq_eval.evaluation.runner.run`` (mteb's evaluator, result cache and
per-query scores), so what is scored is what was saved, not the in-memory model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from linq_eval.core.files import atomic_write_text
from linq_train.fit.config import FitConfig, ValidationSettings

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "training_provenance.json"
VALIDATION_FILE = "validation.json"
Report = Callable[[str], None]


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """The trainer's folder for the checkpoint at ``step``."""
    return Path(output_dir) / f"checkpoint-{step}"


@dataclass
class Validator:
    """Evaluate a saved adapter on the validation tasks; returns task -> main score (nDCG@10 for retrieval)."""

    base_model: str
    settings: ValidationSettings
    max_length: int | None
    instructions: str | None
    cache_folder: Path

    def __call__(self, adapter: Path) -> dict[str, float]:
        from linq_eval.evaluation.runner import RunSpec, run

        spec = RunSpec(model=self.base_model, adapter=str(adapter), bits=self.settings.bits,
                       max_length=self.settings.max_length or self.max_length, instructions=self.instructions,
                       dtype=self.settings.dtype)
        # overwrite: a checkpoint folder rewritten (a retrained or forced stage) must not get its old scores back
        result = run(spec, list(self.settings.tasks), self.cache_folder, batch_size=self.settings.batch_size,
                     overwrite=True)
        return {r.task_name: float(r.get_score()) for r in result.task_results}

    def gate(self, adapter: Path) -> dict[str, Any] | None:
        """The gate against ``settings.gate_baseline`` (None when not configured)."""
        if not self.settings.gate_baseline:
            return None
        # the gate hook: linq_eval's gate, imported only when a baseline is configured
        from linq_eval.gate.driver import gate_checkpoint

        report = gate_checkpoint(str(adapter), self.settings.gate_baseline, delta=self.settings.gate_delta,
                                 alpha=self.settings.gate_alpha)
        record = report.to_dict()  # strict JSON (NaN as null)
        return {k: record[k] for k in ("verdict", "exit_code", "macro", "reasons")}


def read_validation(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / VALIDATION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


@contextmanager
def _rng_untouched() -> Iterator[None]:
    """Run validation without moving any random state training uses (dropout masks, shuffles).

    So a validated run trains exactly like an unvalidated one, and a run resumed from a checkpoint (whose RNG
    state was saved before validation) continues exactly like the uninterrupted run.
    """
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


class CheckpointCallback(TrainerCallback):
    """On every save: write the provenance record into the checkpoint, then validate (and gate) it.

    Scores go to the trainer's log history (``validation/<task>`` at the checkpoint's step, so they are in
    ``trainer_state.json`` from the next checkpoint on), to ``<stage>/validation.json`` and to ``report``.
    Only the main process validates; in multi-GPU runs the others wait at the next gradient synchronisation.

    Args:
        provenance: what every checkpoint of this stage records (base model, config and data checksums, ...).
        validator: None when validation is off.
        report: where one line per validation goes (the CLI prints it).
    """

    def __init__(self, provenance: dict[str, Any], validator: Validator | None, report: Report | None = None) -> None:
        self.provenance = provenance
        self.validator = validator
        self.report = report

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: ANN401 -- HF contract
        if not state.is_world_process_zero:
            return
        folder = checkpoint_dir(args.output_dir, state.global_step)
        record = {**self.provenance, "step": state.global_step, "max_steps": state.max_steps}
        atomic_write_text(folder / PROVENANCE_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
        if self.validator is None:
            return
        start = time.perf_counter()
        with _rng_untouched():
            scores = self.validator(folder)
            gate = self.validator.gate(folder)
        entry: dict[str, Any] = {"step": state.global_step, "checkpoint": str(folder), "scores": scores,
                                 "seconds": round(time.perf_counter() - start, 1)}
        if gate is not None:
            entry["gate"] = gate
        stage_dir = Path(args.output_dir)
        history = [e for e in read_validation(stage_dir) if e["step"] != state.global_step] + [entry]
        atomic_write_text(stage_dir / VALIDATION_FILE, json.dumps(history, indent=2) + "\n")
        state.log_history.append({"step": state.global_step, **{f"validation/{t}": s for t, s in scores.items()}})
        line = f"step {state.global_step} validation: " + ", ".join(f"{t} {s:.4f}" for t, s in scores.items())
        if gate is not None:
            line += f"; gate: {gate['verdict']}"
        logger.info(line)
        if self.report is not None:
            self.report(line)


def stage_provenance(cfg: FitConfig, stage_name: str, fingerprint: str, data_sha256: str,
                     init_adapter: Path | None, tasks: dict[str, int]) -> dict[str, Any]:
    """The part of a checkpoint's provenance that is the same at every step of a stage."""
    from linq_train.store import fingerprint as config_hash

    return {"base_model": cfg.base_model, "config_name": cfg.name, "stage": stage_name,
            "stage_fingerprint": fingerprint, "config_sha256": config_hash(cfg.model_dump(mode="json")),
            "data": cfg.data, "data_sha256": data_sha256, "rows_per_task": tasks,
            "init_adapter": str(init_adapter) if init_adapter else None, "lora": cfg.lora.model_dump(mode="json"),
            "loss": cfg.loss.model_dump(mode="json")}
