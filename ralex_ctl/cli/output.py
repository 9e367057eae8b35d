"""The shared output and error layer of `ralexctl`: its consoles and the one-line error path."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from rich.console import Console

from ralex_ctl.textout import safe_line

# Piped or redirected output is not cut to 80 columns: tables keep full model names (COLUMNS still wins).
# Text from outside goes through safe_line; emoji codes stay text (`:x:` in a message is not an emoji).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160,
                  emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)
STATE = {"verbose": False}


def fail(problem: object) -> NoReturn:
    """The error path: one line `error: <what happened and the fix>` on stderr, exit code 1."""
    err.print(f"[red]error:[/red] {safe_line(problem)}", highlight=False)
    raise SystemExit(1) from None

