"""Quiet output: the commands show one rich progress display of ours, and the libraries they drive stay silent.

mteb, datasets, transformers and huggingface_hub each draw tqdm bars and log at INFO; beside our own display
that is a screenful of bars per task. Each library has its own switch, and most are read once, when the library
is imported, so :func:`quiet_libraries` sets them in the environment before any of them loads (the commands
import them lazily). Evaluation children (compare's precisions, the study's cells) inherit the environment and
are quiet too. mteb's own bars are switched per call: :func:`library_bars` says whether to show them.

``-v`` leaves everything as the libraries have it. Free of heavy imports (L0).
"""

from __future__ import annotations

import logging
import os
import sys

# environment switches, read when each library is imported
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub, and transformers' bars (loading weights)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' map and load bars
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",  # any other tqdm bar whose caller leaves `disable` unset
}
QUIET_LOGGERS = ("mteb", "datasets", "transformers", "sentence_transformers", "huggingface_hub", "peft", "accelerate")


def quiet_libraries() -> None:
    """Silence the libraries' progress bars and INFO logs for this process and its children (a variable the
    user set is kept). Libraries already imported (a command called from Python) are switched off directly."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_harmless_warnings()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def quiet_harmless_warnings() -> None:
    """Warnings that say nothing about the run, off even with ``-v`` and in mteb's own CLI (the model loader calls
    this): bitsandbytes warns on every CPU run that its optional ``kernels`` package is missing, and on every int8
    matmul (thousands per evaluation) that it casts fp16 inputs, as LLM.int8 always does. Idempotent."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its modules' loggers set no level of their own


def library_bars() -> bool:
    """Whether mteb should draw its own progress bars: only with ``-v`` (INFO logging), since our encoder shows
    one display of its own."""
    return logging.getLogger("linq_eval").isEnabledFor(logging.INFO)
