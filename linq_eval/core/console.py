"""The rich consoles the commands print on: results (tables, verdicts) on stdout, status lines on stderr."""

from __future__ import annotations

from typing import Any


def console() -> Any:  # noqa: ANN401 -- rich.console.Console, imported lazily (--help stays instant)
    from rich.console import Console

    out = Console()
    # piped into a log or CI, rich assumes 80 columns and truncates every number: give tables room instead
    return out if out.is_terminal else Console(width=150)


def status(line: str) -> None:
    """A status line (a task or precision starting, a stored result reused): on stderr, so that stdout holds the
    results alone and a pipe (``linq-eval compare ... > report.txt``) gets only them."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(line, style="dim", markup=False, soft_wrap=True)
