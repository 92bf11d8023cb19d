"""The one exception type whose message is shown to users as a single line (no traceback), and the exit codes.

Exit codes of every command (``linq-eval``, ``linq-train``, ``linq-mteb``), kept here so that the gate, the CLI
and the docs cannot drift apart. A CI system must tell a broken configuration from an underpowered gate, and
neither from a regression: 0 and 1 are the gate's verdicts PASS and FAIL, 2 is every usage, configuration, input
or internal error (argparse already exits 2 on bad arguments), 3 is the gate's CANNOT DECIDE.
"""

from __future__ import annotations

EXIT_OK = 0  # success; the gate's PASS
EXIT_FAIL = 1  # the gate's FAIL: a regression was shown (never an error)
EXIT_ERROR = 2  # bad usage, configuration or input, or an internal error: nothing was decided
EXIT_CANNOT_DECIDE = 3  # the gate's CANNOT DECIDE: too few queries, unpaired or non-finite scores
EXIT_INTERRUPTED = 130  # Ctrl-C: the shell's code for SIGINT


class LinqEvalError(Exception):
    """Bad input or configuration: the message names the problem and the fix."""


def internal_error(exc: BaseException) -> str:
    """The one line shown for an exception that is not a :class:`LinqEvalError` (a bug of ours or of a library):
    its type and the first line of its message, and where the traceback is."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"internal error ({type(exc).__name__}: {first}): rerun with -v for the traceback, and please report it"
