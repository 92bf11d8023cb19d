"""The one model loader: every encoder in linq-eval and linq-train comes from :func:`build_model`.

It returns a sentence-transformers model with the pooling, EOS handling, padding and precision that
Linq-Embed-Mistral needs, whatever the checkpoint's own tokenizer settings are:

- last-token pooling reads the EOS token, which is appended to *every* input *after* truncation (the
  tokenizer's post-processor does it, so truncation reserves its slot; transformers 5 stopped doing this
  for e5-mistral, which silently broke pooling);
- left and right padding give the same vector (pooling follows the attention mask, not the padding side);
- 16-bit is bf16 where the device supports it, else fp32 on CPU; 8-bit is bitsandbytes int8; 4-bit is NF4
  with double quantisation, computing in bf16 (fp32 on CPUs without bf16 instructions, like 16-bit; in ``dtype`` when one is given);
- a peft LoRA adapter (as linq-train saves it) is applied on top of the base model: merged into it at 16 bits;
  at 4/8 bits kept beside the quantised base, or with ``merge_adapter`` merged first and quantised with it.

Encoders with a sentence-transformers config of their own (e.g. all-MiniLM-L6-v2, mean pooling) load
through the same path unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.precision import DTYPES, PRECISIONS, check_bits, check_device, cpu_supports_bf16, merges
from linq_eval.core.quiet import quiet_harmless_warnings
from linq_eval.core.settings import DEFAULT_MODEL, MODEL_ENV, default_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

PoolingMode = Literal["lasttoken", "mean", "cls"]
DEFAULT_REVISION = "0c1a0b0589177079acc552433cad51d7c9132379"  # mteb's pinned revision
DEFAULT_MAX_LENGTH = 512  # e5-mistral evaluation practice


def check_model_source(name_or_path: str) -> Path | None:
    """Validate a model reference before loading: a local directory, or a hub id ``org/name``.

    Returns the local directory, or None for a hub id.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in ("config.json", "modules.json")):
            raise LinqEvalError(
                f"model directory {path} has no config.json or modules.json: point at a saved "
                "transformers or sentence-transformers model"
            )
        return path
    parts = name_or_path.split("/")
    is_hub_id = len(parts) == 2 and all(parts) and not name_or_path.startswith((".", "~"))
    if path.exists() or not is_hub_id:
        raise LinqEvalError(
            f"model {name_or_path!r} is neither an existing model directory nor a hub id (org/name): "
            f"fix the path, or set {MODEL_ENV} / --model"
        )
    return None


