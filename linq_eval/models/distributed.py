"""Data-parallel encoding over ``torch.distributed`` (``torchrun`` or ``accelerate launch``, one or many machines).

Every rank runs the same evaluation: mteb asks each of them for the same embeddings in the same order. Each rank
encodes its share of the token-budget batches (whole batches: texts of similar length stay together), and the
rows are gathered so that every rank holds the full matrix, bit for bit what one process computes, since each
batch is the same batch whichever rank runs it. mteb's search and scoring then run on every rank (cheap next to
encoding), and only rank 0 writes files (``evaluation.runner``). What reads or writes rank 0's files (stored
results, reports, manifests) runs there alone, its outcome shared with every rank (:func:`from_main`), so every
rank takes the same branch and ends with the same exit code.

The launchers set ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init`
joins the group (``gloo`` on CPU, ``nccl`` on CUDA). Without them everything here is a no-op.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from linq_eval.core.errors import LinqEvalError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the group, from the launcher's environment (one process: rank 0 of 1)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return World()
    return World(rank, size, local) if size > 1 else World()


def init(device: str | None = None) -> World:
    """Join the process group when launched with several processes (idempotent); the device this rank encodes on
    is ``cuda:<LOCAL_RANK>`` when CUDA is used."""
    here = world()
    if here.size == 1:
        return here
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if cuda:
            torch.cuda.set_device(here.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return here


def active() -> bool:
    """True inside an initialised group of more than one process."""
    if world().size == 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def device_for(device: str | None) -> str | None:
    """The device of this rank: ``cuda:<LOCAL_RANK>`` for a CUDA run, else ``device`` unchanged."""
    here = world()
    if here.size == 1 or (device is not None and not device.startswith("cuda")):
        return device
    import torch

    if device is None and not torch.cuda.is_available():
        return device
    return f"cuda:{here.local_rank}"


def assign(costs: Sequence[int], ranks: int) -> list[list[int]]:
    """Batches (by index) per rank, balancing the summed cost (padded tokens): the costliest batch first to the
    least-loaded rank (ties to the lowest rank), so every rank computes the same deterministic split."""
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for b in sorted(range(len(costs)), key=lambda b: (-costs[b], b)):
        r = min(range(ranks), key=lambda r: (loads[r], r))
        shares[r].append(b)
        loads[r] += costs[b]
    return [sorted(s) for s in shares]


def gather_rows(rows: np.ndarray, values: np.ndarray, total: int) -> np.ndarray:
    """Every rank's (row indices, embeddings) into the full ``(total, dim)`` float32 matrix, on every rank.

    Shares differ in size (a rank may have none), so each is padded to the largest before ``all_gather``.
    """
    import torch
    import torch.distributed as dist

    size = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([len(rows)], dtype=torch.long, device=device))
    longest = max(int(c.item()) for c in counts)
    dim = values.shape[1]
    mine = torch.zeros((longest, dim), dtype=torch.float32, device=device)
    mine[: len(rows)] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device)
    where = torch.full((longest,), -1, dtype=torch.long, device=device)
    where[: len(rows)] = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(device)
    all_values = [torch.empty_like(mine) for _ in range(size)]
    all_rows = [torch.empty_like(where) for _ in range(size)]
    dist.all_gather(all_values, mine)
    dist.all_gather(all_rows, where)
    out = np.empty((total, dim), dtype=np.float32)
    seen = 0
    for r, v, c in zip(all_rows, all_values, counts, strict=True):
        n = int(c.item())
        out[r[:n].cpu().numpy()] = v[:n].cpu().numpy()
        seen += n
    if seen != total:  # every row computed exactly once, or the shares were not the same split on every rank
        raise RuntimeError(f"distributed encoding gathered {seen} rows for {total} texts")
    return out


def broadcast(value: object) -> object:
    """Rank 0's ``value`` on every rank (a no-op outside a group)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(action: Callable[[], T]) -> T:
    """``action()`` run on rank 0 alone, its value, or its failure, shared with every rank (outside a group: just
    ``action()``).

    For what reads or writes rank 0's files: exactly one process writes, the folder need not be shared, and every
    rank decides on the same answer. A failure there fails every rank alike: a ``LinqEvalError`` is raised as it
    is on every rank (exit 2 everywhere), anything else as a ``RuntimeError`` naming it.
    """
    if not active():
        return action()
    if not world().main:
        kind, value = broadcast(None)
        if kind == "error":
            raise value
        if kind == "crash":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value
    try:
        value = action()
    except LinqEvalError as exc:
        broadcast(("error", exc))
        raise
    except Exception as exc:
        broadcast(("crash", f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"))
        raise
    broadcast(("ok", value))
    return value


def child_env() -> dict[str, str]:
    """The environment for a child process that runs on this rank together with its siblings on the other ranks
    (``compare`` runs each precision in a child), so that they form a group of their own.

    Rank 0 picks a free port on its machine (``MASTER_ADDR``) and its child hosts the group's store there: a second
    group on the launcher's store would meet the keys of the first. Outside a group: this environment unchanged.
    """
    env = dict(os.environ)
    if not active():
        return env
    port = broadcast(_free_port() if world().main else None)
    env.update(MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="False")
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def shutdown() -> None:
    """Leave the group. After finished work the ranks leave together (a barrier first): a rank that tore its gloo
    connections down while another still held the group has, rarely, aborted the other at exit (SIGABRT,
    "terminate called without an active exception"), a finished run turned into a launcher failure. While an
    exception is on its way (``shutdown`` in a ``finally`` or ``except``) it leaves at once: the other ranks may
    never reach a barrier, and the launcher stops them when this rank exits non-zero."""
    if active():
        import torch.distributed as dist

        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()
