"""linq-train: data refinement (``linq-train refine``) and LoRA contrastive fine-tuning (``linq-train fit``).

Every model loads through linq_eval (``runner.load_encoder`` / ``model.build_model``), so pooling, EOS,
padding and instructions live in one place. Public names load lazily: importing this package imports no
torch, datasets or mteb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from linq_train.fit.config import FitConfig, load_fit_config
    from linq_train.fit.train import FitResult, StageResult
    from linq_train.refine.config import RefineConfig, load_config
    from linq_train.refine.pipeline import RefineResult, refine

__all__ = ["FitConfig", "FitResult", "RefineConfig", "RefineResult", "StageResult", "load_config", "load_fit_config",
           "refine"]

# ``fit`` itself is not re-exported: ``linq_train.fit.train`` is its module (``from linq_train.fit.train import fit``)
_WHERE = {"RefineConfig": "linq_train.refine.config", "load_config": "linq_train.refine.config",
          "RefineResult": "linq_train.refine.pipeline", "refine": "linq_train.refine.pipeline",
          "FitConfig": "linq_train.fit.config", "load_fit_config": "linq_train.fit.config",
          "FitResult": "linq_train.fit.train", "StageResult": "linq_train.fit.train"}


def __getattr__(name: str) -> Any:  # noqa: ANN401 -- module __getattr__ contract
    if name not in _WHERE:
        raise AttributeError(f"module 'linq_train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
