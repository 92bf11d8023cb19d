"""Evaluation over torch.distributed: real ``torchrun`` and ``accelerate launch`` subprocesses, 2 processes on
the gloo backend (CPU). Scores, per-query files and predictions equal a single process bit for bit (fp32); a shard
may be empty; a rank that dies fails the run with no result file written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linq_eval.models.distributed import assign, world

BIN = Path(sys.executable).parent
# one thread per process, the same in the single-process reference: bit-identical matmuls
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


@given(st.lists(st.integers(1, 10_000), max_size=60), st.integers(1, 8))
@settings(max_examples=200, deadline=None)
def test_every_batch_goes_to_exactly_one_rank_and_loads_balance(costs: list[int], ranks: int) -> None:
    shares = assign(costs, ranks)
    assert len(shares) == ranks
    assert sorted(b for share in shares for b in share) == list(range(len(costs)))
    loads = [sum(costs[b] for b in share) for share in shares]
    if costs:  # greedy, costliest first: no rank exceeds another by more than one batch
        assert max(loads) - min(loads) <= max(costs)
    assert assign(costs, ranks) == shares  # every rank computes the same split


def test_world_outside_a_launcher_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world().size == 1 and world().main
    monkeypatch.setenv("WORLD_SIZE", "not a number")
    assert world().size == 1


def _launch(command: list[str], timeout: float = 600, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    """Run a launcher (torchrun, accelerate launch) in a process group of its own: on a timeout the whole group
    is killed, since killing the launcher alone leaves its ranks running (and loading the cores of later tests)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        _kill_group(process)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL what is left of a launcher started with ``start_new_session=True``: the launcher and its ranks."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _files(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of what a run wrote: predictions, per-query scores and the result scores."""
    out = {}
    for path in sorted(folder.rglob("*.json")):
        rel = str(path.relative_to(folder))
        if "/results/" in f"/{rel}" and path.name != "model_meta.json":
            data = json.loads(path.read_text())
            out[rel] = json.dumps(data["scores"], sort_keys=True).encode()  # evaluation_time differs, of course
        elif not rel.startswith(".") and path.name != "model_meta.json":
            out[rel] = path.read_bytes()
    return out


def _run_args(model: Path, out: Path, *tasks: str) -> list[str]:
    return ["-v", "run", "-m", str(model), "-t", *tasks, "--dtype", "float32", "--batch-size", "16",
            "--output-folder", str(out)]


