"""Every environment variable linq-eval reads, and every default folder: the one place that knows them.

Read at call time (never cached at import), so a command or a test that sets a variable sees it at once.

========================  ==========================================================================
``LINQ_DATA_DIR``         local task data (``<dir>/<TaskName>/``); default ``../shared/data`` beside the
                          working directory or beside this checkout
``LINQ_LIGHT_DIR``        light-set manifests; default the manifests in the wheel, else ``tasks_light/``
``LINQ_BASELINE_DIR``     gate baselines; default ``results/baselines``
``LINQ_CACHE``            linq-eval's cache (converted offline models, merged adapters, refine output); default
                          ``~/.cache/linq-eval``
``LINQ_EMBEDDING_CACHE``  dense pooling systems' embeddings; default ``$LINQ_CACHE/light-embeddings``
``LINQ_MODEL``            the weights behind the ``linq`` entries; default Linq-Embed-Mistral
``LINQ_EVAL_NO_HOOK``     disables the start-up hook (read by ``_linq_eval_hook``, which must not import
                          this package)
``HF_HUB_OFFLINE``        huggingface_hub's offline switch, read as huggingface_hub reads it
========================  ==========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BASELINE_DIR_ENV", "CACHE_ENV", "DATA_ENV", "DEFAULT_MODEL", "EMBEDDING_CACHE_ENV", "LIGHT_DIR_ENV",
           "MODEL_ENV", "NO_HOOK_ENV", "baseline_dir", "cache_dir", "data_dir", "default_model",
           "embedding_cache_dir", "hub_offline", "light_dir", "model_override"]

DATA_ENV = "LINQ_DATA_DIR"
LIGHT_DIR_ENV = "LINQ_LIGHT_DIR"
BASELINE_DIR_ENV = "LINQ_BASELINE_DIR"
CACHE_ENV = "LINQ_CACHE"
EMBEDDING_CACHE_ENV = "LINQ_EMBEDDING_CACHE"
MODEL_ENV = "LINQ_MODEL"
NO_HOOK_ENV = "LINQ_EVAL_NO_HOOK"

DEFAULT_MODEL = "Linq-AI-Research/Linq-Embed-Mistral"
DEFAULT_BASELINE_DIR = "results/baselines"
_PACKAGE = Path(__file__).resolve().parents[1]  # linq_eval/


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """``$LINQ_DATA_DIR``, else ``../shared/data`` beside the working directory or beside this checkout."""
    env = _env_path(DATA_ENV)
    if env:
        return env
    for base in (Path.cwd(), _PACKAGE.parent):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def light_dir() -> Path:
    """``$LINQ_LIGHT_DIR``, else the manifests shipped in the wheel, else ``tasks_light/`` of this checkout."""
    env = _env_path(LIGHT_DIR_ENV)
    if env:
        return env
    shipped = _PACKAGE / "tasks_light"
    return shipped if shipped.is_dir() else _PACKAGE.parent / "tasks_light"


def baseline_dir() -> Path:
    return Path(os.environ.get(BASELINE_DIR_ENV) or DEFAULT_BASELINE_DIR)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "linq-eval").expanduser()


def embedding_cache_dir() -> Path:
    """Where dense systems' embeddings are kept (``$LINQ_EMBEDDING_CACHE``, else under linq-eval's cache)."""
    return Path(os.environ.get(EMBEDDING_CACHE_ENV) or cache_dir() / "light-embeddings")


def model_override() -> str | None:
    """``$LINQ_MODEL``: other weights behind the ``linq`` entries (a stand-in model), or None."""
    return os.environ.get(MODEL_ENV) or None


def default_model() -> str:
    """``$LINQ_MODEL`` if set, else the official hub id."""
    return model_override() or DEFAULT_MODEL


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set to a true value (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
