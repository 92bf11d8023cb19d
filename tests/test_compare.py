"""``linq-eval compare``: verdicts on constructed per-query scores with known answers, NaN detection on a real
model, and the whole command on a real task (all-MiniLM-L6-v2 at 8 and 16 bits on ADIRetrieval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from linq_eval.compare.analysis import gate_verdicts, noise_floor, paired, rankings, similarity, task_row
from linq_eval.core.errors import LinqEvalError
from tests.conftest import run_cli

MINILM = "pypi:all-MiniLM-L6-v2"


def _scores(values: np.ndarray) -> dict[str, float]:
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def _reference(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, n)


@pytest.mark.parametrize(("n", "shift", "noise", "verdict"), [
    (400, 0.002, 0.01, "equivalent"),     # a shift well inside the margin, measured precisely
    (400, -0.05, 0.01, "different"),      # five points worse: outside the margin
    (12, 0.0, 0.2, "inconclusive"),       # a noisy, small sample cannot decide either way
])
def test_verdicts_on_constructed_scores(n: int, shift: float, noise: float, verdict: str) -> None:
    ref = _reference(n)
    low = ref + shift + np.random.default_rng(1).normal(0, noise, n)
    row = task_row(_scores(low), _scores(ref), margin=0.01, noise=0.0)
    assert row["verdict"] == verdict
    assert row["ci90"][0] <= row["difference"] <= row["ci90"][1]
    assert row["ci95"][0] <= row["ci90"][0] and row["ci90"][1] <= row["ci95"][1]  # the 95% interval is wider
    assert (row["queries_to_decide"] is not None) == (verdict == "inconclusive")
    if verdict == "inconclusive":
        assert row["queries_to_decide"] > n


def test_a_margin_inside_the_noise_floor_is_flagged() -> None:
    ref = _reference(200)
    aa = ref + np.random.default_rng(2).normal(0, 0.12, 200)  # a reference that moves with batching
    noise = noise_floor(_scores(aa), _scores(ref))
    assert noise > 0.01
    row = task_row(_scores(ref + 0.001), _scores(ref), margin=0.01, noise=noise)
    assert row["margin_below_noise"]
    assert not task_row(_scores(ref + 0.001), _scores(ref), margin=0.01, noise=0.0)["margin_below_noise"]


def test_unpaired_runs_are_refused() -> None:
    with pytest.raises(ValueError, match="different queries"):
        paired({"q1": 0.5, "q2": 0.4}, {"q1": 0.5, "q3": 0.4})


def test_similarity_known_answers() -> None:
    rng = np.random.default_rng(0)
    ref = {"queries": rng.normal(size=(8, 16)), "documents": rng.normal(size=(20, 16))}
    same = similarity(ref, ref)
    assert same["cosine_min"] == pytest.approx(1.0) and same["score_pearson"] == pytest.approx(1.0)
    assert same["pairs"] == 160
    noisy = {k: v + rng.normal(scale=0.5, size=v.shape) for k, v in ref.items()}
    worse = similarity(noisy, ref)
    assert worse["cosine_mean"] < 0.95 and worse["score_pearson"] < same["score_pearson"]


def test_rankings_tau_per_task_and_on_average() -> None:
    class Spec:
        systems = [type("S", (), {"label": s})() for s in ("a", "b", "c")]
        bits = [16, 4]
        tasks = ["T1", "T2"]

    rows = [{"system": s, "task": t, "bits": 4, "score": sc, "reference_score": ref}
            for s, t, sc, ref in [("a", "T1", 0.5, 0.5), ("b", "T1", 0.4, 0.4), ("c", "T1", 0.3, 0.3),
                                  ("a", "T2", 0.35, 0.5), ("b", "T2", 0.4, 0.4), ("c", "T2", 0.45, 0.3)]]
    (r,) = rankings(rows, Spec)
    assert r["per_task"] == {"T1": pytest.approx(1.0), "T2": pytest.approx(-1.0)}
    assert r["average"] == pytest.approx(1.0)  # means 0.425 > 0.4 > 0.375 at 4 bits: T2's swap is smaller


def test_gate_verdicts_at_each_precision_are_compared() -> None:
    """A checkpoint the gate passes at 16 bits but cannot decide at 4 is a conclusion 4-bit did not preserve."""
    rng = np.random.default_rng(0)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.8, 400))}
    same = dict(base)
    noisy = {q: v + float(rng.normal(-0.01, 0.1)) for q, v in base.items()}  # 4-bit: a noisier, lower checkpoint
    per_query = {("base", 16): {"T": base}, ("ckpt", 16): {"T": same},
                 ("base", 4): {"T": base}, ("ckpt", 4): {"T": noisy}}
    [g] = gate_verdicts(per_query, ["base", "ckpt"], [16, 4], 0.01)
    assert g["verdicts"] == {16: "PASS", 4: "CANNOT DECIDE"} and g["preserved"] is False
    per_query[("ckpt", 4)] = {"T": same}
    assert gate_verdicts(per_query, ["base", "ckpt"], [16, 4], 0.01)[0]["preserved"] is True
    del per_query[("ckpt", 4)]
    assert gate_verdicts(per_query, ["base", "ckpt"], [16, 4], 0.01)[0]["preserved"] is None


def test_nan_embeddings_are_a_failure_not_a_score(minilm_dir: Path) -> None:
    import torch

    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder, NonFiniteEmbeddings

    model = build_model(str(minilm_dir), bits=16, dtype="float32")
    with torch.no_grad():
        next(model[0].auto_model.parameters()).fill_(float("nan"))  # what an fp16 overflow leaves behind
    encoder = LinqEncoder(model, show_progress=False)
    with pytest.raises(NonFiniteEmbeddings, match="2 of 2 embeddings contain NaN or inf"):
        encoder.encode_texts(["a query", "a document"], label="ADIRetrieval query")


@pytest.mark.parametrize(("args", "message"), [
    (("--bits", "3", "16", "-t", "ADIRetrieval"), "bits=3 is not supported"),
    (("--bits", "16", "-t", "ADIRetrieval", "-m", MINILM), "give at least two precisions"),
    (("--bits", "4", "16", "-t", "STS16", "-m", MINILM), "STS16 is a STS task"),
    (("--bits", "4", "16", "-t", "NoSuchTask", "-m", MINILM), "unknown task 'NoSuchTask'"),
    (("--bits", "4", "16", "-m", MINILM), "no tasks"),
    (("--bits", "4", "16", "-t", "ADIRetrieval", "-m", "pypi:nope"), "unknown offline model"),
    (("--bits", "4", "16", "-t", "ADIRetrieval", "--margin", "0"), "--margin 0.0"),
    (("--bits", "4", "16", "--light", "ADIRetrieval", "-m", MINILM), "was pooled with"),
    (("--bits", "4", "16", "--light", "NoSuchTask", "-m", MINILM), "no light set NoSuchTask-light"),
    (("--bits", "4", "16", "-t", "ADIRetrieval", "-m", MINILM, "--merge-adapter"), "give --adapter"),
])
def test_bad_input_is_one_line_before_any_model_loads(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    result = run_cli("linq-eval", "compare", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_compare_end_to_end_on_a_real_task_resumes_without_recomputing(tmp_path: Path) -> None:
    args = ("compare", "--bits", "8", "16", "-m", MINILM, "-t", "ADIRetrieval", "--output-folder",
            str(tmp_path / "mteb"), "--out", str(tmp_path / "out"))
    first = run_cli("linq-eval", *args)
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    (row,) = report["rows"]
    assert (row["task"], row["bits"], row["queries"]) == ("ADIRetrieval", 8, 35)
    assert row["verdict"] in {"equivalent", "different", "inconclusive"} and row["noise_floor"] is not None
    assert abs(row["reference_score"] - 0.4973) < 0.002  # mteb's published fp32 score, bf16 moves it slightly
    eight = next(p for p in report["precisions"] if p["bits"] == 8)
    assert eight["status"] == "ok" and 0.99 < eight["similarity"]["cosine_mean"] <= 1.0
    assert eight["cost_ratio"]["weight_bytes"] < 1.0  # int8 linear layers
    assert (tmp_path / "out" / "compare.md").is_file() and (tmp_path / "out" / "compare.png").is_file()
    again = run_cli("linq-eval", *args)
    # status lines on stderr: stdout holds the report alone
    assert again.returncode == 0 and again.stderr.count(": stored") == 3, again.stderr
    assert ": stored" not in again.stdout and ": running" not in first.stdout and ": running" in first.stderr
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["rows"] == report["rows"]
    (tmp_path / "out" / "runs" / "pypi_all-MiniLM-L6-v2-8bit.json").unlink()  # interrupted before it was written
    resumed = run_cli("linq-eval", *args)
    assert resumed.returncode == 0 and resumed.stderr.count(": stored") == 2, resumed.stderr
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    eight = next(p for p in report["precisions"] if p["bits"] == 8)
    assert eight["cost"]["resumed_tasks"] == ["ADIRetrieval"] and eight["cost_ratio"] is None  # no ratio of unlike
    assert report["rows"][0]["score"] == row["score"]


def test_pool_conflicts_can_be_overridden_with_a_warning() -> None:
    from linq_eval.compare.driver import CompareSpec, check, make_systems

    spec = CompareSpec(systems=make_systems([MINILM], None), bits=[4, 16], tasks=["ADIRetrieval-light"],
                       allow_pooled=True)
    checked = check(spec)
    assert checked.bits == [16, 4] and checked.pooled_warnings == [
        "ADIRetrieval-light was pooled with sentence-transformers/all-MiniLM-L6-v2 (pypi:all-MiniLM-L6-v2)"]
    with pytest.raises(LinqEvalError, match="--allow-pooled"):
        check(CompareSpec(systems=spec.systems, bits=[4, 16], tasks=["ADIRetrieval-light"]))


def test_compare_is_an_error_when_every_precision_failed(tmp_path: Path) -> None:
    """Before: exit 0 and an empty table when nothing could be compared. NaN weights fail at 16 and at 8 bits."""
    from linq_eval.core.errors import EXIT_ERROR
    from linq_eval.evaluation.checkpoint import degraded_copy

    nan = degraded_copy(MINILM, tmp_path / "nan-weights", noise=float("nan"))
    out = tmp_path / "out"
    result = run_cli("linq-eval", "compare", "--bits", "8", "16", "-m", str(nan), "-t", "ADIRetrieval", "--no-aa",
                     "--output-folder", str(tmp_path / "mteb"), "--out", str(out))
    assert result.returncode == EXIT_ERROR, result.stdout + result.stderr
    *status, line = result.stderr.strip().splitlines()  # the precisions' status lines, then the one error line
    assert all(s.endswith(": running") for s in status), status
    assert line.startswith("linq-eval: error: all 2 precisions failed, nothing was compared") and "NaN" in line, line
    report = json.loads((out / "compare.json").read_text())  # the failures are still on record
    assert report["rows"] == [] and {p["status"] for p in report["precisions"]} == {"failed"}
    assert "16 bits: failed" in (out / "compare.md").read_text()


def test_compare_jobs_are_keyed_by_weights_content(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """A model folder rewritten in place is a new job: its stored precision is never reused for it."""
    import shutil

    from linq_eval.compare.driver import CompareSpec, _jobs, make_systems

    model = tmp_path / "ckpt"
    shutil.copytree(tiny_mistral_dir, model)
    spec = CompareSpec(systems=make_systems([str(model)], None), bits=[16, 4], tasks=["ADIRetrieval"],
                       out=str(tmp_path / "out"), aa=False)
    before = [job for *_, job in _jobs(spec, {})]
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same path and size, other content
    after = [job for *_, job in _jobs(spec, {})]
    assert [j.out for j in before] == [j.out for j in after]
    assert all(b.digests["weights_sha256"] != a.digests["weights_sha256"] for b, a in zip(before, after, strict=True))


def test_compare_dtype_is_pinned_in_every_job(tmp_path: Path) -> None:
    """--dtype pins every precision's dtype (a study's fp32 beside its cells); by default each job takes the
    machine's rule, and a pinned job is another job, never the default one reused."""
    from linq_eval.compare.driver import CompareSpec, _jobs, make_systems
    from linq_eval.compare.job import Job

    spec = CompareSpec(systems=make_systems(["pypi:SmolLM2-135M"], None), bits=[16, 4], tasks=["ADIRetrieval"],
                       out=str(tmp_path / "out"))
    pinned = CompareSpec(**{**spec.__dict__, "dtype": "float32"})
    assert {job.dtype for *_, job in _jobs(pinned, {})} == {"float32"}
    assert {job.dtype for *_, job in _jobs(spec, {})} == {None}
    assert Job(**{**_jobs(spec, {})[0][-1].__dict__}) != _jobs(pinned, {})[0][-1]


