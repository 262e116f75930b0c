"""Terminal output for generation events, and the minimal interactive loop.

On a terminal, reasoning streams live in a dim, italic block under a "Thinking" header and the answer
follows in normal text. Off a terminal (pipes, scripts), the answer alone goes to stdout; reasoning goes
to stderr unless hidden, and no escape codes are written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console
from rich.theme import Theme

from localseek.engine import Stats
from localseek.generation import Done
from localseek.reasoning import Answer, Event, Reasoning

THEME = Theme(
    {
        "think.header": "bold magenta",
        "think.text": "dim italic",
        "answer": "default",
        "stats": "dim",
        "prompt": "bold cyan",
        "notice": "yellow",
    }
)


def make_console(file: TextIO | None = None) -> Console:
    return Console(
        file=file or sys.stdout,
        theme=THEME,
        highlight=False,
        no_color=bool(os.environ.get("NO_COLOR")),
        soft_wrap=True,
    )


class StreamView:
    """Renders one turn's events as they arrive."""

    def __init__(self, *, show_thinking: bool = True, console: Console | None = None, plain: bool | None = None):
        self.console = console or make_console()
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.show_thinking = show_thinking
        self._in_reasoning = False
        self._answer_started = False

    def stream_reasoning(self, text: str) -> None:
        if not self.show_thinking:
            return
        if self.plain:
            sys.stderr.write(text)
            sys.stderr.flush()
            self._in_reasoning = True
            return
        if not self._in_reasoning:
            self.console.print("Thinking…", style="think.header")
            self._in_reasoning = True
        self.console.print(text, style="think.text", end="", markup=False)

    def stream_answer(self, text: str) -> None:
        if not self._answer_started:
            if self._in_reasoning:
                if self.plain:
                    sys.stderr.write("\n")
                    sys.stderr.flush()
                else:
                    self.console.print("\n")
            self._answer_started = True
        if self.plain:
            self.console.file.write(text)
            self.console.file.flush()
        else:
            self.console.print(text, style="answer", end="", markup=False)

    def end_turn(self, stats: Stats | None, *, interrupted: bool = False) -> None:
        if self.plain:
            if self._in_reasoning and not self._answer_started:
                sys.stderr.write("\n")
            if self._answer_started:
                self.console.file.write("\n")
                self.console.file.flush()
            return
        self.console.print()
        if interrupted:
            self.console.print("[interrupted]", style="notice")
        if stats is not None:
            self.console.print(stats_line(stats), style="stats")

    def show(self, events: Iterable[Event | Done]) -> Done | None:
        done = None
        for event in events:
            if isinstance(event, Reasoning):
                self.stream_reasoning(event.text)
            elif isinstance(event, Answer):
                self.stream_answer(event.text)
            elif isinstance(event, Done):
                done = event
        return done


def stats_line(stats: Stats) -> str:
    return (
        f"{stats.generated_tokens} tokens · {stats.tokens_per_second:.1f} tok/s · "
        f"first token {stats.time_to_first_token * 1000:.0f} ms · "
        f"context {stats.prompt_tokens + stats.generated_tokens}/{stats.n_ctx}"
        + (f" · drafts accepted {stats.draft_accepted}/{stats.drafted}" if stats.drafted else "")
    )
