"""The commands as users run them: mteb's own CLI through our hook, linq-mteb, linq-eval; bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

OFFICIAL_DIR = "Linq-AI-Research__Linq-Embed-Mistral"


def _results(folder: Path, task: str) -> list[Path]:
    return sorted((folder / "results" / OFFICIAL_DIR).glob(f"*/experiments/*/{task}.json"))


def test_mteb_run_m_linq_on_a_local_collection(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    res = run_cli("mteb", "run", "-m", "linq", "-t", "ADIRetrieval", "--output-folder", str(out),
                  env={"LINQ_MODEL": str(tiny_mistral_dir)})
    assert res.returncode == 0, res.stderr[-3000:]
    files = _results(out, "ADIRetrieval")
    assert len(files) == 1, list(out.rglob("*.json"))
    data = json.loads(files[0].read_text())
    assert 0.0 <= data["scores"]["test"][0]["main_score"] <= 1.0
    assert "bits_16" in files[0].parent.name
    # interrupted or repeated runs resume: a finished task is not recomputed
    again = run_cli("mteb", "run", "-m", "linq", "-t", "ADIRetrieval", "--output-folder", str(out),
                    env={"LINQ_MODEL": str(tiny_mistral_dir)})
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(files[0].read_text())["evaluation_time"] == data["evaluation_time"]


def test_four_and_eight_bit_variants_score_in_their_own_experiments(smollm2_dir: Path, tmp_path: Path) -> None:
    import mteb

    from linq_eval.registry import register

    out = tmp_path / "cache"
    for key in ("linq-4bit", "linq-8bit"):
        encoder = mteb.get_model(key, device="cpu", model=str(smollm2_dir))
        encoder.show_progress = False
        result = mteb.evaluate(encoder, [mteb.get_task("ADIRetrieval")], cache=mteb.ResultCache(out))
        assert 0.0 < result.task_results[0].get_score() <= 1.0
    register()
    folders = {p.parent.name for p in _results(out, "ADIRetrieval")}
    assert len(folders) == 2 and any("bits_4" in f for f in folders) and any("bits_8" in f for f in folders)


def test_mteb_mock_run_passes(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "mteb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LINQ_MODEL": str(tiny_mistral_dir)}
    res = subprocess.run([exe, "mock-run", "-m", "linq", "--device", "cpu"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "passed all expected checks" in res.stdout, res.stdout[-3000:]


def test_linq_mteb_works_without_the_hook(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    res = run_cli("linq-mteb", "run", "-m", "linq", "-t", "ADIRetrieval", "--output-folder", str(out),
                  env={"LINQ_MODEL": str(tiny_mistral_dir), "LINQ_EVAL_NO_HOOK": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert _results(out, "ADIRetrieval")


def test_linq_eval_run_prints_scores(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    res = run_cli("linq-eval", "run", "-m", str(tiny_mistral_dir), "-t", "ADIRetrieval", "--output-folder",
                  str(tmp_path / "cache"), "--instruction", "ADIRetrieval=Find the documents")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ADIRetrieval" in res.stdout
    experiment = next(line for line in res.stdout.splitlines() if line.startswith("experiment:"))
    assert "bits_16" in experiment  # the experiment folder its results went to (mteb's own result leaves it empty)
    # quiet: stdout starts with the results; no bar of mteb, datasets or transformers on stderr (not a terminal:
    # our own display is off too)
    assert res.stdout.startswith("model: "), res.stdout[:200]
    assert "it/s" not in res.stderr and "%|" not in res.stderr, res.stderr[-2000:]


def test_verbose_shows_the_libraries_progress(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    res = run_cli("linq-eval", "-v", "run", "-m", str(tiny_mistral_dir), "-t", "ADIRetrieval", "--output-folder",
                  str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Evaluating tasks" in res.stderr and "Searching corpus chunks" in res.stderr, res.stderr[-2000:]


def test_merge_adapter_runs_in_an_experiment_of_its_own(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """`run --bits 4 --adapter A --merge-adapter` quantises base + A merged (built once into $LINQ_CACHE/merged):
    its results sit beside, never over, those of A kept beside the 4-bit base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModel.from_pretrained(tiny_mistral_dir),
                   LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(adapter)
    out, env = tmp_path / "cache", {"LINQ_CACHE": str(tmp_path / "linq-cache")}
    common = ["-m", str(tiny_mistral_dir), "--adapter", str(adapter), "--bits", "4", "--dtype", "float32",
              "-t", "ADIRetrieval", "--output-folder", str(out)]
    merged = run_cli("linq-eval", "run", *common, "--merge-adapter", env=env)
    assert merged.returncode == 0, merged.stderr[-3000:]
    beside = run_cli("linq-eval", "run", *common, env=env)
    assert beside.returncode == 0, beside.stderr[-3000:]
    files = _results(out, "ADIRetrieval")  # two experiment folders, each with its loader's kwargs
    kwargs = [json.loads((f.parent / "model_meta.json").read_text())["loader_kwargs"] for f in files]
    assert len(files) == 2 and sorted(k.get("merge_adapter", False) for k in kwargs) == [False, True]
    assert len([p for p in (tmp_path / "linq-cache" / "merged").iterdir() if p.is_dir()]) == 1


