"""Streaming Markdown without re-rendering the whole answer on every token.

`BlockSplitter` cuts the streamed text into finished blocks (paragraphs, lists, closed code fences —
anything followed by a blank line outside a fence) and the block still being written. A finished block
is rendered once and printed for good; only the block in progress is re-rendered, and only its last
screenful, so the cost per token stays flat however long the answer grows.
"""

from __future__ import annotations

import re
import textwrap

from markdown_it import MarkdownIt
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


def _parser() -> MarkdownIt:
    parser = getattr(_parser, "cached", None)
    if parser is None:
        parser = _parser.cached = MarkdownIt().enable("strikethrough").enable("table")  # type: ignore[attr-defined]
    return parser


_MARKDOWN_ATTRS = set(vars(Markdown("")))


def markdown(text: str) -> Markdown:
    """`rich.markdown.Markdown(text)` without building a new markdown-it parser each time (that is half the
    cost of a small block). Falls back to the plain constructor if Rich's Markdown ever stores other state."""
    attrs = {
        "markup": text, "parsed": None, "code_theme": CODE_THEME, "justify": None, "style": "none",
        "hyperlinks": True, "inline_code_lexer": None, "inline_code_theme": CODE_THEME,
    }
    if set(attrs) != _MARKDOWN_ATTRS:
        return Markdown(text, code_theme=CODE_THEME)
    md = Markdown.__new__(Markdown)
    attrs["parsed"] = _parser().parse(text)
    md.__dict__.update(attrs)
    return md


class Trimmed:
    """A renderable without its leading and trailing blank lines (Rich pads lists, tables and code blocks
    with some; blocks printed one by one are then spaced evenly by the caller)."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options.update(height=None), pad=False)

        def blank(line: list[Segment]) -> bool:
            return all(not seg.text.strip() for seg in line)

        start, end = 0, len(lines)
        while start < end and blank(lines[start]):
            start += 1
        while end > start and blank(lines[end - 1]):
            end -= 1
        new_line = Segment.line()
        for line in lines[start:end]:
            yield from line
            yield new_line


def render_block(block: str, *, after_list: bool = False) -> RenderableType:
    """A finished block as Markdown. An indented block right after a list is a continuation of a list item:
    dedent it (so `   ```python` stays a fence) and indent the rendering instead."""
    if after_list:
        dedented = textwrap.dedent(block)
        indent = len(block.split("\n", 1)[0]) - len(block.split("\n", 1)[0].lstrip())
        if dedented != block and indent:
            return Padding(Trimmed(markdown(dedented)), (0, 0, 0, min(indent, 8)))
    return Trimmed(markdown(block))


def is_list_block(block: str) -> bool:
    return bool(_LIST_ITEM.match(block))


def render_pending(text: str) -> RenderableType:
    if len(text) > LIVE_MARKDOWN_CHARS:
        return Text(text[-LIVE_MARKDOWN_CHARS:])
    return Trimmed(markdown(text))


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


def wrap_tail(text: str, width: int, rows: int) -> list[str] | None:
    """The last `rows` lines of `text` word-wrapped at `width` columns, fast, for ASCII text only
    (None otherwise: wide characters need Rich's cell-aware wrapping)."""
    if not text.isascii():
        return None
    out: list[str] = []
    for line in text.split("\n"):
        pos = 0
        while len(line) - pos > width:
            cut = line.rfind(" ", pos, pos + width + 1)
            if cut <= pos:
                out.append(line[pos:pos + width])
                pos += width
            else:
                out.append(line[pos:cut])
                pos = cut + 1
        out.append(line[pos:])
    return out[-rows:] if rows > 0 else []


class ReasoningTail:
    """The live reasoning block: its last lines, dimmed, each behind a bar."""

    def __init__(self, text: str, rows: int, *, style: str, bar: str, bar_style: str) -> None:
        self.text, self.rows, self.style, self.bar, self.bar_style = text, rows, style, bar, bar_style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(10, options.max_width - len(self.bar))
        lines = wrap_tail(self.text, width, self.rows)
        if lines is None:  # not ASCII: let Rich measure the cells
            yield Tail(Text(self.text, style=self.style), self.rows, prefix=Text(self.bar, style=self.bar_style))
            return
        style, bar_style = console.get_style(self.style), console.get_style(self.bar_style)
        new_line = Segment.line()
        for line in lines:
            yield Segment(self.bar, bar_style)
            yield Segment(line, style)
            yield new_line
