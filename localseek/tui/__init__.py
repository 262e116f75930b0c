"""The terminal layer: Rich output and prompt-toolkit input. Nothing else in localseek imports Rich or
prompt-toolkit except the CLI.

- `view`: a turn as it streams (`ChatView` on a terminal, `PlainView` for pipes).
- `markdown`: streaming Markdown rendering at a flat cost per token.
- `chatloop`: the interactive chat — input, slash commands, Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from rich.console import Console
from rich.theme import Theme

THEME = Theme(
    {
        "think.header": "bold magenta",
        "think.text": "dim italic",
        "think.bar": "dim magenta",
        "think.summary": "dim magenta",
        "answer": "default",
        "stats": "dim",
        "prompt": "bold cyan",
        "notice": "yellow",
        "error": "bold red",
        "info": "default",
        "key": "cyan",
    }
)


def make_console(file: TextIO | None = None, *, stderr: bool = False, **kwargs: object) -> Console:
    """A console with localseek's theme; honours NO_COLOR (no colours, styles like dim stay)."""
    return Console(
        file=file or (sys.stderr if stderr else sys.stdout),
        theme=THEME,
        highlight=False,
        no_color=bool(os.environ.get("NO_COLOR")),
        **kwargs,  # type: ignore[arg-type]
    )


from localseek.tui.view import ChatView, PlainView, stats_line, thought_line

__all__ = ["THEME", "ChatView", "PlainView", "make_console", "stats_line", "thought_line"]
