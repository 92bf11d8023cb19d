"""The model a stage trains: linq_eval's loader (``build_model(..., for_training=True)``) plus a LoRA adapter.

The base model comes through :func:`linq_eval.models.build.build_model`, so training sees the pooling, EOS handling,
padding and max length of evaluation. A stage that continues an adapter (``init: previous`` or a folder) gets
it from the same loader, trainable and unmerged; a fresh stage adds a new peft LoRA to the loaded transformer,
the same way the loader applies a saved one (``Transformer.model`` becomes the ``PeftModel``), so what the
trainer saves is a peft adapter directory that ``build_model(base, adapter=DIR)`` loads back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from linq_train.fit.config import FitConfig, LoraSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


def add_lora(model: SentenceTransformer, settings: LoraSettings) -> None:
    """Wrap the model's transformer in a fresh, trainable peft LoRA (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    from linq_eval.models.build import peft_quietly

    transformer = model[0]
    names = [name for name, _ in transformer.auto_model.named_modules()]
    # the default exclusion names BERT's pooler: only pass what this architecture has (peft warns otherwise)
    exclude = [m for m in settings.exclude_modules if any(n == m or n.endswith("." + m) for n in names)]
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, exclude_modules=exclude or None, bias="none")
    with peft_quietly():
        transformer.model = get_peft_model(transformer.auto_model, config)


def trainable_parameters(model: SentenceTransformer) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def training_model(cfg: FitConfig, init_adapter: Path | None) -> SentenceTransformer:
    """The model for a stage: the base through linq_eval's loader, with ``init_adapter`` or a fresh LoRA."""
    from linq_eval.models.build import build_model

    model = build_model(cfg.base_model, adapter=init_adapter, max_length=cfg.max_length, device=cfg.device,
                        dtype=cfg.dtype, for_training=True)
    if init_adapter is None:
        add_lora(model, cfg.lora)
    trainable, total = trainable_parameters(model)
    if not trainable:
        from linq_eval.core.errors import LinqEvalError

        raise LinqEvalError(f"{cfg.base_model}: no trainable parameters after adding LoRA: check lora.target_modules")
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)
    return model


def resolve_bf16(setting: bool | str, device: str) -> bool:
    """``auto``: bf16 autocast where the device runs bf16 natively (CUDA with bf16, CPUs with AMX/AVX512-BF16)."""
    if setting != "auto":
        return bool(setting)
    from linq_eval.models.build import sixteen_bit_dtype

    return sixteen_bit_dtype(device) == "bfloat16"
