"""``linq-eval baseline`` and ``linq-eval gate``: the decision rule on constructed scores, the baseline file, and
real gates of all-MiniLM-L6-v2 checkpoints (same weights, degraded weights, NaN weights, an adapter, a merged
directory) against real baselines on real collections through mteb."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from linq_eval.core.errors import EXIT_CANNOT_DECIDE, EXIT_ERROR, EXIT_FAIL, EXIT_OK, LinqEvalError
from linq_eval.core.gate_rule import GateRule, decide

REPO = Path(__file__).resolve().parents[1]
MINILM = "pypi:all-MiniLM-L6-v2"
FAST = GateRule(n_resamples=2000)


# -- the rule, on constructed per-query scores ------------------------------------------------------------
def _scores(n: int, shift: float, sd: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n)
    return base + shift + rng.normal(0, sd, n), base


def test_clear_pass_when_a_drop_beyond_delta_is_ruled_out() -> None:
    d = decide({"A": _scores(800, 0.0, 0.02, 0), "B": _scores(600, 0.002, 0.02, 1)}, FAST)
    assert d.verdict == "PASS" and d.exit_code == EXIT_OK == 0
    assert d.ci_low > -0.01 and d.queries_to_decide is None


def test_clear_fail_when_the_whole_ci_is_below_minus_delta() -> None:
    d = decide({"A": _scores(800, -0.05, 0.05, 0), "B": _scores(600, -0.04, 0.05, 1)}, FAST)
    assert d.verdict == "FAIL" and d.exit_code == EXIT_FAIL == 1
    assert d.ci_high < -0.01


def test_underpowered_cannot_decide_rather_than_pass() -> None:
    """A 2-point drop on 30 noisy queries: not significant, so a significance gate would pass it."""
    cand, base = _scores(30, -0.02, 0.15, 3)
    d = decide({"A": (cand, base)}, FAST)
    assert d.tasks[0].p_value > 0.05  # what a significance-only gate would have passed
    assert d.verdict == "CANNOT DECIDE" and d.exit_code == EXIT_CANNOT_DECIDE == 3
    assert d.mde > 0.02 and d.queries_to_decide and d.queries_to_decide > 30
    assert any("detect drops" in r for r in d.reasons)


def test_one_task_with_a_holm_significant_large_drop_fails_the_gate() -> None:
    good = [_scores(400, 0.03, 0.02, i) for i in range(3)]
    bad = _scores(400, -0.06, 0.05, 9)
    d = decide({"A": good[0], "B": good[1], "C": good[2], "D": bad}, FAST)
    assert d.ci_low > -0.01  # the macro alone would pass
    assert d.verdict == "FAIL"
    assert [t.task for t in d.tasks if t.regression] == ["D"]


def test_holm_protects_against_many_small_noisy_tasks() -> None:
    """A large drop that is significant alone but not after Holm over 8 tasks is not a regression."""
    tasks = {f"T{i}": _scores(400, 0.0, 0.01, i) for i in range(7)}
    cand, base = _scores(12, -0.05, 0.08, 42)
    tasks["small"] = (cand, base)
    d = decide(tasks, FAST)
    small = next(t for t in d.tasks if t.task == "small")
    assert small.p_holm >= small.p_value
    assert small.regression == (small.p_holm < 0.05 and small.difference < -0.02)


def test_identical_scores_pass_and_nan_or_unpaired_cannot_decide() -> None:
    base = np.linspace(0, 1, 20)
    assert decide({"A": (base, base)}, FAST).verdict == "PASS"
    nan = base.copy()
    nan[3] = np.nan
    d = decide({"A": (nan, base)}, FAST)
    assert d.verdict == "CANNOT DECIDE" and "NaN" in d.reasons[0]
    assert decide({"A": (base[:10], base)}, FAST).verdict == "CANNOT DECIDE"
    assert decide({}, FAST).verdict == "CANNOT DECIDE"


def test_rule_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="delta"):
        GateRule(delta=0)
    with pytest.raises(ValueError, match="alpha"):
        GateRule(alpha=0.7)
    with pytest.raises(ValueError, match="method"):
        GateRule(method="basic")  # type: ignore[arg-type]


def test_the_interval_method_is_a_parameter_and_bca_by_default() -> None:
    pairs = {"A": _scores(40, -0.01, 0.1, 5)}
    bca, percentile = decide(pairs, FAST), decide(pairs, GateRule(n_resamples=2000, method="percentile"))
    assert bca.rule.method == "bca" and "95% BCa paired-bootstrap CI" in bca.rule.describe()
    assert bca.difference == percentile.difference and (bca.ci_low, bca.ci_high) != (percentile.ci_low,
                                                                                     percentile.ci_high)


def test_exit_codes_are_one_set_of_constants() -> None:
    """0 PASS, 1 FAIL, 2 error (argparse's code for bad usage too), 3 CANNOT DECIDE, 130 interrupted."""
    from linq_eval.cli import build_parser
    from linq_eval.core import errors
    from linq_eval.core.gate_rule import EXIT_CODES

    assert EXIT_CODES == {"PASS": 0, "FAIL": 1, "CANNOT DECIDE": 3, "ERROR": 2}
    assert (errors.EXIT_OK, errors.EXIT_FAIL, errors.EXIT_ERROR, errors.EXIT_CANNOT_DECIDE,
            errors.EXIT_INTERRUPTED) == (0, 1, 2, 3, 130)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["gate"])  # argparse: a usage error is the same code
    assert exc.value.code == EXIT_ERROR
    for text in ((REPO / "tox.ini").read_text(), (REPO / "examples" / "github-actions-gate.yml").read_text()):
        assert "3 CANNOT DECIDE" in text and "2 CANNOT DECIDE" not in text


