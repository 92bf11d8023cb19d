"""``LinqEncoder``: the mteb encoder (``EncoderProtocol``) around a model from :func:`build_model`.

It adds what mteb's generic wrappers lack for Linq-Embed-Mistral: the instruction table (queries only for
retrieval and reranking, every input for symmetric tasks), batches cut by token budget after sorting by
*token* length (sentence-transformers sorts by characters and uses a fixed batch size), a rich progress
bar, and encoding spread over several devices with sentence-transformers' multi-process pool.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder, PromptSource
from mteb.types import PromptType

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.instructions import ASYMMETRIC_TYPES, InstructionTable, load_instructions

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from sentence_transformers import SentenceTransformer
    from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)

# Padded tokens per forward pass on CPU. A CPU is saturated by a few thousand tokens, so small budgets cost no
# throughput and keep long inputs from padding short ones: measured on SmolLM2-135M (2-core EPYC, mixed
# abstracts and long legal texts), 2,048 gave 1.9x the tokens/s of 32-row batches (benchmarks/encoder_speed.py).
CPU_TOKEN_BUDGET = 2048


def token_budget_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Split indices, longest first, into batches of at most ``batch_size`` rows and ``max_tokens`` padded tokens.

    Short inputs therefore share large batches and long ones small batches; padding stays minimal
    because neighbours in the order have nearly equal lengths.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        rows = max(1, min(batch_size, max_tokens // longest))
        batches.append(order[start : start + rows])
        start += rows
    return batches


# -- a cheap cut before tokenization ----------------------------------------------------------------------------
# A tokenizer turns the whole text into tokens before it truncates: one 50 MB document cost 7 GB and 6x the time
# for an unchanged embedding. Texts are therefore cut before tokenization, at a place that provably keeps every
# token the model would see:
#
# - only at the start of a whitespace run that follows a non-space character (a space or a newline). Every
#   tokenizer we load ends a pre-token there (WordPiece and BERT's pre-tokenizer split on whitespace; byte-level
#   BPE's regex never runs a letter, digit or punctuation piece into whitespace; SentencePiece vocabularies never
#   carry a non-space character into a following space or newline), so the tokens of ``text[:cut]`` are exactly
#   the first tokens of ``text``;
# - only where ``text[:cut]`` already holds at least the tokens truncation keeps (counted by tokenizing the cut
#   text, which is short), so truncating either gives the same input ids.
#
# The first cut tried is ``(kept tokens + margin) x the longest token string of the vocabulary``, a length that
# nearly always holds enough tokens; whitespace runs (which BERT drops) and ``[UNK]`` words (one token for a
# whole long word) can make it hold fewer, and then the cut moves 4x further out, up to CUT_SCAN_FACTOR x the
# first try. A text with no usable boundary within that (one giant word, a giant whitespace run) is cut there
# anyway, with a warning: it is not natural text, and tokenizing it whole could exhaust the machine.
BOUNDARY = re.compile(r"\S[ \n]")
CUT_MARGIN_TOKENS = 8
CUT_SCAN_FACTOR = 64


def longest_token_chars(tokenizer: Any) -> int:  # noqa: ANN401 -- any Hugging Face tokenizer
    """Characters in the longest token string of the vocabulary: an upper bound on the text one token covers
    (byte-level token strings hold one character per byte; ``##`` and ``▁`` markers only add)."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1)


def bounded_texts(texts: Sequence[str], tokenizer: Any, max_length: int, *,  # noqa: ANN401 -- a tokenizer
                  longest: int | None = None) -> list[str]:
    """``texts``, each cut before tokenization where the cut keeps the input ids of truncation to ``max_length``.

    A text is returned as the same object when it is short or has no usable boundary; see the module comment
    above for why a cut never changes the ids (the tests check it on every shipped text, with two tokenizers).
    """
    out = list(texts)
    if getattr(tokenizer, "truncation_side", "right") != "right":  # left truncation keeps the end: no cut
        return out
    kept = max(max_length - tokenizer.num_special_tokens_to_add(pair=False), 1)
    first = (kept + CUT_MARGIN_TOKENS) * (longest or longest_token_chars(tokenizer))
    cap = first * CUT_SCAN_FACTOR
    pending = [i for i, text in enumerate(out) if len(text) > first]
    limit = first
    while pending:
        cuts: dict[int, int] = {}
        for i in pending:
            match = BOUNDARY.search(out[i], limit - 1, min(len(out[i]), cap))
            if match is not None:
                cuts[i] = match.start() + 1  # the whitespace character: text[:cut] ends with a whole word
        counts = tokenizer([out[i][: cuts[i]] for i in cuts], add_special_tokens=False, truncation=True,
                           max_length=kept, return_attention_mask=False, return_token_type_ids=False,
                           )["input_ids"] if cuts else []
        enough = {i for i, ids in zip(cuts, counts, strict=True) if len(ids) >= kept}
        for i in enough:
            out[i] = out[i][: cuts[i]]
        # the rest had too few tokens (whitespace runs, [UNK] words) or no boundary yet: look further out
        pending = [i for i in pending if i not in enough and len(out[i]) > limit]
        if limit == cap:
            break
        limit = min(limit * 4, cap)
    for i in pending:
        if len(out[i]) > cap:  # not natural text, and tokenizing it whole could exhaust the memory
            logger.warning("a text of %d characters has no verified cut within its first %d: cut there (the "
                           "tokens truncation keeps may differ)", len(out[i]), cap)
            out[i] = out[i][:cap]
    return out


def resolve_devices(devices: Sequence[str] | str | None) -> list[str]:
    """``"all"`` -> every visible CUDA device; a list stays as it is; None -> [] (encode in this process)."""
    if devices is None:
        return []
    if devices == "all":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [devices] if isinstance(devices, str) else list(devices)


class LinqEncoder(AbsEncoder):
    """Encodes mteb task inputs with Linq-Embed-Mistral's instructions and pooling.

    Args:
        model: a sentence-transformers model from :func:`linq_eval.models.build.build_model`.
        instructions: the instruction table (default: the built-in e5-mistral / Linq table).
        batch_size: most inputs per forward pass (mteb's ``encode_kwargs["batch_size"]`` wins).
        max_tokens_per_batch: most padded tokens per forward pass; default ``CPU_TOKEN_BUDGET`` on CPU and
            ``batch_size * max_length`` on accelerators, which need large batches to fill up.
        devices: several devices (e.g. ``["cuda:0", "cuda:1"]``, or ``"all"`` for every visible GPU) to encode
            on in parallel processes (sentence-transformers' multi-process pool).
        show_progress: show a rich progress bar.
        use_instructions: False for models trained without instructions (e.g. all-MiniLM-L6-v2).
    """

    # A task's own mteb prompt beats the generic per-type fallback of our table.
    prompt_priority = (PromptSource.CUSTOM_PROMPT, PromptSource.DEFAULT_TASK_PROMPT, PromptSource.TASK_TYPE_PROMPT)

    def __init__(
        self,
        model: SentenceTransformer | None,
        instructions: InstructionTable | None = None,
        *,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        devices: Sequence[str] | str | None = None,
        show_progress: bool = True,
        use_instructions: bool = True,
    ) -> None:
        self.model = model
        self.instructions = instructions or load_instructions()
        self.instruction_template = self.instructions.template
        self.prompts_dict = self.instructions.prompts_dict()
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.devices = devices
        self.show_progress = show_progress
        self.use_instructions = use_instructions
        self.usage: dict[str, dict[str, float]] = {}  # label -> texts, tokens, seconds (compare's cost report)
        self._longest: tuple[Any, int] | None = None  # (tokenizer, its longest token string), computed once

    # -- instructions -------------------------------------------------------------------------
    def prefix_for(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> str:
        """The text put before every input of this task side: an instruction, or "" for documents."""
        if not self.use_instructions:
            return ""
        if prompt_type == PromptType.document and task_metadata.type in ASYMMETRIC_TYPES:
            return ""
        return self.get_task_instruction(_instruction_source(task_metadata), prompt_type) or ""

    # -- encoding -----------------------------------------------------------------------------
    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """mteb's ``EncoderProtocol.encode``: one L2-normalised row per input, in input order."""
        texts = [text for batch in inputs for text in batch["text"]]
        prefix = self.prefix_for(task_metadata, prompt_type)
        side = prompt_type.value if prompt_type else "inputs"
        t0 = time.perf_counter()
        out = self.encode_texts(texts, prefix=prefix, batch_size=kwargs.get("batch_size"),
                                label=f"{task_metadata.name} {side}")
        count = self.usage.setdefault(side, {"texts": 0, "tokens": 0, "seconds": 0.0})
        count["texts"] += len(texts)
        count["seconds"] += time.perf_counter() - t0
        return out

    def encode_texts(
        self, texts: Sequence[str], *, prefix: str = "", batch_size: int | None = None, label: str = "encoding"
    ) -> np.ndarray:
        """Encode plain texts, each preceded by ``prefix``."""
        if self.model is None:
            raise RuntimeError("LinqEncoder was built without a model")
        full = self._bounded([prefix + (t or "") for t in texts])
        if not full:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        # Each distinct text once: identical texts then get bit-identical vectors (in batches of other shapes
        # they differ in the last bits, so exact ties, e.g. a document present in two collections, would be
        # ordered by float noise rather than by the evaluator's tie-break), and repeated texts cost nothing.
        unique = list(dict.fromkeys(full))
        where = {text: i for i, text in enumerate(unique)}
        devices = resolve_devices(self.devices)
        if len(devices) > 1:
            out = self._encode_multiprocess(unique, batch_size or self.batch_size, devices)
        else:
            out = self._encode_local(unique, batch_size or self.batch_size, label)
        check_finite(out, label)
        return out if len(unique) == len(full) else out[[where[text] for text in full]]

    def _bounded(self, texts: list[str]) -> list[str]:
        """The texts cut before tokenization (:func:`bounded_texts`): what the model sees is unchanged."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None or not texts:
            return texts
        if self._longest is None or self._longest[0] is not tokenizer:
            self._longest = (tokenizer, longest_token_chars(tokenizer))
        return bounded_texts(texts, tokenizer, self.model.max_seq_length or 512, longest=self._longest[1])

    def _encode_local(self, texts: list[str], batch_size: int, label: str) -> np.ndarray:
        """Tokenize once, cut token-budget batches, encode them (this rank's share of them under
        ``torch.distributed``, gathered into the full matrix on every rank)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from linq_eval.models import distributed

        max_length = self.model.max_seq_length or 512
        # the ids the model sees, EOS included (the tokenizer's post-processor adds it after truncation, as in
        # sentence-transformers' own preprocessing): tokenized once, padded per batch below
        encoded = self.model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length,
                                       padding=False)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        on_cpu = self.model.device.type == "cpu"
        budget = self.max_tokens_per_batch or (CPU_TOKEN_BUDGET if on_cpu else batch_size * max_length)
        batches = token_budget_batches(lengths, batch_size, budget)
        spread = distributed.active()
        if spread:  # whole batches per rank, balanced by padded tokens; every rank computes the same split
            here = distributed.world()
            costs = [len(idx) * max(lengths[i] for i in idx) for idx in batches]
            batches = [batches[b] for b in distributed.assign(costs, here.size)[here.rank]]
            logger.info("%s: rank %d of %d encodes %d of %d texts", label, here.rank, here.size,
                        sum(len(idx) for idx in batches), len(texts))
        mine = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        side = label.rsplit(" ", 1)[-1]
        # the tokens of every share: under torch.distributed tokens/s is then the group's throughput
        self.usage.setdefault(side, {"texts": 0, "tokens": 0, "seconds": 0.0})["tokens"] += sum(lengths)
        out = np.empty((len(mine) if spread else len(texts), self.model.get_embedding_dimension()), dtype=np.float32)
        position = {int(i): k for k, i in enumerate(mine)} if spread else None
        # on stderr, and only on a terminal: piped or logged, a finished transient display still leaves a blank
        # line in the output (stdout holds results)
        screen = Console(stderr=True)
        show = self.show_progress and distributed.world().main and screen.is_terminal
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=screen, disable=not show, transient=True) as progress:
            bar = progress.add_task(label, total=len(mine))
            for idx in batches:
                emb = self._forward(encoded, idx)
                out[[position[int(i)] for i in idx] if spread else idx] = emb
                progress.advance(bar, len(idx))
        return distributed.gather_rows(mine, out, len(texts)) if spread else out

    def _forward(self, encoded: Any, idx: np.ndarray) -> np.ndarray:  # noqa: ANN401 -- a BatchEncoding
        """One batch of pre-tokenized texts through the model: sentence-transformers' ``encode`` step without
        its tokenization (padding as its processor pads, normalised in the model's dtype, then float32)."""
        import torch
        from sentence_transformers.util import batch_to_device

        tokenizer = self.model.tokenizer
        features = tokenizer.pad({key: [encoded[key][i] for i in idx] for key in encoded}, padding=True,
                                 return_tensors="pt")
        features = batch_to_device(dict(features), self.model.device)
        features["modality"] = "text"
        training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                emb = self.model(features)["sentence_embedding"]
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        finally:
            self.model.train(training)
        return emb.float().cpu().numpy()

    def _encode_multiprocess(self, texts: list[str], batch_size: int, devices: list[str]) -> np.ndarray:
        pool = self.model.start_multi_process_pool(devices)
        try:
            emb = self.model.encode(texts, pool=pool, batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=self.show_progress)
        finally:
            self.model.stop_multi_process_pool(pool)
        return np.asarray(emb, dtype=np.float32)


class NonFiniteEmbeddings(LinqEvalError):
    """NaN or inf in embeddings: a failed precision (fp16 overflow, a broken 4-bit kernel), never a score."""


def check_finite(embeddings: np.ndarray, label: str) -> None:
    bad = int((~np.isfinite(embeddings)).any(axis=1).sum()) if embeddings.size else 0
    if bad:
        raise NonFiniteEmbeddings(f"{label}: {bad} of {len(embeddings)} embeddings contain NaN or inf: this "
                                  "precision failed (try another --bits or --dtype float32)")


def _instruction_source(task_metadata: TaskMetadata) -> TaskMetadata:
    """A light set (``<Parent>-light``) is instructed exactly as its parent task."""
    from linq_eval.core.light_manifest import LIGHT_SUFFIX

    if not task_metadata.name.endswith(LIGHT_SUFFIX) or not task_metadata.adapted_from:
        return task_metadata
    import mteb

    try:
        return mteb.get_task(task_metadata.adapted_from[0]).metadata
    except KeyError:
        return task_metadata
