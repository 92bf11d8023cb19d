"""mteb's own tasks from local copies: exact reproduction of published scores, provenance, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mteb
import pytest

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.local_data import data_sha256
from linq_eval.evaluation.runner import RunSpec, check_stored_results, check_tasks, load_encoder, run
from linq_eval.tasks.local_source import TYPE_LOADERS, LocalSourceMixin, recorded_local_sha256
from tests.conftest import DATA, run_cli

LOCAL_MTEB_TASKS = {"LegalBenchCorporateLobbying": (319, 340), "STSBenchmark": 1379, "SICK-R": 9927, "STS12": 3108,
                    "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186, "BIOSSES": 100}


@pytest.mark.parametrize("name", sorted(LOCAL_MTEB_TASKS))
def test_mtebs_own_task_loads_from_the_local_copy(name: str) -> None:
    task = mteb.get_task(name)
    assert isinstance(task, LocalSourceMixin) and type(task).__name__ == type(task).__mro__[2].__name__
    original = type(task).__mro__[2]
    assert task.metadata == original.metadata  # everything but the data source stays mteb's
    task.load_data()
    assert task.local_source["folder"].endswith(name) and len(task.local_source["sha256"]) == 64
    if task.metadata.type == "STS":
        assert task.dataset["test"].num_rows == LOCAL_MTEB_TASKS[name]
    else:
        split = task.dataset["default"]["test"]
        assert (len(split["corpus"]), len(split["queries"])) == LOCAL_MTEB_TASKS[name]


def test_one_loader_per_task_type() -> None:
    assert set(TYPE_LOADERS) == {"Retrieval", "STS"}
    assert all(isinstance(t, LocalSourceMixin) for t in mteb.get_tasks(task_types=["STS"], languages=["eng"]))


@pytest.mark.parametrize("dtype", ["float32"])
def test_reproduces_published_minilm_scores(dtype: str, tmp_path: Path) -> None:
    """mteb's public results for all-MiniLM-L6-v2: STS16 0.78989, BIOSSES 0.81640 (fp32 runs)."""
    published = {"STS16": 0.7898945343973262, "BIOSSES": 0.8164041444909368}
    results = run(RunSpec(model="pypi:all-MiniLM-L6-v2", dtype=dtype), list(published), tmp_path)
    assert results.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    for result in results.task_results:
        assert abs(result.get_score() - published[result.task_name]) <= 0.001, result.task_name
    stored = sorted(tmp_path.rglob("STS16.json"))
    assert len(stored) == 1 and "sentence-transformers__all-MiniLM-L6-v2" in str(stored[0])
    assert recorded_local_sha256(json.loads(stored[0].read_text())) == data_sha256(DATA / "STS16")


def test_task_without_local_copy_fails_offline_naming_the_variable() -> None:
    with pytest.raises(LinqEvalError, match="LINQ_DATA_DIR") as info:
        mteb.get_task("SciFact").load_data()
    assert "\n" not in str(info.value)


@pytest.fixture
def sts16_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(DATA / "STS16", tmp_path / "STS16")
    monkeypatch.setenv("LINQ_DATA_DIR", str(tmp_path))
    return tmp_path / "STS16" / "test.jsonl"


def _rewrite_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = text
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _rewrite_line(p, 7, "{broken\n"), r"test.jsonl:7: not valid JSON"),
        (lambda p: _rewrite_line(p, 9, '{"sentence1": "a", "score": 1.0}\n'), r"test.jsonl:9: missing field"),
        (lambda p: _rewrite_line(p, 3, '{"sentence1": "a", "sentence2": "b", "score": 7.5}\n'),
         r"test.jsonl:3: score 7.5 is outside the task's range \[0, 5\]"),
        (lambda p: _rewrite_line(p, 4, '{"sentence1": "a", "sentence2": "b", "score": "high"}\n'),
         r"test.jsonl:4: score 'high' is not a number"),
        (lambda p: p.write_text(""), r"test.jsonl is empty"),
        (lambda p: p.unlink(), r"test.jsonl is missing"),
        # accepted before: True is 1.0 to float(), and a null sentence
        (lambda p: _rewrite_line(p, 5, '{"sentence1": "a", "sentence2": "b", "score": true}\n'),
         r"test.jsonl:5: score True is not a number"),
        (lambda p: _rewrite_line(p, 6, '{"sentence1": null, "sentence2": "b", "score": 1.0}\n'),
         r"test.jsonl:6: sentence1 must be a string, got NoneType"),
        (lambda p: p.write_bytes(p.read_bytes() + b'{"sentence1": "\xe9"}\n'), r"test.jsonl:1187: not UTF-8"),
    ],
)
def test_bad_sts_files_are_one_clear_line(sts16_copy: Path, damage, message: str) -> None:
    damage(sts16_copy)
    with pytest.raises(LinqEvalError, match=message) as info:
        mteb.get_task("STS16").load_data()
    assert "\n" not in str(info.value)


def test_changed_data_does_not_resume_over_stored_results(sts16_copy: Path, tmp_path: Path) -> None:
    spec = RunSpec(model="pypi:all-MiniLM-L6-v2")
    cache = tmp_path / "cache"
    run(spec, ["STS16"], cache)
    encoder = load_encoder(spec)
    check_stored_results(encoder, check_tasks(["STS16"]), cache)  # same data: fine
    _rewrite_line(sts16_copy, 1, '{"sentence1": "a changed pair", "sentence2": "another one", "score": 2.0}\n')
    with pytest.raises(LinqEvalError, match="stored results were computed on data sha256"):
        check_stored_results(encoder, check_tasks(["STS16"]), cache)
    with pytest.raises(LinqEvalError, match="rerun with --overwrite"):
        run(spec, ["STS16"], cache)
    assert run(spec, ["STS16"], cache, overwrite=True).task_results[0].task_name == "STS16"


def test_mteb_run_sts16_with_the_linq_decoder_path(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """Symmetric task, end to end through mteb's CLI: every input instructed, local data recorded."""
    out = tmp_path / "cache"
    res = run_cli("mteb", "run", "-m", "linq", "-t", "STS16", "--output-folder", str(out),
                  env={"LINQ_MODEL": str(tiny_mistral_dir)})
    assert res.returncode == 0, res.stderr[-3000:]
    files = sorted(out.rglob("STS16.json"))
    assert len(files) == 1 and "Linq-AI-Research__Linq-Embed-Mistral" in str(files[0])
    data = json.loads(files[0].read_text())
    assert -1.0 <= data["scores"]["test"][0]["main_score"] <= 1.0
    assert recorded_local_sha256(data) == data_sha256(DATA / "STS16")


def test_a_task_name_that_is_not_a_folder_name_never_reaches_the_data_dir() -> None:
    from linq_eval.tasks.local_source import local_folder

    assert local_folder("STS16") is not None
    for name in ("../STS16", "/etc", "STS16/../../x", ""):
        with pytest.raises(LinqEvalError, match="is not a task name"):
            local_folder(name)