# -- outputs ----------------------------------------------------------------------------------------------
def _report(verdict_shift: float) -> dict:
    from linq_eval.gate.driver import GateReport

    d = decide({"A": _scores(300, verdict_shift, 0.02, 0), "B": _scores(300, verdict_shift, 0.02, 1)}, FAST)
    return GateReport("b", {"ref": "ckpt", "kind": "model"}, d, {}).to_dict()


def test_junit_has_a_case_per_task_and_fails_or_errors_the_overall_case() -> None:
    from linq_eval.gate.report import junit, markdown

    for shift, verdict, tag in ((0.0, "PASS", None), (-0.05, "FAIL", "failure")):
        r = _report(shift)
        assert r["verdict"] == verdict
        suite = ET.fromstring(junit(r).split("?>", 1)[1])
        cases = suite.findall("testcase")
        assert [c.get("name") for c in cases] == ["A", "B", "overall (macro)"]
        assert (cases[-1].find("failure") is not None) == (tag == "failure")
        assert verdict in markdown(r)
    from linq_eval.core.gate_rule import GateDecision
    from linq_eval.gate.driver import GateReport

    nan = float("nan")
    r = GateReport("b", {"ref": "x", "kind": "model"}, GateDecision("CANNOT DECIDE", FAST, nan, nan, nan, nan, [],
                                                                    ["no data"]), {}).to_dict()
    json.dumps(r, allow_nan=False)  # strict JSON: NaN becomes null
    overall = ET.fromstring(junit(r).split("?>", 1)[1]).findall("testcase")[-1]
    assert overall.find("error") is not None
    assert _report(0.0)["interval"] == "bca" and _report(0.0)["error"] is None
    from linq_eval.gate.report import error_record

    r = error_record("ckpt", "b", "b.json: not UTF-8 (byte 0)", delta=0.01, alpha=0.05)
    json.dumps(r, allow_nan=False)
    suite = ET.fromstring(junit(r).split("?>", 1)[1])
    assert suite.get("errors") == "1" and suite.get("failures") == "0"
    error = suite.find("testcase[@name='overall (macro)']/error")
    assert error is not None and error.get("type") == "error" and "not UTF-8" in error.get("message")
    assert markdown(r).startswith("### 🛑 linq-eval gate: ERROR") and "exit 2" in markdown(r)


