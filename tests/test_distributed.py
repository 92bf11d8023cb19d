"""Evaluation over torch.distributed: real ``torchrun`` and ``accelerate launch`` subprocesses, 2 processes on
the gloo backend (CPU). Scores, per-query files and predictions equal a single process bit for bit (fp32); a shard
may be empty; a rank that dies fails the run with no result file written."""

from __future__ import annotations

import os
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


def _files(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of what a run wrote: predictions, per-query scores and the result scores."""
    import json

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
    done = subprocess.run([*start, *_run_args(tiny_mistral_dir, out, "ADIRetrieval", "BIOSSES")], env=ENV,
                          capture_output=True, text=True, timeout=600)
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
    done = subprocess.run([str(BIN / "torchrun"), "--nproc-per-node", "2", str(script), str(tiny_mistral_dir),
                           str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=600)
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
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    written = [p for p in out.rglob("*.json") if not p.relative_to(out).parts[0].startswith(".")
               and p.name != "model_meta.json"]
    assert written == [], written
