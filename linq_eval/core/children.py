"""Child processes that stop with their parent.

``linq-eval compare`` and the trajectory study evaluate each precision or cell in a child process. Ctrl-C reaches
the whole process group, but a parent that is killed on its own (``kill PID``, an OOM kill, a closed session)
would leave its child evaluating: it then writes its results into folders that a restarted run is already using,
and shares the cores with it (one such orphan made a study cell count a third of its tokens, and a benchmark
measure a third of the machine's peak). On Linux a child asks the kernel for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); the parent's pid, passed in the environment, covers a parent that died before the
child got that far. Elsewhere this is a no-op. Imports neither torch nor mteb.
"""

from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "LINQ_EVAL_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with this process recorded as the child's parent."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def stop_with_parent() -> None:
    """Called first in a child: SIGTERM when the parent dies; exit at once if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit() and os.getppid() != int(parent):  # re-parented: the parent is gone
        raise SystemExit(f"linq-eval: parent process {parent} is gone: stopping")