# -- the baseline file ------------------------------------------------------------------------------------
@pytest.fixture()
def stored(tmp_path: Path) -> Path:
    shutil.copy(REPO / "results" / "baselines" / "minilm-ci.json", tmp_path / "minilm-ci.json")
    return tmp_path


def test_the_stored_baseline_verifies(stored: Path) -> None:
    from linq_eval.core.baseline import load_baseline

    b = load_baseline("minilm-ci", stored)
    assert set(b.tasks) == {"ADIRetrieval", "LegalBenchCorporateLobbying"}
    for scores in b.tasks.values():  # mteb's main score is the mean of the per-query scores (rounded by mteb)
        assert abs(np.mean(list(scores.per_query.values())) - scores.main_score) < 1e-5


@pytest.mark.parametrize("damage", ["truncate", "edit-score", "schema", "not-json-object"])
def test_a_corrupted_baseline_is_refused(stored: Path, damage: str) -> None:
    from linq_eval.core.baseline import load_baseline

    path = stored / "minilm-ci.json"
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "edit-score":
        raw = json.loads(text)
        raw["tasks"]["ADIRetrieval"]["per_query"]["1"] = 1.0
        path.write_text(json.dumps(raw))
    elif damage == "schema":
        path.write_text(text.replace('"schema_version": 1', '"schema_version": 99'))
    else:
        path.write_text("[1, 2]")
    with pytest.raises(LinqEvalError, match="save it again"):
        load_baseline("minilm-ci", stored)


def test_missing_baseline_and_bad_names(stored: Path) -> None:
    from linq_eval.core.baseline import load_baseline

    with pytest.raises(LinqEvalError, match=r"no baseline 'nope'.*known: minilm-ci"):
        load_baseline("nope", stored)
    with pytest.raises(LinqEvalError, match="baseline name"):
        load_baseline("../etc/passwd", stored)


def test_mismatches_name_each_setting(stored: Path) -> None:
    from linq_eval.core.baseline import load_baseline, mismatches, version_notes

    p = load_baseline("minilm-ci", stored).provenance
    other = p.model_copy(update={"instructions_sha256": "0" * 64, "bits": 4,
                                 "data_sha256": {**p.data_sha256, "ADIRetrieval": "f" * 64},
                                 "packages": {**p.packages, "mteb": "2.27.0", "torch": "9.9"}})
    problems = mismatches(p, other)
    assert any(m.startswith("bits") for m in problems)
    assert any("instructions_sha256" in m for m in problems)
    assert any("data_sha256 differs for ADIRetrieval" in m for m in problems)
    assert any(m.startswith("mteb") for m in problems)
    assert version_notes(p, other) == [f"torch {p.packages['torch']} -> 9.9"]
    assert mismatches(p, p) == []
    assert mismatches(p, p.model_copy(update={"merge_adapter": True})) == ["merge_adapter False (baseline) != True "
                                                                            "(checkpoint)"]


