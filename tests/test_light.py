"""Light sets: deterministic manifests, mteb tasks that load only their ids, exact properties, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mteb
import numpy as np
import pytest

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.light_manifest import load_manifest, write_manifest
from linq_eval.evaluation.systems import System, task_data
from linq_eval.light.build import BuildSpec, build, check_spec, sample_queries
from linq_eval.light.validate import fidelity, light_scores, manifest_for, prepare
from linq_eval.registry import register_light
from linq_eval.tasks.light import write_descriptive_stats
from tests.conftest import DATA, REPO, run_cli

MINILM = "pypi:all-MiniLM-L6-v2"
REPO_LIGHT = REPO / "tasks_light"
SPEC = BuildSpec("ADIRetrieval", queries=20, depth=10, retrievers=f"bm25,{MINILM}", seed=3)


@pytest.fixture(scope="module")
def adi_manifest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("light")
    write_manifest(build(SPEC), out)
    return out


@pytest.fixture
def registered(adi_manifest_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Our ADI light set registered in mteb for one test; the shipped ones are restored afterwards."""
    monkeypatch.setenv("LINQ_LIGHT_DIR", str(adi_manifest_dir))
    register_light(adi_manifest_dir)
    write_descriptive_stats("ADIRetrieval-light", adi_manifest_dir)
    yield adi_manifest_dir
    monkeypatch.delenv("LINQ_LIGHT_DIR")
    register_light()


def test_build_is_deterministic_and_keeps_every_relevant_document(adi_manifest_dir: Path) -> None:
    path = adi_manifest_dir / "ADIRetrieval-light.json"
    manifest = load_manifest(path)
    assert build(SPEC).to_json() == path.read_text()  # same inputs -> byte-identical manifest
    data = task_data(mteb.get_task("ADIRetrieval"))
    assert len(manifest.query_ids) == 20 and manifest.counts["full_queries"] == 35
    kept = set(manifest.corpus_ids)
    assert all(d in kept for q in manifest.query_ids for d, g in data.qrels[q].items() if g > 0)
    assert manifest.corpus_ids == sorted(manifest.corpus_ids) and manifest.query_ids == sorted(manifest.query_ids)
    assert manifest.pooled_canonicals() == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert manifest.data["kind"] == "local" and len(manifest.data["sha256"]) == 64
    assert "text" not in path.read_text()  # ids only, never text
    other_seed = build(BuildSpec(**{**SPEC.__dict__, "seed": 4}))
    assert other_seed.query_ids != manifest.query_ids


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: {**m, "corpus_ids": m["corpus_ids"][:-1]}, "checksum does not match"),
    (lambda m: {**m, "schema_version": 99}, "schema_version 99"),
    (lambda m: {**m, "parameters": {**m["parameters"], "depth": 0}}, "not a light manifest"),
])
def test_a_damaged_manifest_is_one_clear_line(adi_manifest_dir: Path, tmp_path: Path, edit, message: str) -> None:
    raw = json.loads((adi_manifest_dir / "ADIRetrieval-light.json").read_text())
    bad = tmp_path / "ADIRetrieval-light.json"
    bad.write_text(json.dumps(edit(raw)))
    with pytest.raises(LinqEvalError, match=message) as info:
        load_manifest(bad)
    assert "\n" not in str(info.value)
    bad.write_text("{not json")
    with pytest.raises(LinqEvalError, match="not valid JSON"):
        load_manifest(bad)


def test_light_task_is_an_mteb_task_that_loads_only_its_ids(registered: Path) -> None:
    from mteb.get_tasks import _SIMILAR_TASKS

    manifest = load_manifest(registered / "ADIRetrieval-light.json")
    task = mteb.get_task("ADIRetrieval-light")
    parent = mteb.get_task("ADIRetrieval")
    assert isinstance(task, type(parent)) and task.metadata.adapted_from == ["ADIRetrieval"]
    assert "ADIRetrieval-light" in _SIMILAR_TASKS["ADIRetrieval"]
    for field in ("prompt", "main_score", "type", "eval_langs", "dataset"):
        assert getattr(task.metadata, field) == getattr(parent.metadata, field)
    assert task.ignore_identical_ids == parent.ignore_identical_ids
    task.load_data()
    split = task.dataset["default"]["test"]
    assert sorted(split["corpus"]["id"]) == manifest.corpus_ids
    assert sorted(split["queries"]["id"]) == manifest.query_ids
    assert task.metadata.descriptive_stats["test"]["num_documents"] == len(manifest.corpus_ids)


