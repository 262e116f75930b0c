"""Where command output goes: one console for stdout, as wide as the terminal — or, when piped into a file or
another program, wide enough that no table row or line is wrapped (Rich would wrap at 80 columns)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from rich.console import Console

from localseek.tui import make_console

PIPE_WIDTH = 1000  # piped output: table rows stay on one line (COLUMNS, when set, still wins)


def out_console(file: TextIO | None = None) -> Console:
    """A themed console for `file` (stdout by default) that does not wrap at 80 columns when piped."""
    target = file or sys.stdout
    console = make_console(target)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPE_WIDTH
        console.soft_wrap = True  # lines of text are never broken, however long (a path, a reason)
    return console
