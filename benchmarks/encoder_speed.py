"""Encoder speed and memory, as ratios measured in one run (machines are noisy; processors differ).

Measures on the real SmolLM2-135M decoder (our offline stand-in for Linq-Embed-Mistral), same texts, same
precision, systems interleaved round by round (A, B, C, A, B, C, ...), median of the rounds:

1. throughput (tokens/s) of our ``LinqEncoder`` vs mteb's stock Linq loader (``InstructSentenceTransformerModel``
   with upstream's kwargs), both with upstream's default length limit and with the same 512-token limit;
2. bf16 vs fp32 throughput of our encoder on this CPU;
3. 4-bit vs 16-bit weight memory: measured on the stand-in, and computed for Mistral-7B's shapes and
   bitsandbytes' NF4 storage (:func:`mistral_7b_weight_bytes`);
4. the bf16 and fp32 matmul peak of this machine, and model FLOP utilisation (MFU) against it.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_speed.py [--docs 96 --long-docs 8 --rounds 2]

Writes ``results/benchmarks/encoder_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMPLATE = "Instruct: {instruction}\nQuery: "


def cpu_facts() -> dict[str, Any]:
    import sentence_transformers
    import torch
    import transformers

    try:
        model_name = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except StopIteration:
        model_name = platform.processor()
    return {"cpu": model_name, "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__}


def matmul_peak(dtype_name: str, reps: int = 5) -> float:
    """Best GFLOP/s of torch.matmul over two shapes: a 135M decoder's MLP and a 2048 square."""
    import torch

    dtype = getattr(torch, dtype_name)
    best = 0.0
    for m, k, n in ((4096, 576, 1536), (2048, 2048, 2048)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.matmul(a, b)
        for _ in range(reps):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = max(best, 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def sample_texts(n_short: int, n_long: int, seed: int) -> list[str]:
    from linq_eval.core.local_data import read_beir
    from linq_eval.core.settings import data_dir

    rng = random.Random(seed)
    short = []
    for name in ("vaswani", "cisi", "medline"):
        corpus = read_beir(data_dir() / name).corpus
        short += [(d["title"] + " " + d["text"]).strip() for d in corpus.values()]
    long_docs = [d["text"] for d in read_beir(data_dir() / "LegalBenchCorporateLobbying").corpus.values()]
    long_docs = [t for t in long_docs if len(t) > 3000]
    return rng.sample(short, n_short) + rng.sample(long_docs, min(n_long, len(long_docs)))


def non_embedding_params(model: Any) -> int:  # noqa: ANN401
    auto = model[0].auto_model
    return sum(p.numel() for name, p in auto.named_parameters() if "embed_tokens" not in name)


def stored_bytes(weight: Any) -> int:  # noqa: ANN401 -- a torch parameter, or bitsandbytes' Params4bit
    """Bytes of a weight as held in memory: the tensor and, for a 4-bit weight, its whole ``QuantState``
    (absmax, offset, code, and the nested state of double quantisation)."""
    total = weight.numel() * weight.element_size()
    state = getattr(weight, "quant_state", None)
    while state is not None:
        total += sum(t.numel() * t.element_size() for t in (state.absmax, state.offset, state.code) if t is not None)
        state = state.state2
    return total


def linear_bytes(model: Any) -> int:  # noqa: ANN401
    """Bytes of the quantisable Linear weights (bnb's 4-bit layers pack two values per byte)."""
    import torch

    return sum(stored_bytes(m.weight) for m in model[0].auto_model.modules() if isinstance(m, torch.nn.Linear))


# Mistral-7B-v0.1 (config.json), as Linq-Embed-Mistral loads it: MistralModel, no lm_head.
MISTRAL_7B = {"hidden": 4096, "intermediate": 14336, "layers": 32, "heads": 32, "kv_heads": 8, "head_dim": 128,
              "vocab": 32000}
NF4_BLOCKSIZE = 64  # weights per absmax (bitsandbytes' 4-bit default, used by transformers)
NESTED_BLOCKSIZE = 256  # absmax values per second-level fp32 scale (double quantisation)
# Per quantised tensor, beside the blocks: the fp32 offset subtracted from absmax before its 8-bit quantisation,
# the 16-value NF4 code and the 256-value code of the nested quantisation (fp32 each, one copy per tensor).
NF4_TENSOR_CONSTANTS = 4 + 16 * 4 + 256 * 4


def nf4_weight_bytes(n: int) -> int:
    """Bytes of one ``n``-weight matrix in bitsandbytes NF4 with double quantisation (``Params4bit`` + ``QuantState``):
    4 bits a weight (two a byte), one 8-bit absmax a block of 64, one fp32 scale a block of 256 absmax values."""
    blocks = -(-n // NF4_BLOCKSIZE)
    return -(-n // 2) + blocks + 4 * -(-blocks // NESTED_BLOCKSIZE) + NF4_TENSOR_CONSTANTS


def mistral_7b_shapes(cfg: dict[str, int] = MISTRAL_7B) -> dict[str, list[tuple[int, ...]]]:
    """Every weight of the embedding model: the ``nn.Linear`` ones (bitsandbytes quantises them) and the rest
    (token embeddings, RMSNorms: kept in bf16). The lm_head (32000 x 4096, untied) is not in the model, so not
    counted."""
    h, kv = cfg["hidden"], cfg["kv_heads"] * cfg["head_dim"]
    per_layer = [(cfg["heads"] * cfg["head_dim"], h), (kv, h), (kv, h), (h, cfg["heads"] * cfg["head_dim"]),
                 (cfg["intermediate"], h), (cfg["intermediate"], h), (h, cfg["intermediate"])]  # q k v o gate up down
    return {"linear": per_layer * cfg["layers"],
            "unquantised": [(cfg["vocab"], h), *[(h,)] * (2 * cfg["layers"]), (h,)]}  # embeddings, norms, final norm


def mistral_7b_weight_bytes(bits: int) -> dict[str, int]:
    """Analytic weight bytes of Mistral-7B's embedding model at bf16 (16) or NF4 with double quantisation (4)."""
    shapes = mistral_7b_shapes()

    def size(shape: tuple[int, ...]) -> int:
        return math.prod(shape)

    linear = sum(nf4_weight_bytes(size(s)) if bits == 4 else 2 * size(s) for s in shapes["linear"])
    rest = sum(2 * size(s) for s in shapes["unquantised"])
    return {"linear": linear, "unquantised": rest, "total": linear + rest}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:  # noqa: PLR0915 -- a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=96, help="short documents (abstracts)")
    parser.add_argument("--long-docs", type=int, default=8, help="long documents (LegalBench summaries)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="results/benchmarks/encoder_speed.json")
    args = parser.parse_args()

    import torch
    from mteb.models.instruct_wrapper import InstructSentenceTransformerModel

    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder
    from linq_eval.models.references import resolve

    torch.manual_seed(0)
    path = resolve("pypi:SmolLM2-135M")
    texts = sample_texts(args.docs, args.long_docs, seed=0)
    ours = LinqEncoder(build_model(path, bits=16, max_length=512, device="cpu"), show_progress=False)
    ours32 = LinqEncoder(build_model(path, bits=16, max_length=512, device="cpu", dtype="float32"),
                         show_progress=False)
    # mteb's upstream Linq entry, as in mteb/models/model_implementations/linq_models.py
    upstream = InstructSentenceTransformerModel(path, revision=None, instruction_template=TEMPLATE,
                                                model_kwargs={"dtype": torch.bfloat16},
                                                apply_instruction_to_passages=False, device="cpu")
    upstream_limit = upstream.model.max_seq_length
    upstream512 = InstructSentenceTransformerModel(path, revision=None, instruction_template=TEMPLATE,
                                                   model_kwargs={"dtype": torch.bfloat16},
                                                   apply_instruction_to_passages=False, device="cpu",
                                                   max_seq_length=512)
    tokens = sum(len(ids) for ids in ours.model.tokenizer(texts, truncation=True, max_length=512)["input_ids"])
    tokens_upstream = sum(len(ids) for ids in upstream.model.tokenizer(
        texts, truncation=True, max_length=upstream_limit)["input_ids"])
    systems: dict[str, Callable[[], Any]] = {
        "ours_bf16": lambda: ours.encode_texts(texts, batch_size=args.batch_size),
        "upstream_bf16": lambda: upstream.model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True),
        "upstream_bf16_512": lambda: upstream512.model.encode(texts, batch_size=args.batch_size,
                                                              normalize_embeddings=True),
        "ours_fp32": lambda: ours32.encode_texts(texts, batch_size=args.batch_size),
    }
    warm = texts[:4]
    ours.encode_texts(warm)
    ours32.encode_texts(warm)
    upstream.model.encode(warm)
    upstream512.model.encode(warm)
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(args.rounds):
        for name, fn in systems.items():
            times[name].append(timed(fn))
    median = {name: statistics.median(values) for name, values in times.items()}

    peak = {"bfloat16": matmul_peak("bfloat16"), "float32": matmul_peak("float32")}
    params = non_embedding_params(ours.model)

    def mfu(name: str, tok: int, dtype: str) -> float:
        return 2 * params * tok / median[name] / 1e9 / peak[dtype]

    q4 = build_model(path, bits=4, max_length=512, device="cpu")
    report = {
        "machine": cpu_facts(),
        "model": "SmolLM2-135M-Instruct (pypi:SmolLM2-135M), stand-in for Linq-Embed-Mistral",
        "texts": {"short": args.docs, "long": args.long_docs, "tokens_at_512": tokens,
                  "tokens_at_upstream_limit": tokens_upstream, "upstream_max_seq_length": upstream_limit},
        "rounds": args.rounds,
        "seconds": times,
        "tokens_per_second": {
            "ours_bf16": tokens / median["ours_bf16"],
            "upstream_bf16": tokens_upstream / median["upstream_bf16"],
            "upstream_bf16_512": tokens / median["upstream_bf16_512"],
            "ours_fp32": tokens / median["ours_fp32"],
        },
        "ratios": {
            "ours_vs_upstream_default_limit (time)": median["upstream_bf16"] / median["ours_bf16"],
            "ours_vs_upstream_same_512_limit (time)": median["upstream_bf16_512"] / median["ours_bf16"],
            "bf16_vs_fp32 (time)": median["ours_fp32"] / median["ours_bf16"],
        },
        "matmul_peak_gflops": peak,
        "mfu": {"ours_bf16": mfu("ours_bf16", tokens, "bfloat16"),
                "upstream_bf16": mfu("upstream_bf16", tokens_upstream, "bfloat16"),
                "ours_fp32": mfu("ours_fp32", tokens, "float32")},
        "memory": {
            "stand_in_total_bytes": {"16": int(ours.model[0].auto_model.get_memory_footprint()),
                                     "4": int(q4[0].auto_model.get_memory_footprint())},
            "stand_in_linear_bytes": {"16": linear_bytes(ours.model), "4": linear_bytes(q4)},
            "mistral_7b_weight_bytes_analytic": {"16": mistral_7b_weight_bytes(16), "4": mistral_7b_weight_bytes(4)},
        },
        "targets": {"ours_vs_upstream": ">= 1.2", "4bit_vs_16bit_weights": "<= 0.35"},
    }
    mem = report["memory"]
    mem["ratios_4_vs_16"] = {
        "stand_in_total": mem["stand_in_total_bytes"]["4"] / mem["stand_in_total_bytes"]["16"],
        "stand_in_linear": mem["stand_in_linear_bytes"]["4"] / mem["stand_in_linear_bytes"]["16"],
        **{f"mistral_7b_{part}_analytic": mem["mistral_7b_weight_bytes_analytic"]["4"][part]
           / mem["mistral_7b_weight_bytes_analytic"]["16"][part] for part in ("linear", "total")},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("texts", "tokens_per_second", "ratios", "matmul_peak_gflops", "mfu")},
                     indent=2))
    print(json.dumps(mem["ratios_4_vs_16"], indent=2))


if __name__ == "__main__":
    main()