def test_light_task_is_instructed_as_its_parent(registered: Path) -> None:
    from mteb.types import PromptType

    from linq_eval.core.instructions import load_instructions
    from linq_eval.models.encoder import LinqEncoder

    encoder = LinqEncoder(None, load_instructions())
    light, parent = mteb.get_task("ADIRetrieval-light").metadata, mteb.get_task("ADIRetrieval").metadata
    assert encoder.prefix_for(light, PromptType.query) == encoder.prefix_for(parent, PromptType.query) != ""


def test_mteb_evaluation_of_the_light_task_equals_the_restricted_full_scores(registered: Path,
                                                                              tmp_path: Path) -> None:
    """mteb's own search and evaluation on ADIRetrieval-light == the validator's restricted score matrix."""
    from linq_eval.evaluation.runner import RunSpec, run

    run(RunSpec(model=MINILM, dtype="float32"), ["ADIRetrieval-light"], tmp_path)
    stored = json.loads(next((tmp_path / "per_query").rglob("ADIRetrieval-light.json")).read_text())
    tp = prepare(mteb.get_task("ADIRetrieval"), (System("minilm", MINILM),), pool_refs=(MINILM,))
    ours = light_scores(tp, load_manifest(registered / "ADIRetrieval-light.json"))["minilm"]
    theirs = stored["scores"]["test"]["default"]
    assert set(ours) == set(theirs)
    assert max(abs(ours[q] - theirs[q]) for q in ours) < 1e-4


@pytest.fixture(scope="module")
def medline_panel():
    panel = (System("bm25", "bm25"), System("tfidf", "tfidf"), System("minilm", MINILM),
             System("minilm-64tok", MINILM, max_length=64),
             System("random", MINILM, max_length=64, random_init=True))  # 64 tokens: the property needs no more
    return prepare(mteb.get_task("MedlineRetrieval"), panel, pool_refs=("bm25", MINILM))


@pytest.mark.parametrize("depth", [10, 30])
def test_exact_properties_of_dense_systems_on_a_light_corpus(medline_panel, depth: int) -> None:
    """docs/stats.md: no dense system scores lower on the light corpus (same queries, all relevant documents
    kept), and a dense system that pooled at depth >= 10 scores exactly the same nDCG@10."""
    manifest = manifest_for(medline_panel, 20, depth, f"bm25,{MINILM}", seed=1)
    light = light_scores(medline_panel, manifest)
    for name in ("minilm", "minilm-64tok", "random"):
        full = medline_panel.full[name]
        gaps = np.array([light[name][q] - full[q] for q in manifest.query_ids])
        assert (gaps >= -1e-9).all(), name
        if name == "minilm":
            assert np.abs(gaps).max() < 1e-9  # pooled, depth >= 10: identical
    row = fidelity(medline_panel, manifest)
    minilm = next(s for s in row["systems"] if s["name"] == "minilm")
    assert minilm["pooled"] and abs(minilm["inflation"]) < 1e-9  # BM25 pooled too, but its IDF moves
    assert row["docs"] < row["full_docs"] and 0 < row["token_fraction"] < 1


