"""Precisions as JSON-safe data; ``model.py`` turns them into torch dtypes and a ``BitsAndBytesConfig``.

Kept free of torch at import so metadata, results and the CLI can name precisions without loading it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from linq_eval.errors import LinqEvalError

logger = logging.getLogger(__name__)

# bits -> keyword arguments of transformers' BitsAndBytesConfig (None: not quantised).
# Dtype names are strings so that the dicts survive copy.deepcopy and JSON (mteb saves loader kwargs).
PRECISIONS: dict[int, dict[str, Any] | None] = {
    16: None,
    8: {"load_in_8bit": True},
    4: {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
    },
}


def check_bits(bits: int | str) -> int:
    """Validate ``bits`` (4, 8 or 16) before anything heavy is loaded."""
    try:
        value = int(bits)
    except (TypeError, ValueError):
        value = None
    if value not in PRECISIONS:
        raise LinqEvalError(f"bits={bits!r} is not supported: use one of {sorted(PRECISIONS)}")
    return value


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 beats fp32."""
    cpuinfo = Path("/proc/cpuinfo")
    if sys.platform.startswith("linux") and cpuinfo.is_file():
        flags = cpuinfo.read_text(errors="ignore")
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return sys.platform == "darwin"  # Apple silicon runs bf16 natively


def sixteen_bit_dtype(device: str) -> str:
    """The 16-bit dtype name for a device: bf16 on GPUs and CPUs that support it, else fp32 on CPU."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.startswith("mps"):
        return "float16"
    return "bfloat16" if cpu_supports_bf16() else "float32"
