"""The rich console every command prints its tables on."""

from __future__ import annotations

from typing import Any


def console() -> Any:  # noqa: ANN401 -- rich.console.Console, imported lazily (--help stays instant)
    from rich.console import Console

    out = Console()
    # piped into a log or CI, rich assumes 80 columns and truncates every number: give tables room instead
    return out if out.is_terminal else Console(width=150)