def test_build_from_an_mteb_task_laid_out_like_mtebs_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LegalBenchCorporateLobbying is mteb's own task, read from a local copy: the build is unchanged; a light
    set built on that copy refuses other data."""
    manifest = build(BuildSpec("LegalBenchCorporateLobbying", queries=30, depth=5, retrievers="bm25"))
    assert manifest.counts["full_corpus"] == 319 and manifest.counts["queries"] == 30
    out = tmp_path / "light"
    write_manifest(manifest, out)
    changed = tmp_path / "data" / "LegalBenchCorporateLobbying"
    shutil.copytree(DATA / "LegalBenchCorporateLobbying", changed)
    lines = (changed / "corpus.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "text": first["text"] + " (edited)"})
    (changed / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("LINQ_LIGHT_DIR", str(out))
    monkeypatch.setenv("LINQ_DATA_DIR", str(tmp_path / "data"))
    try:
        register_light(out)
        with pytest.raises(LinqEvalError, match="built on other data") as info:
            mteb.get_task("LegalBenchCorporateLobbying-light").load_data()
        assert "\n" not in str(info.value)
    finally:
        monkeypatch.delenv("LINQ_LIGHT_DIR")
        register_light()


def test_sample_is_seeded_sorted_and_never_empty() -> None:
    ids = [f"q{i}" for i in range(50)]
    assert sample_queries(ids, 10, 0) == sample_queries(list(reversed(ids)), 10, 0)
    assert sample_queries(ids, 10, 0) != sample_queries(ids, 10, 1)
    assert sample_queries(ids, 500, 0) == sorted(ids)
    with pytest.raises(LinqEvalError, match="no judged test queries"):
        sample_queries([], 10, 0)


@pytest.mark.parametrize(("spec", "message"), [
    (BuildSpec("ADIRetrieval", queries=0), "--queries 0"),
    (BuildSpec("ADIRetrieval", depth=-1), "--depth -1"),
    (BuildSpec("ADIRetrieval", retrievers=","), "--retrievers is empty"),
    (BuildSpec("ADIRetrieval", retrievers="bm25,bm25"), "names a retriever twice"),
    (BuildSpec("ADIRetrieval-light"), "already a light set"),
])
def test_bad_build_input_is_refused_before_loading(spec: BuildSpec, message: str) -> None:
    with pytest.raises(LinqEvalError, match=message):
        check_spec(spec)


@pytest.mark.parametrize(("args", "message"), [
    (("light", "build", "NoSuchTask"), "unknown task 'NoSuchTask'"),
    (("light", "build", "ADIRetrieval", "--depth", "0"), "--depth 0"),
    (("light", "build", "ADIRetrieval", "--queries", "-5"), "--queries -5"),
    (("light", "build", "ADIRetrieval", "--data-dir", "/nonexistent"), "--data-dir /nonexistent: no such folder"),
    (("light", "build", "STS16"), "STS16 is a STS task"),
    (("light", "build", "CQADupstackRetrieval"), "aggregates 12 tasks: build each of them (CQADupstackAndroid"),
    (("light", "build", "ADIRetrieval", "--split", "dev"), "--split dev: ADIRetrieval evaluates on test"),
    (("light", "validate", "NoSuchTask"), "no such light manifest"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_cli("linq-eval", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_build_with_a_missing_data_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = run_cli("linq-eval", "light", "build", "ADIRetrieval", "--data-dir", str(tmp_path / "data"),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "adi does not exist" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_pool_independence_is_enforced(adi_manifest_dir: Path) -> None:
    from linq_eval.core.light_manifest import require_pool_independence

    manifest = load_manifest(adi_manifest_dir / "ADIRetrieval-light.json")
    pooled = {"baseline": "sentence-transformers/all-MiniLM-L6-v2", "candidate": "my/checkpoint"}
    with pytest.raises(LinqEvalError, match="pooled with sentence-transformers/all-MiniLM-L6-v2 .baseline.*"
                                           "--allow-pooled"):
        require_pool_independence([manifest], pooled)
    assert require_pool_independence([manifest], pooled, allow_pooled=True) == [
        "ADIRetrieval-light was pooled with sentence-transformers/all-MiniLM-L6-v2 (baseline)"]
    assert require_pool_independence([manifest], {"a": "my/checkpoint", "b": "other/model"}) == []


def _row(task: str, retrievers: str, depth: int, counts: list[int], docs: int, a_rev: int = 0, wrong: int = 0,
         tau: float = 1.0) -> dict:
    return {"task": task, "retrievers": retrievers.split(","), "depth": depth, "query_counts": counts,
            "docs": docs, "full_docs": 1000, "doc_fraction": docs / 1000,
            "vs_full_corpus": {"reversals": a_rev, "kendall_tau": tau},
            "vs_full_task": {"wrong_direction": wrong, "reversals": 0, "kendall_tau": 1.0},
            "sampling_only": {"reversals": 0, "kendall_tau": 1.0}}


def test_defaults_are_the_cheapest_configuration_meeting_the_targets_everywhere() -> None:
    from linq_eval.light.validate import UNION_TASK, choose_defaults, summarise_sweep

    rows = [
        _row("A", "bm25", 10, [50], 50),                    # cheapest, but too few queries
        _row("A", "bm25", 10, [200, 10**6], 100, a_rev=1),  # a reversal on one task rules it out
        _row(UNION_TASK, "bm25", 10, [200, 10**6], 90),
        _row("A", "bm25", 30, [200, 10**6], 200),
        _row(UNION_TASK, "bm25", 30, [200, 10**6], 100),
        _row("A", "bm25", 100, [200, 10**6], 400, wrong=1),  # a wrong-direction call rules it out
        _row("A", "bm25,m", 10, [200, 10**6], 150, tau=0.8),  # cheaper, but below the secondary tau target
        _row(UNION_TASK, "bm25,m", 10, [200, 10**6], 90, tau=0.8),
    ]
    summary = summarise_sweep(rows)
    assert {(c["retrievers"], c["depth"], c["queries"]) for c in summary} == {
        ("bm25", 10, 50), ("bm25", 10, 200), ("bm25", 10, 10**6), ("bm25", 30, 200), ("bm25", 30, 10**6),
        ("bm25", 100, 200), ("bm25", 100, 10**6), ("bm25,m", 10, 200), ("bm25,m", 10, 10**6)}
    chosen = choose_defaults(summary)
    assert (chosen["depth"], chosen["queries"], chosen["union_doc_reduction"]) == (30, 10**6, 10.0)
    assert choose_defaults(summary, min_queries=50)["queries"] == 50
    assert choose_defaults(summary, tau=0.75)["retrievers"] == "bm25,m"


def _hostile(raw: dict, **changes: object) -> str:
    """A manifest edited by hand with its checksum recomputed, as a hostile user would."""
    import hashlib

    from linq_eval.core.light_manifest import _canonical

    body = {k: v for k, v in {**raw, **changes}.items() if k != "checksum"}
    return _canonical({**body, "checksum": hashlib.sha256(_canonical(body).encode()).hexdigest()})


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": "../../x"}, r"name '../../x' is not 'ADIRetrieval-light'"),
    ({"name": "/tmp/x-light"}, r"name '/tmp/x-light' is not"),
    ({"source_task": "../ADIRetrieval", "name": "../ADIRetrieval-light"}, r"field 'source_task': '../ADIRetrieval'"),
    ({"split": "../../../../tmp/evil"}, r"field 'split': '../../../../tmp/evil' is not a plain name"),
    ({"split": "te\x00st"}, r"field 'split'"),
    ({"subset": ".."}, r"field 'subset': '..' is not a plain name"),
    ({"query_ids": ["1", "1"]}, r"field 'query_ids': holds '1' twice"),
    ({"corpus_ids": []}, r"field 'corpus_ids': keeps no ids"),
    ({"counts": {"queries": 20}}, r"counts lacks"),
    ({"retrievers": [{"name": "x", "kind": "evil", "canonical": "x", "fingerprint": {}}]}, r"retrievers.0.kind"),
])
def test_a_hostile_manifest_with_a_valid_checksum_is_refused(adi_manifest_dir: Path, tmp_path: Path,
                                                             changes: dict, message: str) -> None:
    raw = json.loads((adi_manifest_dir / "ADIRetrieval-light.json").read_text())
    bad = tmp_path / "ADIRetrieval-light.json"
    bad.write_text(_hostile(raw, **changes))
    with pytest.raises(LinqEvalError, match=message) as info:
        load_manifest(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


@pytest.mark.parametrize("content", [b"[1, 2]", b'"x"', b"\xff\xfe{}", b"[" * 100_000, b""])
def test_a_manifest_that_is_not_an_object_is_one_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "ADIRetrieval-light.json"
    bad.write_bytes(content)
    with pytest.raises(LinqEvalError, match="rebuild it") as info:
        load_manifest(bad)
    assert "\n" not in str(info.value)


def test_names_from_the_command_line_cannot_leave_the_light_folder(tmp_path: Path) -> None:
    from linq_eval.core.light_manifest import manifest_path
    from linq_eval.tasks.light import stats_path

    for name in ("../../etc/passwd", "/abs-light", "a/b-light", ".."):
        with pytest.raises(LinqEvalError, match="is not a light set name"):
            manifest_path(name, tmp_path)
        with pytest.raises(LinqEvalError, match="is not a light set name"):
            stats_path(name, tmp_path)


def test_the_cli_refuses_a_traversal_manifest_and_writes_nothing_outside(adi_manifest_dir: Path,
                                                                         tmp_path: Path) -> None:
    """Before: a manifest named ``../../x`` (checksum recomputed) registered as task ``../../x`` and `run` wrote
    its result, per-query and model_meta files two folders above --output-folder."""
    light = tmp_path / "light"
    light.mkdir()
    raw = json.loads((adi_manifest_dir / "ADIRetrieval-light.json").read_text())
    (light / "ADIRetrieval-light.json").write_text(_hostile(raw, name="../../x", split="../../../../x"))
    out = tmp_path / "a" / "b" / "out"
    before = sorted(tmp_path.rglob("*"))
    for task in ("ADIRetrieval-light", "../../x"):
        result = run_cli("linq-eval", "run", "-m", MINILM, "-t", task, "--output-folder", str(out),
                         env={"LINQ_LIGHT_DIR": str(light)})
        assert result.returncode == 2, result.stderr
        error = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(error) == 1 and "unknown task" not in error[0], result.stderr
        if task == "ADIRetrieval-light":  # the manifest's own reason
            assert "ADIRetrieval-light.json" in error[0] and "field 'split'" in error[0], result.stderr
        else:
            assert "task '../../x' is not a task name" in error[0], result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def _light_dir_with(tmp_path: Path, files: dict[str, str]) -> Path:
    light = tmp_path / "light"
    light.mkdir()
    for name, text in files.items():
        (light / name).write_text(text)
    return light


def test_two_manifests_claiming_one_name_are_refused_naming_both(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the later file silently shadowed the earlier one, so -t MedlineRetrieval-light could score ADI."""
    from linq_eval.tasks.light import REJECTED, check_requested

    shipped = (REPO_LIGHT / "MedlineRetrieval-light.json").read_text()
    adi = json.loads((REPO_LIGHT / "ADIRetrieval-light.json").read_text())
    light = _light_dir_with(tmp_path, {"MedlineRetrieval-light.json": shipped, "Old-light.json": shipped,
                                       "Zzz-light.json": _hostile(adi, name="MedlineRetrieval-light")})
    monkeypatch.setenv("LINQ_LIGHT_DIR", str(light))
    try:
        names = [c.metadata.name for c in register_light(light)]
        assert "MedlineRetrieval-light" not in names
        with pytest.raises(LinqEvalError, match=r"claimed by two manifests, .*MedlineRetrieval-light.json and "
                                                r".*Old-light.json") as info:
            check_requested(["MedlineRetrieval-light"])
        assert "\n" not in str(info.value)
        assert "is not 'ADIRetrieval-light'" in REJECTED["Zzz-light"]  # a name must be its source task's
    finally:
        monkeypatch.delenv("LINQ_LIGHT_DIR")
        register_light()


