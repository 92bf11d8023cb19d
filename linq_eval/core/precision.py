"""Precisions as JSON-safe data; ``models/build.py`` turns them into torch dtypes and a ``BitsAndBytesConfig``.

Free of torch at import (L0), so metadata, results and the CLI can name precisions without loading it. The
other run settings that only fail deep inside a run (a device, a batch size) are checked here too, before any
model loads.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from linq_eval.core.errors import LinqEvalError

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


def merges(bits: int, adapter: object, asked: bool) -> bool:
    """Whether a run merges its adapter into the base before quantising (``--merge-adapter``): only when asked,
    with an adapter, below 16 bits (at 16 bits merged and unmerged are the same model, so a 16-bit run, job or
    baseline never records the setting). Asking without an adapter is an error.
    """
    check_merge(adapter, asked)
    return bool(asked) and bits != 16


def check_merge(adapter: object, asked: bool) -> None:
    """Asking to merge (``--merge-adapter``) without an adapter is an error: one message for every command."""
    if asked and not adapter:
        raise LinqEvalError("--merge-adapter merges an adapter into the base before quantising: give --adapter")


DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:[0-9]{1,3})?")


def check_device(device: str | None, option: str = "--device") -> str | None:
    """A device name torch knows (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu``), else a one-line error.

    Whether such a device is visible here needs torch: ``models.build.check_device_visible`` checks that.
    """
    if device is None:
        return None
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise LinqEvalError(f"{option} {device!r} is not a device: use cpu, cuda, cuda:N or mps")
    return device


def check_batch_size(batch_size: int | None, option: str = "--batch-size") -> int | None:
    """A positive whole batch size (None: the default), else a one-line error."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LinqEvalError(f"{option} {batch_size!r}: give a whole number of inputs per batch, at least 1")
    return batch_size


DTYPES = ("bfloat16", "float16", "float32")  # the floating-point dtypes a model may be loaded in


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 beats fp32."""
    if sys.platform == "darwin":
        return True  # Apple silicon runs bf16 natively
    return cpu_isa() in ("amx_bf16", "avx512_bf16")


# the widest vector instructions first: CPU kernels (bitsandbytes' 4-bit ones among them) choose by these, so
# quantised scores can differ between CPUs that have different ones, even at a pinned dtype
_ISAS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "neon", "asimd")


def cpu_isa() -> str | None:
    """The widest vector instruction set this CPU reports (e.g. ``avx512_bf16``), None where unknown."""
    cpuinfo = Path("/proc/cpuinfo")
    if not (sys.platform.startswith("linux") and cpuinfo.is_file()):
        return None
    flags = set(cpuinfo.read_text(errors="ignore").split())
    return next((isa for isa in _ISAS if isa in flags), None)
