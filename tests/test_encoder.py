"""LinqEncoder inside mteb's real evaluation: instructions per side, batching, several processes."""

from __future__ import annotations

from pathlib import Path

import mteb
import numpy as np
import pytest

from linq_eval.models.build import build_model
from linq_eval.models.encoder import LinqEncoder, token_budget_batches


class RecordingModel:
    """Delegates to a real model and records every text it is asked to encode (the encoder tokenizes each text
    once, through the model's tokenizer, and feeds the ids)."""

    def __init__(self, model) -> None:
        self._model = model
        self.seen: list[str] = []
        self.tokenizer = _RecordingTokenizer(model.tokenizer, self.seen)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


class _RecordingTokenizer:
    def __init__(self, tokenizer, seen: list[str]) -> None:
        self._tokenizer, self._seen = tokenizer, seen

    def __call__(self, texts, *args, **kwargs):
        if kwargs.get("add_special_tokens") is not False:  # not the pre-tokenization cut's own counting
            self._seen.extend(texts)
        return self._tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def tiny(tiny_mistral_dir: Path):
    return build_model(str(tiny_mistral_dir), device="cpu", max_length=128).float()  # fp32: exact comparisons


def _evaluate(encoder: LinqEncoder, task_name: str, tmp_path: Path):
    return mteb.evaluate(encoder, [mteb.get_task(task_name)], cache=mteb.ResultCache(tmp_path),
                         encode_kwargs={"batch_size": 16})


def _with_meta(encoder: LinqEncoder) -> LinqEncoder:
    encoder.mteb_model_meta = mteb.get_model_meta("linq")
    return encoder


def test_queries_carry_the_instruction_and_documents_none(tiny, tmp_path: Path) -> None:
    recorder = RecordingModel(tiny)
    encoder = _with_meta(LinqEncoder(recorder, show_progress=False))
    task = mteb.get_task("ADIRetrieval")
    results = _evaluate(encoder, "ADIRetrieval", tmp_path)
    assert 0.0 <= results.task_results[0].get_score() <= 1.0
    prefix = "Instruct: " + task.metadata.prompt["query"] + "\nQuery: "
    queries = [t for t in recorder.seen if t.startswith("Instruct: ")]
    documents = [t for t in recorder.seen if not t.startswith("Instruct: ")]
    assert len(queries) == 35 and all(t.startswith(prefix) for t in queries)
    assert len(documents) == 82 and not any("Query: " in t[:200] for t in documents)


def test_symmetric_tasks_instruct_every_input(tiny, tmp_path: Path) -> None:
    from mteb.types import PromptType

    encoder = LinqEncoder(tiny, show_progress=False)
    sts = mteb.get_task("STS16").metadata
    assert encoder.prefix_for(sts, None) == "Instruct: Retrieve semantically similar text.\nQuery: "
    assert encoder.prefix_for(sts, PromptType.query) == encoder.prefix_for(sts, None)