def test_merge_adapter_jobs_are_their_own_below_16_bits(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """--merge-adapter: the adapter systems are labelled (merged) and their quantised jobs merge (their own files,
    never the unmerged ones reused); the base model's jobs and every 16-bit job are unchanged. A job stored before
    the option existed is the same job as today's unmerged one."""
    import dataclasses
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from linq_eval.compare.driver import CompareSpec, _finished, _jobs, make_systems

    adapter = tmp_path / "ckpt"
    get_peft_model(AutoModel.from_pretrained(tiny_mistral_dir), LoraConfig(r=2, target_modules=["q_proj"])) \
        .save_pretrained(adapter)
    spec = CompareSpec(systems=make_systems([str(tiny_mistral_dir)], [str(adapter)], merge=True), bits=[16, 4],
                       tasks=["ADIRetrieval"], out=str(tmp_path / "out"))
    jobs = {(label, bits, aa): job for label, bits, aa, job in _jobs(spec, {})}
    merged = {k for k, job in jobs.items() if job.merge_adapter}
    assert merged == {(f"{tiny_mistral_dir}+ckpt (merged)", 4, False)}
    plain = CompareSpec(**{**spec.__dict__, "systems": make_systems([str(tiny_mistral_dir)], [str(adapter)])})
    outs = {job.out for *_, job in _jobs(plain, {})}
    assert not outs & {jobs[k].out for k in merged}

    job = jobs[(str(tiny_mistral_dir), 4, False)]
    old = {k: v for k, v in dataclasses.asdict(job).items() if k != "merge_adapter"}  # written before the option
    per_query = tmp_path / "pq.json"
    per_query.write_text("{}")
    Path(job.out).parent.mkdir(parents=True)
    Path(job.out).write_text(json.dumps({"job": old, "status": "ok", "per_query": {"ADIRetrieval": str(per_query)}}))
    assert _finished(job) is not None
