"""The one exception type whose message is shown to users as a single line (no traceback)."""

from __future__ import annotations


class LinqEvalError(Exception):
    """Bad input or configuration: the message names the problem and the fix."""