# adapter_config.json fields that peft reads and their JSON types; anything else is left to peft.
_ADAPTER_FIELDS: dict[str, tuple[str, Any]] = {
    "peft_type": ("a string", lambda v: isinstance(v, str) and v != ""),
    "base_model_name_or_path": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "r": ("a whole number >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "lora_alpha": ("a positive number", lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0),
    "lora_dropout": ("a number from 0 to 1", lambda v: isinstance(v, int | float) and not isinstance(v, bool)
                     and 0 <= v < 1),
    "target_modules": ("a string, a list of strings or null",
                       lambda v: v is None or isinstance(v, str) or (isinstance(v, list)
                                                                     and all(isinstance(m, str) for m in v))),
    "modules_to_save": ("a list of strings or null",
                        lambda v: v is None or (isinstance(v, list) and all(isinstance(m, str) for m in v))),
    "task_type": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "inference_mode": ("true or false", lambda v: isinstance(v, bool)),
}


def check_adapter(adapter: str | Path, *, allow_pickle: bool = False) -> Path:
    """Validate a peft adapter directory before loading: its config's types and a safetensors weights file.

    peft raises TypeErrors deep inside for a config with wrong types, and loads ``adapter_model.bin`` (a pickle,
    which can run code) without asking; both are one line here, before any model loads.
    """
    from linq_eval.core.files import read_json_file

    path = Path(adapter).expanduser()
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise LinqEvalError(
            f"adapter {path} is not a peft adapter directory (no adapter_config.json): "
            "give the directory that linq-train or peft's save_pretrained wrote"
        )
    config = read_json_file(config_path)
    if not isinstance(config, dict):
        raise LinqEvalError(f"{config_path}: expected a JSON object (peft's adapter config): save the adapter again "
                            "with peft's save_pretrained")
    if "peft_type" not in config:
        raise LinqEvalError(f"{config_path}: no peft_type: not a peft adapter config")
    for key, (kind, ok) in _ADAPTER_FIELDS.items():
        if key in config and not ok(config[key]):
            raise LinqEvalError(f"{config_path}: {key} must be {kind}, got {json.dumps(config[key])[:60]}: save the "
                                "adapter again with peft's save_pretrained")
    if not (path / "adapter_model.safetensors").is_file():
        if not (path / "adapter_model.bin").is_file():
            raise LinqEvalError(f"adapter {path} has no adapter_model.safetensors: save the adapter again with "
                                "peft's save_pretrained")
        if not allow_pickle:
            raise LinqEvalError(f"adapter {path} has only adapter_model.bin, a pickle (loading one can run code): "
                                "pickles are refused unless allowed (allow_pickle=True); convert it to "
                                "adapter_model.safetensors")
    return path


def _is_encoder_only(config: Any) -> bool:  # noqa: ANN401 -- any transformers config
    """Masked-LM architectures (BERT, RoBERTa, ...) pool by mean; decoders by their last token."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def append_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the tokenizer end every sequence with EOS, keeping any leading special tokens (e.g. BOS).

    Done in the fast tokenizer's post-processor, so truncation keeps room for EOS and an empty string
    still encodes to (BOS,) EOS. Idempotent.
    """
    from tokenizers.processors import TemplateProcessing

    if not getattr(tokenizer, "is_fast", False):
        raise LinqEvalError(
            f"{type(tokenizer).__name__} is a slow tokenizer: last-token pooling needs a fast tokenizer "
            "(save the model with a tokenizer.json)"
        )
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or eos_id is None:
        raise LinqEvalError("the tokenizer has no EOS token: last-token pooling needs one (set eos_token)")
    probe = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full)) if full[i : i + len(probe)] == probe), 0)
    prefix_ids = [i for i in full[:start] if i != eos_id]
    prefix = [tokenizer.convert_ids_to_tokens(i) for i in prefix_ids]
    head = "".join(f"{tok}:0 " for tok in prefix)
    specials = [(tok, i) for tok, i in zip(prefix, prefix_ids, strict=True)] + [(eos, eos_id)]
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{head}$A:0 {eos}:0",
        pair=f"{head}$A:0 {eos}:0 $B:1 {eos}:1",
        special_tokens=list(dict(specials).items()),
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos  # masked out by the attention mask, so any id works


def plain_text_inputs(transformer: Any) -> None:  # noqa: ANN401 -- a sentence-transformers Transformer module
    """Feed texts as they are: never through the tokenizer's chat template.

    sentence-transformers 6 renders text through a chat template whenever the tokenizer has one (e.g. an
    instruct decoder), which would wrap our ``Instruct: ...\nQuery: ...`` format and end every input with
    the template's tail instead of EOS.
    """
    if "message" in transformer.modality_config:
        transformer.modality_config = {k: v for k, v in transformer.modality_config.items() if k != "message"}
        transformer.input_formatter.supported_modalities = list(transformer.modality_config)


