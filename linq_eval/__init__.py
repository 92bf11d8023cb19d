"""linq-eval: Linq-Embed-Mistral as an mteb model, with correct last-token pooling and 4/8/16-bit loading.

Importing this package is cheap (no torch, transformers or mteb): public names load on first use. It installs
nothing (no import finder, no ``sys.excepthook``): where mteb is already imported it registers our models and
tasks in mteb at once; otherwise the start-up hook (the ``.pth`` file) registers them when mteb is imported, or,
with ``LINQ_EVAL_NO_HOOK=1``, call :func:`register` yourself.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "linq_eval.models.build",
    "LinqEncoder": "linq_eval.models.encoder",
    "load_linq_encoder": "linq_eval.models.mteb_loader",
    "register": "linq_eval.registry",
    "InstructionTable": "linq_eval.core.instructions",
    "load_instructions": "linq_eval.core.instructions",
    "PRECISIONS": "linq_eval.core.precision",
    "LinqEvalError": "linq_eval.core.errors",
}

__all__ = [  # noqa: RUF022 -- grouped as in _LAZY
    "__version__", "build_model", "LinqEncoder", "load_linq_encoder", "register", "InstructionTable",
    "load_instructions", "PRECISIONS", "LinqEvalError",
]

if TYPE_CHECKING:
    from linq_eval.core.errors import LinqEvalError
    from linq_eval.core.instructions import InstructionTable, load_instructions
    from linq_eval.core.precision import PRECISIONS
    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder
    from linq_eval.models.mteb_loader import load_linq_encoder
    from linq_eval.registry import register


def __getattr__(name: str) -> Any:  # noqa: ANN401 -- module-level lazy attribute contract
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'linq_eval' has no attribute {name!r}")


# `import mteb; import linq_eval` is enough for mteb.get_model("linq"), also where the .pth hook is disabled.
if "mteb" in sys.modules:
    from _linq_eval_hook import register_quietly

    register_quietly()