def test_a_split_the_source_task_does_not_evaluate_is_refused(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from linq_eval.tasks.light import check_requested

    adi = json.loads((REPO_LIGHT / "ADIRetrieval-light.json").read_text())
    light = _light_dir_with(tmp_path, {"ADIRetrieval-light.json": _hostile(adi, split="train")})
    monkeypatch.setenv("LINQ_LIGHT_DIR", str(light))
    try:
        assert register_light(light) == []
        with pytest.raises(LinqEvalError, match=r"split 'train' is not one of ADIRetrieval's evaluation splits"):
            check_requested(["ADIRetrieval-light"])
    finally:
        monkeypatch.delenv("LINQ_LIGHT_DIR")
        register_light()


def test_light_files_are_written_atomically_inside_their_folder(adi_manifest_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(adi_manifest_dir / "ADIRetrieval-light.json")
    out = tmp_path / "out"
    path = write_manifest(manifest, out)
    assert path == out / "ADIRetrieval-light.json" and [p.name for p in out.iterdir()] == [path.name]
    with pytest.raises(LinqEvalError, match="not a light set name"):
        write_manifest(manifest.model_copy(update={"name": "../escaped"}), out)  # model_copy skips validation
    assert not (tmp_path / "escaped.json").exists()


def test_build_samples_the_queries_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pooling runs and the manifest use one draw of the sample (it was drawn twice)."""
    import linq_eval.light.build as light_build

    calls = []
    real = light_build.sample_queries
    monkeypatch.setattr(light_build, "sample_queries", lambda *a, **k: calls.append(a) or real(*a, **k))
    manifest = build(BuildSpec(task="ADIRetrieval", queries=5, depth=3, retrievers="bm25"))
    assert len(calls) == 1 and len(manifest.query_ids) == 5