def test_encoder_output_matches_plain_model_encode_in_input_order(tiny) -> None:
    texts = ["short", "a much longer text " * 20, "", "mid length text here", "x " * 200]
    encoder = LinqEncoder(tiny, batch_size=2, max_tokens_per_batch=64, show_progress=False)
    ours = encoder.encode_texts(texts, prefix="Instruct: t\nQuery: ")
    reference = tiny.encode(["Instruct: t\nQuery: " + t for t in texts], normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.parametrize(("lengths", "batch_size", "budget"), [
    ([5, 100, 7, 7, 300, 1, 2], 3, 320), ([1] * 50, 8, 1000), ([600, 600], 4, 100), ([], 4, 10),
])
def test_token_budget_batches(lengths: list[int], batch_size: int, budget: int) -> None:
    batches = token_budget_batches(lengths, batch_size, budget)
    flat = [int(i) for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    padded = [len(b) * max(lengths[i] for i in b) for b in batches]
    assert all(len(b) <= batch_size for b in batches)
    assert all(p <= budget or len(b) == 1 for p, b in zip(padded, batches, strict=True))
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(ordered, reverse=True)


def test_encoding_over_two_processes_matches_one(tiny) -> None:
    texts = [f"document number {i} about aerodynamics" * (1 + i % 3) for i in range(24)]
    single = LinqEncoder(tiny, show_progress=False).encode_texts(texts)
    double = LinqEncoder(tiny, devices=["cpu", "cpu"], show_progress=False).encode_texts(texts, batch_size=4)
    np.testing.assert_allclose(double, single, atol=1e-4)


def test_devices_resolution() -> None:
    from linq_eval.models.encoder import resolve_devices

    assert resolve_devices(None) == [] and resolve_devices("cpu") == ["cpu"]
    assert resolve_devices(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    import torch

    assert resolve_devices("all") == [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def test_devices_with_quantisation_is_refused_before_loading() -> None:
    from linq_eval.core.errors import LinqEvalError
    from linq_eval.evaluation.runner import RunSpec, load_encoder

    with pytest.raises(LinqEvalError, match="--devices needs --bits 16"):
        load_encoder(RunSpec(model="/no/such/model", bits=4, devices=["cuda:0", "cuda:1"]))


# -- the cut before tokenization (a 50 MB document was tokenized whole: 7 GB, 6x the time, same embedding) -------
@pytest.fixture(scope="module")
def tokenizers(minilm_dir: Path, smollm2_dir: Path) -> dict:
    from transformers import AutoTokenizer

    from linq_eval.models.build import append_eos

    smol = AutoTokenizer.from_pretrained(smollm2_dir)
    append_eos(smol)  # as build_model sets it up for last-token pooling
    return {"MiniLM": AutoTokenizer.from_pretrained(minilm_dir), "SmolLM2": smol}


@pytest.fixture(scope="module")
def shipped_texts() -> list[str]:
    """Every text of the shipped data as the encoder gets it: documents (text, and title + text), queries and
    STS sentences."""
    from linq_eval.core.local_data import read_beir, read_pairs
    from tests.conftest import DATA

    texts: list[str] = []
    for folder in sorted(p for p in DATA.iterdir() if p.is_dir()):
        if (folder / "corpus.jsonl").is_file():
            data = read_beir(folder)
            texts += [d["text"] for d in data.corpus.values()]
            texts += [f"{d['title']} {d['text']}".strip() for d in data.corpus.values() if d["title"]]
            texts += list(data.queries.values())
        else:
            columns = read_pairs(folder / "test.jsonl", float("-inf"), float("inf"))
            texts += columns["sentence1"] + columns["sentence2"]
    return texts


# SmolLM2's longest token string is 81 characters (a run of '#'), so its first cut is far out and shipped texts
# rarely reach it: a first guess of 8 characters a token (then verified, as always) makes it cut thousands.
@pytest.mark.parametrize(("name", "runs"), [("MiniLM", [(64, None), (512, None)]),
                                            ("SmolLM2", [(128, 8), (512, None)])])
def test_the_cut_changes_no_input_ids_on_the_shipped_data(tokenizers: dict, shipped_texts: list[str],
                                                          name: str, runs: list) -> None:
    """Every shipped text, at several max lengths: a cut text truncates to exactly the ids of the whole text (an
    uncut text is the same string object, so its ids cannot differ)."""
    from linq_eval.models.encoder import bounded_texts

    tokenizer = tokenizers[name]
    cut_total = 0
    for max_length, longest in runs:
        cut = bounded_texts(shipped_texts, tokenizer, max_length, longest=longest)
        changed = [i for i, (a, b) in enumerate(zip(shipped_texts, cut, strict=True)) if a is not b]
        assert all(len(cut[i]) < len(shipped_texts[i]) for i in changed)
        if not changed:
            continue
        whole = tokenizer([shipped_texts[i] for i in changed], truncation=True, max_length=max_length)["input_ids"]
        after = tokenizer([cut[i] for i in changed], truncation=True, max_length=max_length)["input_ids"]
        assert whole == after, max_length
        cut_total += len(changed)
    assert cut_total > 500  # the property was exercised, not vacuous


def test_a_huge_document_reaches_the_tokenizer_bounded(minilm_dir: Path) -> None:
    """A 20 MB document: the tokenizer never receives more than a bounded prefix, the token count stays at the
    max length, and the embedding is that of the whole document (equal to a 200,000-character prefix's, which has
    far more than 512 tokens)."""
    import random

    from linq_eval.core.local_data import read_beir
    from tests.conftest import DATA

    model = build_model(str(minilm_dir), device="cpu", dtype="float32")
    words = " ".join(d["text"] for d in read_beir(DATA / "adi").corpus.values()).split()
    rng = random.Random(0)
    huge = " ".join(rng.choice(words) for _ in range(3_300_000))[:20_000_000]
    assert len(huge) == 20_000_000

    class Recorder:
        """The real tokenizer, recording the longest string it is given."""

        def __init__(self, tokenizer) -> None:
            self.tokenizer, self.longest = tokenizer, 0

        def __call__(self, texts, *args, **kwargs):
            self.longest = max([self.longest, *(len(t) for t in texts)])
            return self.tokenizer(texts, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.tokenizer, name)

    recorder = RecordingModel(model)
    recorder.tokenizer = Recorder(recorder.tokenizer)
    encoder = LinqEncoder(recorder, show_progress=False)
    out = encoder.encode_texts([huge, "a short text"], label="huge documents")
    assert 0 < recorder.tokenizer.longest < 50_000 and max(len(t) for t in recorder.seen) < 50_000
    assert encoder.usage["documents"]["tokens"] <= 2 * model.max_seq_length
    reference = model.encode([huge[:200_000], "a short text"], normalize_embeddings=True)
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_identical_texts_get_bit_identical_vectors(minilm_dir: Path) -> None:
    """Duplicates are encoded once: exact ties stay exact (the evaluator's tie-break decides, not float noise)."""
    from linq_eval.core.instructions import load_instructions
    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder

    encoder = LinqEncoder(build_model(str(minilm_dir), dtype="float32"), load_instructions(None))
    texts = ["a short one", "a much longer text " * 20, "a short one", "x", "a much longer text " * 20]
    out = encoder.encode_texts(texts)
    assert out.shape == (5, 384)
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[4])
    assert not np.array_equal(out[0], out[3])