# -- real gates: the CLI end to end ------------------------------------------------------------------------
def _gate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from linq_eval.cli import main

    code = main(["gate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from linq_eval.evaluation.checkpoint import degraded_copy

    root = tmp_path_factory.mktemp("degraded")
    return {name: degraded_copy(MINILM, root / name, noise=noise)
            for name, noise in (("broken", 0.5), ("slightly", 0.05), ("nan", float("nan")))}


def test_project_gate_passes_the_same_model_and_resumes_after_an_interruption(
        stored: Path, tmp_path: Path) -> None:
    """The project's own CI gate, part 1: the stored baseline's model passes (exit 0), even after a crash."""
    from linq_eval.gate.driver import gate_checkpoint

    def interrupt(task: str, state: str) -> None:
        if task == "LegalBenchCorporateLobbying" and state == "running":
            raise KeyboardInterrupt

    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        gate_checkpoint(MINILM, "minilm-ci", directory=stored, cache_root=cache, progress=interrupt)
    seen: list[tuple[str, str]] = []
    report = gate_checkpoint(MINILM, "minilm-ci", directory=stored, cache_root=cache,
                             progress=lambda t, s: seen.append((t, s)))
    assert ("ADIRetrieval", "stored") in seen and ("LegalBenchCorporateLobbying", "running") in seen
    assert report.resumed == ["ADIRetrieval"]
    assert report.exit_code == 0, report.decision.reasons
    for task in report.decision.tasks:  # the same weights on the same CPU: the same per-query scores
        assert abs(task.difference) < 1e-6


def test_project_gate_fails_a_degraded_checkpoint(stored: Path, tmp_path: Path, degraded: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The project's own CI gate, part 2: weights perturbed by half their spread must fail (exit 1)."""
    out = tmp_path / "report"
    code, stdout, _ = _gate([str(degraded["broken"]), "--baseline", "minilm-ci", "--dir", str(stored),
                             "--cache", str(tmp_path / "cache"), "--out", str(out)], capsys)
    assert code == EXIT_FAIL, stdout
    assert "FAIL (exit 1)" in stdout
    report = json.loads((out / "gate.json").read_text())
    assert report["verdict"] == "FAIL" and report["macro"]["ci"][1] < -0.01
    assert report["checkpoint"]["kind"] == "model"
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.find("testcase[@name='overall (macro)']/failure") is not None
    assert "❌" in (out / "gate.md").read_text()


@pytest.fixture(scope="module")
def adi_baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A baseline saved through the CLI: all-MiniLM-L6-v2 on ADI (35 queries)."""
    from linq_eval.cli import main

    root = tmp_path_factory.mktemp("adi-baseline")
    code = main(["baseline", "save", "adi", "-m", MINILM, "--dtype", "float32", "-t", "ADIRetrieval",
                 "--dir", str(root / "b"), "--cache", str(root / "cache")])
    assert code == 0
    return root / "b", root / "cache"


def test_a_small_real_drop_on_35_queries_cannot_be_decided(adi_baseline: tuple[Path, Path], degraded: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Noise of 5% of each tensor's spread costs about 1.4 points: 35 queries can neither rule it out nor in."""
    folder, cache = adi_baseline
    out = folder.parent / "slightly"
    code, stdout, _ = _gate([str(degraded["slightly"]), "--baseline", "adi", "--dir", str(folder), "--cache",
                             str(cache), "--out", str(out)], capsys)
    assert code == EXIT_CANNOT_DECIDE, stdout
    report = json.loads((out / "gate.json").read_text())
    assert report["verdict"] == "CANNOT DECIDE"
    assert report["macro"]["mde"] > 0.01 and report["macro"]["queries_to_decide"] > 35


def test_nan_embeddings_cannot_be_decided(adi_baseline: tuple[Path, Path], degraded: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder, cache = adi_baseline
    out = folder.parent / "nan"
    code, stdout, _ = _gate([str(degraded["nan"]), "--baseline", "adi", "--dir", str(folder), "--cache", str(cache),
                             "--out", str(out)], capsys)
    assert code == EXIT_CANNOT_DECIDE
    assert "NaN" in json.loads((out / "gate.json").read_text())["reasons"][0]


def test_an_adapter_and_a_merged_directory_are_checkpoints(adi_baseline: tuple[Path, Path], tmp_path: Path) -> None:
    """A fresh LoRA adapter (B = 0) and a plain transformers copy are the baseline's function: both pass."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    from linq_eval.gate.driver import gate_checkpoint
    from linq_eval.models.references import resolve

    folder, cache = adi_baseline
    source = resolve(MINILM)
    peft_model = get_peft_model(AutoModel.from_pretrained(source), LoraConfig(r=4, target_modules="all-linear"))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = tmp_path / "merged"  # config.json and weights only: linq-eval infers mean pooling for BERT
    AutoModel.from_pretrained(source).save_pretrained(merged)
    AutoTokenizer.from_pretrained(source).save_pretrained(merged)
    for path, kind in ((tmp_path / "adapter", "adapter"), (merged, "model")):
        report = gate_checkpoint(str(path), "adi", directory=folder, cache_root=cache, n_resamples=2000)
        assert report.checkpoint["kind"] == kind
        assert report.exit_code == 0, report.decision.reasons
        assert abs(report.decision.difference) < 1e-4


def test_a_baseline_records_merge_adapter_and_its_checkpoints_are_merged(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`baseline save --bits 4 --merge-adapter`: the baseline seals the setting, and an adapter gated against it is
    merged into its base before quantising. A fresh adapter (B = 0) merged is the base's weights, quantised alike:
    the same scores, PASS. Turning the setting off by hand breaks the seal."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from linq_eval.cli import main
    from linq_eval.core.baseline import load_baseline
    from linq_eval.models.references import resolve

    monkeypatch.setenv("LINQ_CACHE", str(tmp_path / "linq-cache"))
    folder, cache = tmp_path / "b", tmp_path / "cache"
    assert main(["baseline", "save", "adi4", "-m", MINILM, "--bits", "4", "--dtype", "float32", "--merge-adapter",
                 "-t", "ADIRetrieval", "--dir", str(folder), "--cache", str(cache)]) == 0
    assert load_baseline("adi4", folder).provenance.merge_adapter is True
    capsys.readouterr()
    assert main(["baseline", "list", "--dir", str(folder)]) == EXIT_OK
    assert "4 (adapters merged)" in capsys.readouterr().out
    get_peft_model(AutoModel.from_pretrained(resolve(MINILM)), LoraConfig(r=4, target_modules="all-linear")) \
        .save_pretrained(tmp_path / "adapter")
    code, stdout, _ = _gate([str(tmp_path / "adapter"), "--baseline", "adi4", "--dir", str(folder), "--cache",
                             str(cache), "--out", str(tmp_path / "out")], capsys)
    assert code == EXIT_OK, stdout
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert report["provenance"]["merge_adapter"] is True and report["macro"]["difference"] == 0.0
    assert [p for p in (tmp_path / "linq-cache" / "merged").iterdir() if p.is_dir()]  # merged, then quantised

    path = folder / "adi4.json"
    path.write_text(path.read_text().replace('"merge_adapter": true', '"merge_adapter": false'))
    with pytest.raises(LinqEvalError, match="checksum"):
        load_baseline("adi4", folder)


def _error_reports(out: Path, needle: str) -> dict:
    """gate.json, junit.xml and gate.md of a gate that could not run: each says ERROR, and why."""
    record = json.loads((out / "gate.json").read_text())
    assert record["verdict"] == "ERROR" and record["exit_code"] == EXIT_ERROR and needle in record["error"]
    overall = ET.parse(out / "junit.xml").getroot().find("testcase[@name='overall (macro)']/error")
    assert overall is not None and overall.get("type") == "error" and needle in overall.get("message")
    assert "ERROR" in (out / "gate.md").read_text()
    return record


def test_mismatched_settings_are_refused_before_any_model_loads(stored: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "other.json"
    table.write_text(json.dumps({"tasks": {"ADIRetrieval": "Find something else entirely"}}))
    code, _, err = _gate([MINILM, "--baseline", "minilm-ci", "--dir", str(stored), "--instructions", str(table),
                          "--out", str(tmp_path / "out")], capsys)
    assert code == EXIT_ERROR and "instructions_sha256" in err and len(err.strip().splitlines()) == 1
    _error_reports(tmp_path / "out", "instructions_sha256")


def test_bad_input_exits_with_the_error_code_and_one_line(stored: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (stored / "minilm-ci.json").write_text("{broken")
    for args, needle in (([MINILM, "--baseline", "minilm-ci", "--dir", str(stored)], "not valid JSON"),
                         ([MINILM, "--baseline", "missing", "--dir", str(stored)], "no baseline 'missing'"),
                         ([str(tmp_path), "--baseline", "minilm-ci", "--dir", str(stored)], "has no adapter_config")):
        if needle == "has no adapter_config":
            shutil.copy(REPO / "results" / "baselines" / "minilm-ci.json", stored / "minilm-ci.json")
        out = tmp_path / "out" / needle.replace(" ", "-").replace("'", "")
        code, _, err = _gate([*args, "--out", str(out)], capsys)
        assert code == EXIT_ERROR and needle in err and len(err.strip().splitlines()) == 1, err
        _error_reports(out, needle)


def test_light_sets_pooled_by_the_baseline_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from linq_eval.cli import main

    code = main(["baseline", "save", "x", "-m", MINILM, "--light", "ADIRetrieval", "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "pooled with sentence-transformers/all-MiniLM-L6-v2" in err
    assert not (tmp_path / "x.json").exists()


def test_a_gate_on_light_sets_refuses_a_checkpoint_that_pooled_them(stored: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A baseline of another model on ADIRetrieval-light; the checkpoint is all-MiniLM-L6-v2, which pooled it."""
    from linq_eval.core.baseline import load_baseline, write_baseline
    from linq_eval.core.light_manifest import load_manifest, manifest_path

    b = load_baseline("minilm-ci", stored)
    manifest = load_manifest(manifest_path("ADIRetrieval-light"))
    prov = b.provenance.model_copy(update={"model": "pypi:all-mpnet-base-v2", "light_manifests":
                                           {"ADIRetrieval-light": manifest.checksum}})
    write_baseline(b.model_copy(update={"name": "mpnet-light", "provenance": prov,
                                        "tasks": {"ADIRetrieval-light": b.tasks["ADIRetrieval"]}}), stored)
    code, _, err = _gate([MINILM, "--baseline", "mpnet-light", "--dir", str(stored), "--out", str(stored / "out")],
                         capsys)
    assert code == EXIT_ERROR and "ADIRetrieval-light was pooled with sentence-transformers/all-MiniLM-L6-v2 (checkpoint)" in err
    assert "use the full task" in err and "--allow-pooled" not in err


# -- every error path: exit 2 (EXIT_ERROR), one line, and gate.json / junit.xml / gate.md that say ERROR ----------
@pytest.fixture()
def adi_only(stored: Path) -> Path:
    """The stored CI baseline cut down to ADIRetrieval (35 queries): a gate of it costs seconds."""
    from linq_eval.core.baseline import load_baseline, write_baseline

    b = load_baseline("minilm-ci", stored)
    prov = b.provenance.model_copy(update={"data_sha256": {"ADIRetrieval": b.provenance.data_sha256["ADIRetrieval"]}})
    write_baseline(b.model_copy(update={"name": "minilm-adi", "provenance": prov,
                                        "tasks": {"ADIRetrieval": b.tasks["ADIRetrieval"]}}), stored)
    return stored


def test_a_non_utf8_baseline_is_an_error_with_reports_in_a_real_subprocess(stored: Path, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    (stored / "minilm-ci.json").write_bytes(b"\xff\xfe{\x00" + (REPO / "results/baselines/minilm-ci.json").read_bytes())
    out = tmp_path / "out"
    result = run_cli("linq-eval", "gate", MINILM, "--baseline", "minilm-ci", "--dir", str(stored), "--out", str(out))
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.stderr.startswith("linq-eval: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "not UTF-8" in result.stderr and "save it again" in result.stderr
    _error_reports(out, "not UTF-8")


def _error_line(err: str) -> str:
    """Our one line on stderr (the progress bar transformers draws while it loads weights aside), no traceback."""
    lines = [line.rsplit("\r", 1)[-1] for line in err.strip().splitlines()]
    ours = [line for line in lines if "Loading weights" not in line]
    assert len(ours) == 1 and ours[0].startswith("linq-eval: error: ") and "Traceback" not in err, err
    return ours[0]


def _adapter(folder: Path, config: bytes, weights: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_bytes(config)
    if weights is not None:
        (folder / "adapter_model.bin").write_bytes(weights)
    return folder


class _Payload:
    def __reduce__(self) -> tuple:  # what a malicious pickle does on load: call something
        import os

        return (os.getcwd, ())


LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query"], "task_type": None,
        "base_model_name_or_path": None}


@pytest.mark.parametrize(("name", "config", "weights", "needle"), [
    ("garbage-config", b"\x00\xff\xfe garbage", None, "adapter_config.json"),
    ("not-json-config", b"{peft_type: LORA", None, "adapter_config.json"),
    ("wrong-types", json.dumps({**LORA, "r": "four", "target_modules": 5, "lora_alpha": [1]}).encode(), None,
     "wrong-types"),
    ("pickled", json.dumps(LORA).encode(), "pickle", "pickle"),
])
def test_a_damaged_adapter_is_an_error_not_a_fail(adi_only: Path, tmp_path: Path, name: str, config: bytes,
                                                  weights: str | None, needle: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a traceback and exit 1, which a CI reads as a regression, and no report at all."""
    import pickle

    payload = pickle.dumps({"base_model.model.encoder.layer.0.attention.self.query.lora_A.weight": _Payload()})
    adapter = _adapter(tmp_path / name, config, payload if weights else None)
    out = tmp_path / "out"
    code, _, err = _gate([str(adapter), "--baseline", "minilm-adi", "--dir", str(adi_only), "--cache",
                          str(tmp_path / "cache"), "--out", str(out)], capsys)
    assert code == EXIT_ERROR, err
    assert needle in _error_line(err)
    _error_reports(out, needle)


def test_an_internal_error_is_an_error_not_a_fail(stored: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A bug of ours (any exception) is exit 2 with its reports, never FAIL's exit 1."""
    import linq_eval.core.baseline

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(linq_eval.core.baseline, "load_baseline", broken)
    out = tmp_path / "out"
    code, _, err = _gate([MINILM, "--baseline", "minilm-ci", "--dir", str(stored), "--out", str(out)], capsys)
    assert code == EXIT_ERROR and len(err.strip().splitlines()) == 1
    assert "internal error (ZeroDivisionError: division by zero)" in err
    _error_reports(out, "ZeroDivisionError")
    (tmp_path / "file").write_text("not a folder")  # and when even the reports cannot be written: still one line
    code, _, err = _gate([MINILM, "--baseline", "minilm-ci", "--dir", str(stored), "--out", str(tmp_path / "file")],
                         capsys)
    assert code == EXIT_ERROR and len(err.strip().splitlines()) == 1 and "is a file: give a folder" in err
    # a report folder that fails only once the gate has run (checked before: it was writable)
    monkeypatch.setattr(linq_eval.core.baseline, "load_baseline", broken)
    import linq_eval.gate.report

    def unwritable(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(linq_eval.gate.report, "write", unwritable)
    code, _, err = _gate([MINILM, "--baseline", "minilm-ci", "--dir", str(stored), "--out", str(tmp_path / "o")],
                         capsys)
    assert code == EXIT_ERROR and len(err.strip().splitlines()) == 1 and "no report written" in err, err


def test_every_option_a_message_names_exists() -> None:
    """gate's message once named --overwrite-cache, which no command has."""
    import re

    from linq_eval.cli import build_parser

    parser = build_parser()
    options = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            options.update(action.option_strings)
            stack.extend(getattr(action, "choices", None).values() if isinstance(action.choices, dict) else [])
    for module in ("gate/driver", "core/gate_rule", "gate/report", "core/baseline", "compare/driver", "compare/job",
                   "compare/report", "compare/analysis", "evaluation/checkpoint"):
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", (REPO / "linq_eval" / f"{module}.py").read_text()))
        assert named <= options, (module, named - options)


@pytest.fixture(scope="module")
def gated_adi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A gate of the CI baseline's model against its ADI part, run once: its cache is then damaged, task files."""
    from linq_eval.core.baseline import load_baseline, write_baseline
    from linq_eval.gate.driver import gate_checkpoint

    root = tmp_path_factory.mktemp("gated-adi")
    shutil.copy(REPO / "results" / "baselines" / "minilm-ci.json", root / "minilm-ci.json")
    b = load_baseline("minilm-ci", root)
    prov = b.provenance.model_copy(update={"data_sha256": {"ADIRetrieval": b.provenance.data_sha256["ADIRetrieval"]}})
    write_baseline(b.model_copy(update={"name": "minilm-adi", "provenance": prov,
                                        "tasks": {"ADIRetrieval": b.tasks["ADIRetrieval"]}}), root)
    report = gate_checkpoint(MINILM, "minilm-adi", directory=root, cache_root=root / "cache", n_resamples=2000)
    assert report.exit_code == EXIT_OK and report.resumed == []
    return root, root / "cache"


def _damage(path: Path, how: str) -> None:
    text = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "cut":
        path.write_bytes(text[: len(text) // 2])
    elif how == "not-utf8":
        path.write_bytes(b"\xff" + text)
    elif how == "not-a-result":
        path.write_text('{"scores": 3}')
    else:  # "edited": valid JSON, but one query's score no longer averages to mteb's main score
        raw = json.loads(text)
        scores = raw["scores"]["test"]["default"]
        first = sorted(scores)[0]
        scores[first] = 1.0 - scores[first]
        path.write_text(json.dumps(raw))


@pytest.mark.parametrize(("tree", "how"), [("results", "empty"), ("results", "not-a-result"), ("per_query", "cut"),
                                           ("per_query", "not-utf8"), ("per_query", "edited")])
def test_a_damaged_cache_file_is_recomputed_not_trusted_or_fatal(gated_adi: tuple[Path, Path], tree: str, how: str,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A kill at a write (0 bytes, cut), a disk error, an edit: that task is recomputed, with a warning."""
    root, cache = gated_adi
    [path] = [p for p in cache.rglob("ADIRetrieval.json") if tree in p.relative_to(cache).parts]
    _damage(path, how)
    out = root / f"out-{tree}-{how}"
    code, stdout, err = _gate([MINILM, "--baseline", "minilm-adi", "--dir", str(root), "--cache", str(cache),
                               "--out", str(out)], capsys)
    assert code == EXIT_OK, err + stdout
    assert "ADIRetrieval: the stored result cannot be trusted" in caplog.text and "recomputing this task" in caplog.text
    record = json.loads((out / "gate.json").read_text())
    assert record["resumed_tasks"] == [] and any("recomputed" in n for n in record["notes"])
    assert abs(record["tasks"][0]["difference"]) < 1e-6  # the recomputed scores, not the damaged ones
    json.loads(path.read_text())  # repaired in place


# -- baseline save never replaces silently ------------------------------------------------------------------
def test_saving_over_a_baseline_needs_force_and_keeps_a_dated_backup(adi_baseline: tuple[Path, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from linq_eval.cli import main
    from linq_eval.core.baseline import list_baselines, load_baseline

    folder = tmp_path / "b"
    shutil.copytree(adi_baseline[0], folder)
    shutil.copy(REPO / "results" / "baselines" / "minilm-ci.json", folder / "minilm-ci.json")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    save = ["baseline", "save", "adi", "-m", MINILM, "--dtype", "float32", "-t", "ADIRetrieval", "--dir", str(folder),
            "--cache", str(adi_baseline[1])]
    for args in (save, [*save[:2], "minilm-ci", *save[3:]]):  # the CI's own baseline included
        assert main(args) == EXIT_ERROR
        err = capsys.readouterr().err
        assert "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # untouched, nothing evaluated
    assert main([*save, "--force"]) == EXIT_OK
    capsys.readouterr()
    names, backups = list_baselines(folder)
    assert names == ["adi", "minilm-ci"] and list(backups.values()) == ["adi"]
    [backup] = backups
    assert (folder / f"{backup}.json").read_bytes() == before["adi.json"]  # the old one, byte for byte
    assert load_baseline(backup, folder).name == "adi"  # still a valid baseline: a rename restores it
    assert load_baseline("adi", folder).created >= load_baseline(backup, folder).created
    assert main(["baseline", "list", "--dir", str(folder)]) == EXIT_OK
    listed = capsys.readouterr().out
    assert f"backup: {backup} (replaced adi" in listed
    assert main([*save[:2], backup, *save[3:]]) == EXIT_ERROR  # a backup's name is not given to a new baseline
    assert "ends like a backup" in capsys.readouterr().err