def test_help_is_instant() -> None:
    start = time.perf_counter()
    res = run_cli("linq-eval", "run", "--help")
    assert res.returncode == 0 and "--bits" in res.stdout
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "3"], "bits=3 is not supported"),
        (["-m", "/no/such/model"], "neither an existing model directory"),
        (["--adapter", "/no/such/adapter"], "not a peft adapter directory"),
        (["-t", "NoSuchTask"], "unknown task 'NoSuchTask'"),
        (["--instruction", "oops"], "TASK=INSTRUCTION"),
        (["--bits", "4", "--merge-adapter"], "--merge-adapter merges an adapter"),
    ],
)
def test_bad_input_is_one_line_and_no_score(args: list[str], message: str, tmp_path: Path) -> None:
    base = ["linq-eval", "run", "-t", "ADIRetrieval", "--output-folder", str(tmp_path)]
    if "-t" in args:
        base = base[:2] + base[4:]
    res = run_cli(*base, *args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not list(tmp_path.rglob("*.json"))


def test_instructions_command() -> None:
    res = run_cli("linq-eval", "instructions", "--json")
    data = json.loads(res.stdout)
    assert data["instructions"]["SciFact"].startswith("Given a scientific claim")
    assert len(data["sha256"]) == 64


def test_mteb_cli_bad_model_names_the_problem_and_scores_nothing(tmp_path: Path) -> None:
    """mteb's own CLI keeps mteb's own error handling (we no longer replace sys.excepthook in other programs):
    the error's last line names the problem; our `linq-mteb` wrapper prints that one line alone."""
    env = {"LINQ_MODEL": "/no/such/model"}
    res = run_cli("mteb", "run", "-m", "linq", "-t", "ADIRetrieval", "--output-folder", str(tmp_path), env=env)
    assert res.returncode != 0
    assert "model '/no/such/model' is neither" in res.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.rglob("*.json"))
    ours = run_cli("linq-mteb", "run", "-m", "linq", "-t", "ADIRetrieval", "--output-folder", str(tmp_path), env=env)
    assert ours.returncode == 2
    assert "linq-mteb: error: model '/no/such/model' is neither" in ours.stderr
    assert "Traceback" not in ours.stderr and not list(tmp_path.rglob("*.json"))


def test_a_ctrl_c_during_the_interpreters_exit_keeps_the_commands_exit_code(tmp_path: Path) -> None:
    """After the command has finished, a Ctrl-C that meets the interpreter's exit (here the join of a thread that
    takes 30 s, as torch's and datasets' can) ends the process at once with the command's own code and no
    traceback (Python's own handler prints a KeyboardInterrupt from threading's shutdown)."""
    import os
    import signal
    import subprocess
    import sys

    program = ("import sys, threading, time\n"
               "from linq_eval.cli import main\n"
               "threading.Thread(target=time.sleep, args=(30,)).start()\n"
               "sys.argv = ['linq-eval', 'instructions', '--task', 'SciFact']\n"
               "code = main()\n"
               "print('finished', flush=True)\n"
               "sys.exit(code)\n")
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.stdout is not None
    while "finished" not in (line := proc.stdout.readline()):
        assert line, proc.stderr.read() if proc.stderr else ""
    time.sleep(1)  # into the atexit handler
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert time.perf_counter() - start < 20
    err = proc.stderr.read() if proc.stderr else ""
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err


def test_quiet_libraries_silences_the_libraries_and_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from linq_eval.core.quiet import QUIET_ENV, QUIET_LOGGERS, quiet_libraries

    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # the user's own setting wins
    import os

    levels = {name: logging.getLogger(name).level for name in ("mteb", "bitsandbytes", *QUIET_LOGGERS)}
    try:
        for name in levels:
            logging.getLogger(name).setLevel(logging.NOTSET)
        quiet_libraries()
        assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
        assert not logging.getLogger("mteb.evaluate").isEnabledFor(logging.INFO)
        # bitsandbytes' warning about its optional kernels package, on every CPU run
        assert not logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.WARNING)
        assert logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.ERROR)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(("argv", "prog", "extra"), [
    (["gate", "ckpt", "--baseline", "b", "-m", "x"], "linq-eval gate", "-m x"),
    (["light", "build", "-t", "ADI"], "linq-eval light build", "-t"),  # ADI: its positional task
    (["run", "-t", "ADIRetrieval", "--bogus"], "linq-eval run", "--bogus"),
])
def test_an_unknown_option_names_its_command_with_that_command_usage(argv: list[str], prog: str, extra: str,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """argparse reports a subcommand's unknown option with the top level's usage; ours names the command."""
    from linq_eval.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.splitlines()[-1] == f"{prog}: error: unrecognized arguments: {extra}"
    assert err.startswith(f"usage: {prog} ")


def test_linq_train_names_its_command_too(capsys: pytest.CaptureFixture) -> None:
    from linq_train.cli import main

    with pytest.raises(SystemExit) as info:
        main(["fit", "a.yaml", "--zzz"])
    assert info.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == (
        "linq-train fit: error: unrecognized arguments: --zzz")


def test_a_compare_job_process_silences_the_harmless_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A precision job runs in a process of its own: the environment's quiet switches reach it, a logger's level
    does not, so the job sets it itself (bitsandbytes' kernels notice on CPUs with AVX512-BF16)."""
    import logging

    from linq_eval.compare import job
    from linq_eval.core import children
    from linq_eval.core.errors import LinqEvalError

    monkeypatch.setattr(children, "stop_with_parent", lambda: None)  # this is pytest's process, not a job's
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        with pytest.raises(LinqEvalError):
            job.main([str(tmp_path / "no-job.json")])
        assert not logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.WARNING)
    finally:
        logger.setLevel(level)