@pytest.fixture(scope="module")
def single(tiny_mistral_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one-process")
    done = subprocess.run([str(BIN / "linq-eval"), *_run_args(tiny_mistral_dir, out, "ADIRetrieval", "BIOSSES")],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_write_what_one_writes(launcher: str, tiny_mistral_dir: Path, single: Path,
                                            tmp_path: Path) -> None:
    """ADI (35 queries, 82 documents: shares of unequal size) and BIOSSES (an STS task), 16 texts per batch."""
    out = tmp_path / "two"
    start = ([str(BIN / "torchrun"), "--nproc-per-node", "2", "-m", "linq_eval"] if launcher == "torchrun" else
             # accelerate's --cpu starts one process; its multi-GPU launcher (torch elastic) runs on CPUs too
             [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "-m", "linq_eval"])
    done = _launch([*start, *_run_args(tiny_mistral_dir, out, "ADIRetrieval", "BIOSSES")])
    assert done.returncode == 0, done.stderr[-3000:]
    ours, reference = _files(out), _files(single)
    assert set(ours) == set(reference) and len(reference) >= 5  # 2 results, 2 predictions, 1 per-query file
    assert ours == reference
    # both ranks encoded a share (the -v log), and the table was printed once
    for rank in (0, 1):
        assert f"rank {rank} of 2 encodes" in done.stderr, done.stderr[-2000:]
    assert done.stdout.count("ADIRetrieval") == 1


SHARD_SCRIPT = """
import sys
import numpy as np
from linq_eval.models import distributed
from linq_eval.models.build import build_model
from linq_eval.models.encoder import LinqEncoder

here = distributed.init("cpu")
encoder = LinqEncoder(build_model(sys.argv[1], device="cpu", dtype="float32", max_length=64), show_progress=False)
one = encoder.encode_texts(["a single text: one batch, so one rank has nothing to encode"])
none = encoder.encode_texts([])
odd = encoder.encode_texts([f"text number {k} " * (k % 7 + 1) for k in range(23)], batch_size=4)
np.savez(f"{sys.argv[2]}/rank{here.rank}.npz", one=one, none=none, odd=odd)
distributed.shutdown()
"""


def test_an_empty_shard_and_uneven_shards(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder

    script = tmp_path / "shards.py"
    script.write_text(SHARD_SCRIPT)
    done = _launch([str(BIN / "torchrun"), "--nproc-per-node", "2", str(script), str(tiny_mistral_dir), str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    encoder = LinqEncoder(build_model(str(tiny_mistral_dir), device="cpu", dtype="float32", max_length=64),
                          show_progress=False)
    expected = {"one": encoder.encode_texts(["a single text: one batch, so one rank has nothing to encode"]),
                "odd": encoder.encode_texts([f"text number {k} " * (k % 7 + 1) for k in range(23)], batch_size=4)}
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert got["none"].shape == (0, expected["one"].shape[1])
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value)  # every rank holds the full matrix, bit for bit


FROM_MAIN_SCRIPT = """
import sys
from linq_eval.core.errors import LinqEvalError
from linq_eval.models import distributed

here = distributed.init("cpu")
lines = [f"value {distributed.from_main(lambda: here.rank + 41)}"]  # rank 0's, on every rank


def refuse():
    raise LinqEvalError("stored result unreadable")


def crash():
    raise KeyError("internal")


for action in (refuse, crash):
    try:
        distributed.from_main(action)
    except Exception as exc:
        lines.append(f"{type(exc).__name__}: {exc}")
distributed.shutdown()
print(f"rank {here.rank}: " + " | ".join(lines))
"""


def test_rank_0s_answer_and_failure_reach_every_rank(tmp_path: Path) -> None:
    """What rank 0 alone does (read stored files, write reports) gives every rank its value, or its failure: a
    LinqEvalError as such (exit 2 everywhere), anything else as a RuntimeError naming it."""
    script = tmp_path / "from_main.py"
    script.write_text(FROM_MAIN_SCRIPT)
    done = _launch([str(BIN / "torchrun"), "--nproc-per-node", "2", str(script)], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: value 41 | LinqEvalError: stored result unreadable | KeyError: 'internal'" in done.stdout
    assert ("rank 1: value 41 | LinqEvalError: stored result unreadable | RuntimeError: rank 0 failed: KeyError: "
            "'internal'") in done.stdout


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of a worker of ``launcher`` (torchrun) by its RANK."""
    import psutil

    for child in psutil.Process(launcher).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "linq_eval" in " ".join(child.cmdline()):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_a_rank_that_dies_fails_the_run_and_writes_no_result(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    process = subprocess.Popen([str(BIN / "torchrun"), "--nproc-per-node", "2", "-m", "linq_eval",
                                *_run_args(tiny_mistral_dir, out, "CACMRetrieval")], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # rank 0 opens the task's staging folder once evaluation starts: then rank 1 dies (SIGKILL, no cleanup)
        while not any((out / ".staging").glob("*")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        pid = _rank_pid(process.pid, 1)
        assert pid is not None, "rank 1 was not found"
        os.kill(pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
    finally:
        _kill_group(process)
    assert process.returncode != 0
    written = [p for p in out.rglob("*.json") if not p.relative_to(out).parts[0].startswith(".")
               and p.name != "model_meta.json"]
    assert written == [], written


# -- compare, gate and light build under a launcher -------------------------------------------------------------
TIMING = {"seconds", "load_seconds", "eval_seconds", "tokens_per_second", "peak_rss_bytes", "processes"}


def _one(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "linq-eval"), *args], env=env, capture_output=True, text=True, timeout=600)


def _two(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    return _launch([str(BIN / "torchrun"), "--nproc-per-node", "2", "-m", "linq_eval", "-v", *args], env=env)


def _outputs(folder: Path, root: Path | None = None) -> dict[str, object]:
    """What a command wrote under ``folder``: JSON without its timing fields and with the run's ``root`` folder
    (default ``folder``) written as ROOT, junit.xml without its time attribute, any other file as bytes."""
    def clean(x: object) -> object:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in TIMING}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x.replace(str(root or folder), "ROOT") if isinstance(x, str) else x

    out: dict[str, object] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if path.suffix == ".json":
            out[rel] = clean(json.loads(path.read_text()))
        elif path.suffix == ".xml":
            out[rel] = re.sub(r' time="[^"]*"', "", path.read_text())
        else:
            out[rel] = path.read_bytes()
    return out


def test_compare_on_two_processes_equals_one(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """Each precision runs in a process per rank (a group of their own); rank 0 writes and prints the report."""
    def args(root: Path) -> list[str]:
        return ["compare", "--bits", "8", "16", "-m", str(tiny_mistral_dir), "-t", "ADIRetrieval", "--no-aa",
                "--batch-size", "16", "--output-folder", str(root / "mteb"), "--out", str(root / "out")]

    one, two = _one(*args(tmp_path / "one")), _two(*args(tmp_path / "two"))
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert _files(tmp_path / "two" / "mteb") == _files(tmp_path / "one" / "mteb")  # scores, per-query, predictions
    ours = _outputs(tmp_path / "two" / "out", tmp_path / "two")
    reference = _outputs(tmp_path / "one" / "out", tmp_path / "one")
    assert ours == reference  # the report, each precision's record, its sample embeddings (.npy), byte for byte
    assert {"compare.json", "compare.md"} <= set(ours) and sum(p.endswith(".npy") for p in ours) == 4
    report = json.loads((tmp_path / "two" / "out" / "compare.json").read_text())
    assert [p["cost"]["processes"] for p in report["precisions"]] == [2, 2]  # each precision ran on both ranks
    assert two.stdout.count("results: ") == 1  # rank 0 alone printed


def test_gate_on_two_processes_equals_one(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """A real CANNOT DECIDE (exit 3): the same reports from rank 0, printed once, and exit 3 on the ranks."""
    from linq_eval.core.errors import EXIT_CANNOT_DECIDE
    from linq_eval.evaluation.checkpoint import degraded_copy

    checkpoint = degraded_copy(str(tiny_mistral_dir), tmp_path / "degraded", noise=0.3)
    saved = _one("baseline", "save", "tiny", "-m", str(tiny_mistral_dir), "--dtype", "float32", "-t", "ADIRetrieval",
                 "--batch-size", "16", "--dir", str(tmp_path / "baselines"), "--cache", str(tmp_path / "cache"))
    assert saved.returncode == 0, saved.stderr[-3000:]

    def args(name: str) -> list[str]:
        return ["gate", str(checkpoint), "--baseline", "tiny", "--dir", str(tmp_path / "baselines"), "--cache",
                str(tmp_path / name / "cache"), "--out", str(tmp_path / name / "report")]

    one, two = _one(*args("one")), _two(*args("two"))
    assert one.returncode == EXIT_CANNOT_DECIDE, one.stdout[-3000:] + one.stderr[-3000:]
    assert two.returncode == 1, two.stderr[-3000:]  # torchrun's own code for any rank's non-zero exit
    # each rank exits 3; the launcher stops the others at the first non-zero exit (SIGTERM: -15) if still running
    codes = set(re.findall(r"exitcode\s*:\s*(-?\d+)", two.stderr))
    assert str(EXIT_CANNOT_DECIDE) in codes and codes <= {str(EXIT_CANNOT_DECIDE), "-15"}, two.stderr[-3000:]
    ours, reference = _outputs(tmp_path / "two" / "report"), _outputs(tmp_path / "one" / "report")
    assert set(ours) == {"gate.json", "junit.xml", "gate.md"} and ours == reference
    assert _files(tmp_path / "two" / "cache") == _files(tmp_path / "one" / "cache")
    for rank in (0, 1):
        assert f"rank {rank} of 2 encodes" in two.stderr, two.stderr[-2000:]
    assert two.stdout.count("CANNOT DECIDE (exit 3)") == 1


def test_light_build_on_two_processes_equals_one(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """Dense pooling over ADI's full corpus, each rank encoding a share: the same manifest and statistics."""
    args = ["light", "build", "ADIRetrieval", "--queries", "10", "--depth", "5", "--retrievers",
            f"bm25,{tiny_mistral_dir}"]
    one = _one(*args, "--out", str(tmp_path / "one"), env={**ENV, "LINQ_EMBEDDING_CACHE": str(tmp_path / "cache1")})
    two = _two(*args, "--out", str(tmp_path / "two"), env={**ENV, "LINQ_EMBEDDING_CACHE": str(tmp_path / "cache2")})
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    ours, reference = _outputs(tmp_path / "two"), _outputs(tmp_path / "one")
    assert "ADIRetrieval-light.json" in ours and len(ours) == 2 and ours == reference  # manifest, statistics
    assert not (tmp_path / "cache2").exists()  # no rank keeps an embedding cache (one would be every rank's)
    assert "rank 1 of 2 encodes" in two.stderr and two.stdout.count("ADIRetrieval-light.json") == 1


def test_a_precision_that_crashes_on_one_rank_stops_compare_and_writes_nothing(tiny_mistral_dir: Path,
                                                                              tmp_path: Path) -> None:
    """Rank 1's child of the first precision is killed before its group forms (rank 0's would wait for it for
    the group's 30-minute timeout): rank 1 stops the run at once, the launcher stops the rest, nothing is written."""
    import psutil

    process = subprocess.Popen([str(BIN / "torchrun"), "--nproc-per-node", "2", "-m", "linq_eval", "compare",
                                "--bits", "8", "16", "-m", str(tiny_mistral_dir), "-t", "ADIRetrieval", "--no-aa",
                                "--output-folder", str(tmp_path / "mteb"), "--out", str(tmp_path / "out")], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, killed = time.monotonic() + 300, None
        while killed is None and time.monotonic() < deadline and process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                try:
                    if "linq_eval.compare.job" in " ".join(child.cmdline()) and child.environ().get("RANK") == "1":
                        child.kill()
                        killed = time.monotonic()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            time.sleep(0.1)
        assert killed is not None, "rank 1's child was not found"
        _, stderr = process.communicate(timeout=120)
    finally:
        _kill_group(process)
    assert process.returncode != 0
    assert time.monotonic() - killed < 60  # not the group's timeout
    assert "rank 1: 16 bits of" in stderr and "crashed (exit -9" in stderr, stderr[-3000:]
    assert not (tmp_path / "out").exists() and not list((tmp_path / "mteb").rglob("*.json"))