def _model_kwargs(bits: int, device: str, allow_pickle: bool, dtype_name: str | None) -> dict[str, Any]:
    import torch

    dtype = getattr(torch, dtype_name or sixteen_bit_dtype(device))
    kwargs: dict[str, Any] = {"dtype": dtype}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    quant = PRECISIONS[bits]
    if quant is not None:
        from transformers import BitsAndBytesConfig

        settings = dict(quant)
        if "bnb_4bit_compute_dtype" in settings:
            # NF4 weights are dequantised to the compute dtype for every matmul: it follows the 16-bit rule, since
            # bf16 matmuls on a CPU without bf16 instructions run about 7x slower than fp32 (and were what made
            # 4-bit evaluation 5x slower than 16-bit here). An explicit dtype is the compute dtype as well, so that
            # a pinned dtype computes in the same dtype on every CPU (bitsandbytes' CPU kernels still differ by
            # instruction set)
            compute = dtype_name or ("float32" if device == "cpu" and not cpu_supports_bf16()
                                     else settings["bnb_4bit_compute_dtype"])
            settings["bnb_4bit_compute_dtype"] = getattr(torch, compute)
        kwargs["quantization_config"] = BitsAndBytesConfig(**settings)
        kwargs["device_map"] = {"": device}
    return kwargs


def _pooling_mode(model: SentenceTransformer) -> str | None:
    for module in model:
        mode = getattr(module, "pooling_mode", None)
        if mode is not None:
            return mode if isinstance(mode, str) else ",".join(mode)
    return None


