"""Training throughput of ``linq-train fit`` against inference of the same model, as ratios measured in one run.

The model is built exactly as ``linq-train fit`` builds it: ``linq_train.fit.model.training_model`` with the
FitConfig of ``configs/fit_study.yaml`` (SmolLM2-135M through linq_eval's loader, LoRA on all linear layers,
max length 64; ``data`` and ``output_dir`` are placeholders, nothing is read or written there). One batch of
real (query, positive, hard negative) triples from Cranfield (queries with CranfieldRetrieval's instruction,
documents as mteb joins them; the positive a judged document, the negative an unjudged one; no text twice in
the batch, as fit's NO_DUPLICATES sampler ensures), collated by sentence-transformers' data collator as the
trainer does. Timed, interleaved round by round (A, B, C, D, A, B, C, D, ...), median of the rounds:

- ``inference``: the same model (LoRA unmerged, eval mode, ``torch.inference_mode``) on the same collated
  batch: one forward pass per column;
- ``cached_fwd_bwd``: forward and backward of fit's loss (``linq_train.fit.losses.contrastive_loss``: cached
  InfoNCE, GradCache with the config's ``mini_batch_size``);
- ``mnrl_fwd_bwd``: forward and backward of sentence-transformers' plain ``MultipleNegativesRankingLoss``
  (same scale, no gradient cache);
- ``optimizer_step``: the trainer's optimizer (``Trainer.get_optimizer_cls_and_kwargs``) stepping the LoRA
  weights on the gradients of the cached step just before it.

Tokens are the non-padding tokens of the batch (all three columns); a training step is forward + backward +
optimizer step; collation (tokenization) is timed on its own and is in neither side. The issue's target:
training tokens/s >= 25% of inference tokens/s (judged on fit's cached loss; the plain loss is reported too).

Full run (the defaults: batch 16 triples as fit_study's first stage, 7 rounds; about 4-5 minutes on 2 otherwise
idle cores, 5-10x longer beside another job)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_speed.py --rounds 7

Smoke run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_speed.py --batch-size 4 --rounds 1 --out /tmp/ts.json

Writes ``results/benchmarks/train_speed.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

COLUMNS = ("anchor", "positive", "negative")
TARGET = 0.25  # training tokens/s over inference tokens/s


def cranfield_triples(n: int, seed: int, query_prefix: str, document_text: Callable[[dict], str],
                      folder: Path | None = None) -> list[dict[str, str]]:
    """``n`` (anchor, positive, negative) rows of Cranfield: a query, a judged document, an unjudged one;
    no text appears twice."""
    from linq_eval.core.local_data import read_beir
    from linq_eval.core.settings import data_dir

    data = read_beir(folder or data_dir() / "cranfield")
    rng = random.Random(seed)
    query_ids = sorted(data.qrels)
    rng.shuffle(query_ids)
    doc_ids = sorted(data.corpus)
    used: set[str] = set()
    rows: list[dict[str, str]] = []
    for qid in query_ids:
        judged = data.qrels[qid]
        positive = next((d for d, g in sorted(judged.items(), key=lambda kv: (-kv[1], kv[0]))
                         if g > 0 and d not in used), None)
        if positive is None:
            continue
        negative = rng.choice(doc_ids)
        while negative in judged or negative in used:
            negative = rng.choice(doc_ids)
        used.update((positive, negative))
        rows.append({"anchor": query_prefix + data.queries[qid], "positive": document_text(data.corpus[positive]),
                     "negative": document_text(data.corpus[negative])})
        if len(rows) == n:
            return rows
    raise SystemExit(f"Cranfield gives only {len(rows)} distinct triples: ask for fewer (--batch-size)")


def columns_of(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The collated batch as the trainer's ``collect_features`` splits it: one feature dict per column."""
    return [{key[len(col) + 1 :]: value for key, value in batch.items() if key.startswith(col + "_")}
            for col in COLUMNS]


