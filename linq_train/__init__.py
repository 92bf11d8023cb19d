"""linq-train: data refinement (``linq-train refine``) and, later, LoRA contrastive fine-tuning (issue 7).

Every model loads through linq_eval (``runner.load_encoder`` / ``model.build_model``), so pooling, EOS,
padding and instructions live in one place. Public names load lazily: importing this package imports no
torch, datasets or mteb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from linq_train.config import RefineConfig, load_config
    from linq_train.refine import RefineResult, refine

__all__ = ["RefineConfig", "RefineResult", "load_config", "refine"]

_WHERE = {"RefineConfig": "config", "load_config": "config", "RefineResult": "refine", "refine": "refine"}


def __getattr__(name: str) -> Any:  # noqa: ANN401 -- module __getattr__ contract
    if name not in _WHERE:
        raise AttributeError(f"module 'linq_train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"linq_train.{_WHERE[name]}"), name)
