"""Streaming Markdown without re-rendering the whole answer on every token.

`BlockSplitter` cuts the streamed text into finished blocks (paragraphs, lists, closed code fences —
anything followed by a blank line outside a fence) and the block still being written. A finished block
is rendered once and printed for good; only the block in progress is re-rendered, and only its last
screenful, so the cost per token stays flat however long the answer grows.
"""

from __future__ import annotations

import re
import textwrap

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markdown import Markdown
from rich.padding import Padding
from rich.segment import Segment
from rich.text import Text

CODE_THEME = "ansi_dark"  # the terminal's own palette: readable on dark and light backgrounds
_LIST_ITEM = re.compile(r"^\s{0,3}(?:[-*+]|\d{1,9}[.)])\s")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
LIVE_MARKDOWN_CHARS = 3000  # a block in progress longer than this is shown as plain text until it ends


class BlockSplitter:
    """Incremental splitter. `feed` returns the blocks that just finished; `pending` is the rest."""

    def __init__(self) -> None:
        self._lines: list[str] = []  # complete lines of the block in progress
        self._parts: list[str] = []  # pieces of the line in progress (joined only when it ends)
        self._fence: str | None = None  # the marker of the open code fence, if any
        self.last_was_list = False  # the last finished block was a list (continuations follow)

    @property
    def in_fence(self) -> bool:
        return self._fence is not None

    def feed(self, text: str) -> list[str]:
        if "\n" not in text:
            if text:
                self._parts.append(text)
            return []
        self._parts.append(text)
        *complete, last = "".join(self._parts).split("\n")
        self._parts = [last] if last else []
        done: list[str] = []
        for line in complete:
            block = self._line(line)
            if block is not None:
                done.append(block)
        return done

    def _line(self, line: str) -> str | None:
        if self._fence is not None:
            self._lines.append(line)
            stripped = line.strip()
            if stripped.startswith(self._fence) and not stripped.strip(self._fence[0]):
                self._fence = None
                return self._finish()
            return None
        match = _FENCE.match(line)
        if match:
            self._fence = match.group(1)
            self._lines.append(line)
            return None
        if not line.strip():
            return self._finish() if self._lines else None
        self._lines.append(line)
        return None

    def _finish(self) -> str:
        block = "\n".join(self._lines)
        self._lines = []
        return block

    def pending(self, max_lines: int | None = None) -> str:
        """The block in progress (for a code fence: its opening line and the last `max_lines` lines)."""
        lines = self._lines
        if max_lines is not None and len(lines) > max_lines + 1:
            lines = ([lines[0]] if self._fence is not None else []) + lines[-max_lines:]
        tail = "".join(self._parts)
        return "\n".join(lines + [tail]) if tail else "\n".join(lines)

    def flush(self) -> str | None:
        """End of the stream: whatever is left is a finished block."""
        tail = "".join(self._parts)
        self._parts = []
        if tail:
            self._lines.append(tail)
        block = "\n".join(self._lines).rstrip("\n")
        self._lines, self._fence = [], None
        return block if block.strip() else None


def render_block(block: str, *, after_list: bool = False) -> RenderableType:
    """A finished block as Markdown. An indented block right after a list is a continuation of a list item:
    dedent it (so `   ```python` stays a fence) and indent the rendering instead."""
    if after_list:
        dedented = textwrap.dedent(block)
        indent = len(block.split("\n", 1)[0]) - len(block.split("\n", 1)[0].lstrip())
        if dedented != block and indent:
            return Padding(Markdown(dedented, code_theme=CODE_THEME), (0, 0, 0, min(indent, 8)))
    return Markdown(block, code_theme=CODE_THEME)


def is_list_block(block: str) -> bool:
    return bool(_LIST_ITEM.match(block))


def render_pending(text: str) -> RenderableType:
    if len(text) > LIVE_MARKDOWN_CHARS:
        return Text(text[-LIVE_MARKDOWN_CHARS:])
    return Markdown(text, code_theme=CODE_THEME)


class Tail:
    """Render a renderable but keep only its last `rows` lines (a live region must fit the screen);
    `rows=-1` keeps them all. `prefix` starts every line (the reasoning block's bar)."""

    def __init__(self, renderable: RenderableType, rows: int, prefix: Text | None = None) -> None:
        self.renderable = renderable
        self.rows = rows
        self.prefix = prefix

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width - (self.prefix.cell_len if self.prefix else 0)
        lines = console.render_lines(self.renderable, options.update(width=max(10, width), height=None), pad=False)
        new_line = Segment.line()
        for line in lines[-self.rows:] if self.rows >= 0 else lines:
            if self.prefix is not None:
                yield from self.prefix.render(console)
            yield from line
            yield new_line