def main() -> None:  # noqa: PLR0915 -- a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fit_study.yaml", help="the linq-train fit config")
    parser.add_argument("--batch-size", type=int, default=None, help="triples per step (default: the config's "
                        "first stage)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per input (default: the config's)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/benchmarks/train_speed.json")
    args = parser.parse_args()

    import encoder_speed as helpers  # the sibling benchmark: machine facts, timing, document text
    import mteb
    import torch
    from mteb.types import PromptType
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import Trainer

    from linq_eval.core.files import atomic_write_json
    from linq_eval.models.build import describe
    from linq_eval.models.encoder import LinqEncoder
    from linq_eval.registry import register
    from linq_train.fit.config import FitConfig
    from linq_train.fit.losses import contrastive_loss
    from linq_train.fit.model import resolve_bf16, trainable_parameters, training_model
    from linq_train.refine.config import read_config

    torch.manual_seed(args.seed)
    scratch_dir = tempfile.TemporaryDirectory(prefix="train_speed_")  # removed at exit; nothing is written there
    scratch = scratch_dir.name
    cfg = read_config(args.config, FitConfig, "training", "base_model, data, stages")
    update: dict[str, Any] = {"data": "(unused by this benchmark)", "output_dir": scratch}
    if args.max_length:
        update["max_length"] = args.max_length
    cfg = cfg.model_copy(update=update)
    stage = cfg.stages[0]
    batch_size = args.batch_size or stage.batch_size

    register()
    prefix = LinqEncoder(None).prefix_for(mteb.get_task("CranfieldRetrieval").metadata, PromptType.query)
    rows = cranfield_triples(batch_size, args.seed, prefix, helpers.document_text)

    model = training_model(cfg, None)
    model.train()
    bf16 = resolve_bf16(cfg.bf16, str(model.device))

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(model.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    collate_s = statistics.median(helpers.timed(lambda: collator(rows)) for _ in range(3))
    features = columns_of(collator(rows))
    tokens = int(sum(int(f["attention_mask"].sum()) for f in features))
    padded = int(sum(f["attention_mask"].numel() for f in features))

    cached = contrastive_loss(model, in_batch_negatives=True, scale=cfg.loss.scale,
                              mini_batch_size=cfg.loss.mini_batch_size)
    plain = MultipleNegativesRankingLoss(model, scale=cfg.loss.scale)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=scratch, learning_rate=stage.learning_rate, report_to="none", bf16=bf16,
        use_cpu=model.device.type == "cpu")
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    optimizer = optimizer_cls([p for p in model.parameters() if p.requires_grad], **optimizer_kwargs)

    def fresh() -> list[dict[str, Any]]:  # modules write their outputs into the feature dicts: copy them
        return [dict(f) for f in features]

    def inference() -> None:
        model.eval()
        try:
            with torch.inference_mode(), autocast():
                for feature in fresh():
                    model(feature)
        finally:
            model.train()

    def fwd_bwd(loss_fn: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:  # as the trainer: the loss under autocast, backward outside it
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(fresh(), None)
            loss.backward()
        return step

    def optimizer_step() -> None:
        optimizer.step()

    systems: dict[str, Callable[[], None]] = {"inference": inference, "mnrl_fwd_bwd": fwd_bwd(plain),
                                              "cached_fwd_bwd": fwd_bwd(cached), "optimizer_step": optimizer_step}
    for fn in systems.values():  # warm-up: the first backward and step allocate their buffers
        fn()
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(args.rounds):
        for name, fn in systems.items():  # the optimizer steps on the cached loss's gradients just computed
            times[name].append(helpers.timed(fn))
    median = {name: statistics.median(values) for name, values in times.items()}

    infer_tps = tokens / median["inference"]
    training: dict[str, Any] = {}
    for loss_name in ("cached", "mnrl"):
        fwd_bwd_s = median[f"{loss_name}_fwd_bwd"]
        step_s = fwd_bwd_s + median["optimizer_step"]
        training[loss_name] = {
            "fwd_bwd_tokens_per_second": tokens / fwd_bwd_s,
            "step_tokens_per_second": tokens / step_s,
            "step_seconds": step_s,
            "step_vs_inference (time)": step_s / median["inference"],
            "fwd_bwd_vs_inference (time)": fwd_bwd_s / median["inference"],
            "training_over_inference_tokens_per_second": (tokens / step_s) / infer_tps,
            "training_over_inference_per_round_median": statistics.median(
                i / (f + o) for i, f, o in zip(times["inference"], times[f"{loss_name}_fwd_bwd"],
                                               times["optimizer_step"], strict=True)),
        }
    trainable, total = trainable_parameters(model)
    judged = training["cached"]["training_over_inference_tokens_per_second"]
    report = {
        "machine": helpers.cpu_facts(),
        "model": {"base_model": cfg.base_model, **describe(model), "trainable_parameters": trainable,
                  "total_parameters": total, "lora": cfg.lora.model_dump(mode="json"), "bf16_autocast": bf16,
                  "gradient_checkpointing": cfg.gradient_checkpointing},
        "config": args.config,
        "loss": {"cached": f"{type(cached).__name__} (linq_train.fit.losses.contrastive_loss), scale "
                           f"{cfg.loss.scale}, mini_batch_size {cfg.loss.mini_batch_size}",
                 "mnrl": f"{type(plain).__name__}, scale {cfg.loss.scale}"},
        "optimizer": {"class": f"{optimizer_cls.__module__}.{optimizer_cls.__name__}",
                      "kwargs": {k: v for k, v in optimizer_kwargs.items() if isinstance(v, int | float | str | bool)}},
        "batch": {"triples": batch_size, "texts": batch_size * len(COLUMNS), "max_length": cfg.max_length,
                  "tokens": tokens, "padded_tokens": padded, "data": "Cranfield (query, judged doc, unjudged doc)",
                  "collate_seconds": collate_s},
        "rounds": args.rounds,
        "order": "inference, mnrl_fwd_bwd, cached_fwd_bwd, optimizer_step, interleaved round by round; medians",
        "seconds": times,
        "median_seconds": median,
        "inference_tokens_per_second": infer_tps,
        "optimizer_step_share_of_cached_step": median["optimizer_step"] / training["cached"]["step_seconds"],
        "training": training,
        "target": {"what": "training tokens/s (forward + backward + optimizer step, fit's cached loss) >= 25% "
                           "of inference tokens/s of the same model on the same batch",
                   "measured": judged, "met": judged >= TARGET,
                   "measured_plain_mnrl": training["mnrl"]["training_over_inference_tokens_per_second"]},
    }
    atomic_write_json(args.out, report)
    scratch_dir.cleanup()
    print(json.dumps({k: report[k] for k in ("batch", "median_seconds", "inference_tokens_per_second",
                                              "training", "target")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