def _load(source: str, revision: str | None, device: str, model_kwargs: dict[str, Any], pooling: PoolingMode | None,
          max_length: int, trust_remote_code: bool) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    has_st_config = (Path(source) / "modules.json").is_file() if Path(source).is_dir() else None
    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    if has_st_config is None:  # hub id: probe for a sentence-transformers config
        from huggingface_hub import file_exists

        try:
            has_st_config = file_exists(source, "modules.json", revision=revision)
        except Exception:  # noqa: BLE001 -- offline: fall back to the cached snapshot below
            has_st_config = True
    if has_st_config and pooling is None:
        return SentenceTransformer(source, device=device, model_kwargs=model_kwargs, **common)
    transformer = Transformer(source, model_kwargs={**model_kwargs, **common},
                              max_seq_length=max_length or DEFAULT_MAX_LENGTH,
                              config_kwargs=common, processor_kwargs=common)
    mode = pooling or ("mean" if _is_encoder_only(transformer.config) else "lasttoken")
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), mode), Normalize()]
    return SentenceTransformer(modules=modules, device=device, similarity_fn_name="cosine")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """peft reads a property transformers 5 deprecated (``is_gradient_checkpointing``): a FutureWarning every time
    it loads or wraps a model, which says nothing to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


def _apply_adapter(model: SentenceTransformer, adapter: Path, *, merge: bool, trainable: bool) -> None:
    from peft import PeftModel

    transformer = model[0]
    try:
        with peft_quietly():
            peft_model = PeftModel.from_pretrained(transformer.auto_model, str(adapter), is_trainable=trainable)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise LinqEvalError(
            f"adapter {adapter} does not match the base model ({_first_line(exc, 200)}): "
            "load it on the base it was trained on"
        ) from None
    transformer.model = peft_model.merge_and_unload() if merge else peft_model  # auto_model is a read-only view


# -- merge before quantising -------------------------------------------------------------------------------------
# At 4 and 8 bits an adapter is applied as QLoRA trains it: the base is quantised and the adapter's low-rank product
# runs beside it in full precision. The model that was trained is the sum, though, and quantising the sum is another
# model than quantising the base alone: on the trajectory study's trained SmolLM2 checkpoint the merged form lost
# less than half as much at 4 bits (docs/training.md). ``merge_adapter=True`` loads that form.
MERGED_SUBDIR = "merged"


def merged_key(base: str, revision: str | None, adapter_sha256: str, dtype: str) -> str:
    """The cache folder name of one merge: everything that changes the merged weights."""
    payload = json.dumps([base, revision, adapter_sha256, dtype])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def merged_model(base: str, adapter: str | Path, *, dtype: str, revision: str | None = None, device: str = "cpu",
                 target: str | Path | None = None, trust_remote_code: bool = False,
                 allow_pickle: bool = False) -> Path:
    """``base`` with ``adapter`` merged into its weights in ``dtype``, saved as a sentence-transformers folder.

    Built once (atomically, under a lock: parallel ranks wait for one build) into ``target``, by default
    ``$LINQ_CACHE/merged/<key>``. The folder keeps the base's own tokenizer files: the loaded tokenizer carries
    linq-eval's EOS post-processor, which every load adds again.
    """
    from linq_eval.core.files import built_dir, content_sha256
    from linq_eval.core.settings import cache_dir

    adapter = Path(adapter)
    if target is None:
        target = cache_dir() / MERGED_SUBDIR / merged_key(base, revision, content_sha256(adapter), dtype)

    def build(folder: Path) -> None:
        from transformers import AutoTokenizer

        from linq_eval.models.references import resolve

        model = build_model(base, bits=16, adapter=adapter, dtype=dtype, revision=revision, device=device,
                            trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)  # merged on load
        model.save(str(folder), safe_serialization=True)
        tokenizer = AutoTokenizer.from_pretrained(resolve(base), revision=revision,
                                                  trust_remote_code=trust_remote_code)
        tokenizer.save_pretrained(str(folder))  # over the loaded one (see above)

    return built_dir(target, ("modules.json", "config.json"), build)


def build_model(
    name_or_path: str | None = None,
    *,
    bits: int = 16,
    adapter: str | Path | None = None,
    max_length: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    pooling: PoolingMode | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    for_training: bool = False,
    merge_adapter: bool = False,
) -> SentenceTransformer:
    """Load an embedding model for evaluation, teacher scoring or training.

    Args:
        name_or_path: local directory or hub id; default ``$LINQ_MODEL`` or Linq-Embed-Mistral.
        bits: 16 (bf16, or fp32 on CPUs without bf16), 8 (bitsandbytes int8) or 4 (NF4, double quant).
        adapter: a peft LoRA adapter directory applied on top of the base model.
        max_length: maximum tokens per input, EOS included; default: the model's own sentence-transformers
            limit, else 512 (the ``linq`` mteb entries always pass 512, e5-mistral's evaluation practice).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA if available.
        dtype: override the floating-point dtype (``"float32"`` to reproduce fp32 results exactly); for 4/8-bit
            it is the dtype of the layers that stay unquantised.
        revision: hub revision (the official model defaults to mteb's pinned revision).
        pooling: force a pooling mode; default: the model's sentence-transformers config, else last-token
            for decoders and mean for encoder-only architectures.
        trust_remote_code: run code shipped with the checkpoint (off unless asked).
        allow_pickle: allow ``.bin`` (pickle) weights; by default only safetensors load.
        for_training: keep the adapter trainable and unmerged.
        merge_adapter: at 4/8 bits, merge the adapter into the base's 16-bit weights and quantise the merged model
            (built once, :func:`merged_model`), instead of keeping it beside the quantised base (QLoRA's
            form). At 16 bits an adapter is always merged, so this changes nothing there.

    Returns:
        A ``SentenceTransformer`` whose ``encode`` returns L2-normalisable embeddings; decoders append EOS.

    Raises:
        LinqEvalError: bad bits, a missing path, an adapter that is not one or does not fit the base.
    """
    from linq_eval.models.references import resolve

    bits = check_bits(bits)
    quiet_harmless_warnings()  # here too, not only in our commands: mteb's own CLI loads models through this
    if dtype is not None and dtype not in DTYPES:
        raise LinqEvalError(f"dtype={dtype!r} is not supported: use one of {list(DTYPES)}")
    if max_length is not None and max_length < 2:
        raise LinqEvalError(f"max_length={max_length} is too small: give at least 2 tokens")
    adapter_dir = check_adapter(adapter, allow_pickle=allow_pickle) if adapter is not None else None
    merge = merges(bits, adapter_dir, merge_adapter)
    source = resolve(name_or_path or default_model())
    local = check_model_source(source)
    if local is not None and not allow_pickle and not any(Path(local).glob("*.safetensors")) \
            and any(Path(local).glob("*.bin")):
        raise LinqEvalError(f"{local} holds only pickled weights (*.bin): pickles are refused unless allowed "
                            "(allow_pickle=True); convert them to safetensors")
    if revision is None and source == DEFAULT_MODEL:
        revision = DEFAULT_REVISION

    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if merge and not for_training:
        try:
            local = merged_model(name_or_path or default_model(), adapter_dir, dtype=dtype or sixteen_bit_dtype(device),
                                 revision=revision, device=device, trust_remote_code=trust_remote_code,
                                 allow_pickle=allow_pickle)
        except OSError as exc:  # a read-only or full cache folder: the merged model is as large as the 16-bit one
            from linq_eval.core.settings import CACHE_ENV, cache_dir

            raise LinqEvalError(f"cannot write the merged model under {cache_dir() / MERGED_SUBDIR} ({_first_line(exc)}): "
                                f"set {CACHE_ENV} to a writable folder with room for a 16-bit copy of the model") from None
        adapter_dir = None  # in the weights now
    kwargs = _model_kwargs(bits, device, allow_pickle, dtype)
    try:
        model = _load(str(local or source), revision if local is None else None, device, kwargs, pooling,
                      max_length, trust_remote_code)
    except LinqEvalError:
        raise
    except (OSError, ValueError) as exc:
        from linq_eval.core.settings import hub_offline

        hint = " (the hub is offline: HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise LinqEvalError(f"cannot load model {source!r}{hint}: {_first_line(exc)}") from None

    if max_length is not None or not model.max_seq_length:
        model.max_seq_length = max_length or DEFAULT_MAX_LENGTH
    if _pooling_mode(model) == "lasttoken":
        plain_text_inputs(model[0])
        append_eos(model.tokenizer)
    if adapter_dir is not None:
        _apply_adapter(model, adapter_dir, merge=bits == 16 and not for_training, trainable=for_training)
    model.train(for_training)
    logger.info("loaded %s (bits=%d, pooling=%s, max_length=%d, device=%s)", source, bits,
                _pooling_mode(model), model.max_seq_length, device)
    return model


def describe(model: SentenceTransformer) -> dict[str, Any]:
    """JSON-safe facts about a loaded model (for result provenance and benchmarks)."""
    auto = model[0].auto_model
    return {
        "pooling": _pooling_mode(model),
        "max_length": model.max_seq_length,
        "dtype": str(next(auto.parameters()).dtype).removeprefix("torch."),
        "padding_side": model.tokenizer.padding_side,
        "weight_bytes": int(auto.get_memory_footprint()),
        "config": json.loads(auto.config.to_json_string()).get("model_type"),
    }


def sixteen_bit_dtype(device: str) -> str:
    """The 16-bit dtype name for a device: bf16 on GPUs and CPUs that support it, else fp32 on CPU."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.startswith("mps"):
        return "float16"
    return "bfloat16" if cpu_supports_bf16() else "float32"


def check_device_visible(device: str | None, option: str = "--device") -> str | None:
    """A device torch can use here (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu``), else a one-line error.

    torch itself only complains once the weights are being moved, minutes into a run.
    """
    if check_device(device, option) is None:
        return None
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return device
    import torch

    available = {"cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                 "mps": int(torch.backends.mps.is_available()),
                 "xpu": torch.xpu.device_count() if hasattr(torch, "xpu") and torch.xpu.is_available() else 0}[kind]
    if not available:
        raise LinqEvalError(f"{option} {device}: no {kind} device is visible to torch here: use {option} cpu")
    if index and int(index[1:]) >= available:
        raise LinqEvalError(f"{option} {device}: only {available} {kind} device(s) are visible "
                            f"({kind}:0 to {kind}:{available - 1})")
    return device
