"""Showing a turn as it streams: `ChatView` on a terminal (Rich), `PlainView` for pipes and scripts.

On a terminal the reasoning streams live in a dimmed block (its last screenful), which collapses to one
line — "Thought for 8.2 s · 412 tokens" — when the answer starts. The answer is Markdown: finished blocks
are printed once, only the block in progress lives in the refreshing region (see `markdown.py`). A status
line follows each reply: time to first token, tokens/s, context used.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from localseek.chat.commands import Reply
from localseek.chat.generation import Done, ThinkingDone
from localseek.chat.reasoning import Answer, Reasoning
from localseek.chat.session import ContextTrimmed
from localseek.runtime.options import Stats
from localseek.tui.markdown import (
    BlockSplitter,
    ReasoningTail,
    Tail,
    is_list_block,
    markdown,
    render_block,
    render_pending,
)

StatsSource = Callable[[], "Stats | None"]
_BAR = "│ "
THINKING_ROWS = 12  # the live reasoning block shows at most this many of its last lines
# Model output is untrusted: control characters (ESC above all) must not reach the terminal as such.
_CONTROL = {c: "\ufffd" for c in [*range(9), *range(11, 32), 127] if c != 13}
_CONTROL[13] = None


def printable(text: str) -> str:
    return text.translate(_CONTROL)


def _count(tokens: int) -> str:
    return f"{tokens} token{'s' if tokens != 1 else ''}"


def thought_line(seconds: float, tokens: int, *, forced: bool = False, interrupted: bool = False) -> str:
    if forced and tokens == 0:
        return "Thinking skipped (reasoning budget 0)"
    line = f"Thought for {seconds:.1f} s · {_count(tokens)}"
    if forced:
        line += " · budget reached"
    if interrupted:
        line += " · interrupted"
    return line


def stats_line(stats: Stats) -> str:
    line = (
        f"first token {stats.time_to_first_token * 1000:.0f} ms · {stats.tokens_per_second:.1f} tok/s · "
        f"{_count(stats.generated_tokens)} · context {stats.prompt_tokens + stats.generated_tokens}/{stats.n_ctx}"
    )
    if stats.drafted:
        line += f" · drafts accepted {stats.draft_accepted}/{stats.drafted}"
    reason = {"length": "stopped at max tokens", "context": "context full"}.get(stats.stop_reason)
    return f"{line} · {reason}" if reason else line


class _EventView:
    """What every view shares: feed a turn's events to `handle`, return the final `Done`."""

    def handle(self, event: object) -> None:
        raise NotImplementedError

    def show(self, events: Iterable[object]) -> Done | None:
        done = None
        for event in events:
            if isinstance(event, Done):
                done = event
            else:
                self.handle(event)
        return done


class ChatView(_EventView):
    """Rich rendering of one turn at a time. Call `handle` for each event, then `end_turn`."""

    def __init__(
        self,
        console: Console,
        *,
        show_thinking: bool = True,
        stats: StatsSource | None = None,
        refresh_hz: float = 10.0,
        animate: bool = True,
        no_answer_hint: str | None = "/think show shows it",
    ) -> None:
        self.console = console
        self.show_thinking = show_thinking
        # After a reply that ended inside the reasoning: what to do about it (None: the caller says it).
        self.no_answer_hint = no_answer_hint
        self._stats = stats
        self._min_interval = 1.0 / refresh_hz
        self._animate = animate
        self._live: Live | None = None
        self._reset()

    def _reset(self) -> None:
        self._phase = "waiting"  # waiting → thinking → answer
        self._reasoning: list[str] = []
        self._reasoning_tail = ""
        self._splitter = BlockSplitter()
        self._answer_seen = False
        self._blocks = 0  # answer blocks printed so far
        self._think_started = 0.0
        self._last_refresh = 0.0
        self._thought: ThinkingDone | None = None
        self._spinner = Spinner("dots", style="think.header")

    # -- the turn --------------------------------------------------------------------------------
    def begin_turn(self) -> None:
        self._reset()
        self._live = _Live(
            self,
            _Region(self),
            console=self.console,
            auto_refresh=self._animate,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def handle(self, event: object) -> None:
        if isinstance(event, Reasoning):
            self.stream_reasoning(event.text)
        elif isinstance(event, Answer):
            self.stream_answer(event.text)
        elif isinstance(event, ThinkingDone):
            self.end_reasoning(event)
        elif isinstance(event, ContextTrimmed):
            self.notice(
                f"The conversation outgrew the context: {event.dropped_turns} oldest messages are no longer "
                "sent to the model (the system prompt stays). /clear starts afresh."
            )

    def stream_reasoning(self, text: str) -> None:
        text = printable(text)
        if self._phase == "waiting":
            self._phase = "thinking"
            self._think_started = time.perf_counter()
        self._reasoning.append(text)
        if self.show_thinking:
            # Keep only what could be on screen: the live block shows the tail, never the whole text.
            self._reasoning_tail = (self._reasoning_tail + text)[-self._tail_keep:]
        self._maybe_refresh()

    def end_reasoning(self, done: ThinkingDone) -> None:
        if self.show_thinking and self._phase == "thinking":
            self._refresh()  # draw the block's last state once, however fast the tokens came
        self._thought = done
        self._phase = "answer"
        self._print(Text(thought_line(done.seconds, done.tokens, forced=done.forced), style="think.summary"))

    def stream_answer(self, text: str) -> None:
        text = printable(text)
        if self._phase != "answer":
            if self._phase == "thinking" and self._thought is None:
                seconds = time.perf_counter() - self._think_started
                self._print(Text(thought_line(seconds, self._reasoning_tokens()), style="think.summary"))
            self._phase = "answer"
        if not self._answer_seen:
            text = text.lstrip("\n")
            if not text:
                return
            self._answer_seen = True
        for block in self._splitter.feed(text):
            self._commit(block)
        self._maybe_refresh()

    def end_turn(self, done: Done | None, *, interrupted: bool = False) -> None:
        """Print what is left of the answer, the summary lines, and stop the live region."""
        if self._phase == "thinking" and self._thought is None:
            seconds = time.perf_counter() - self._think_started
            tokens = done.reasoning_tokens if done else self._reasoning_tokens()
            self._print(Text(thought_line(seconds, tokens, interrupted=interrupted), style="think.summary"))
            if not interrupted and done is not None and self.no_answer_hint:
                self._print(Text(f"(no answer: the reply ended inside the reasoning; {self.no_answer_hint})",
                                 style="notice"))
        block = self._splitter.flush()
        if block is not None:
            self._commit(block)
        self._stop()
        if interrupted:
            self.console.print("[interrupted]", style="notice", markup=False)
        if done is not None:
            self.console.print(stats_line(done.stats), style="stats", markup=False)
        self._phase = "waiting"

    def abort(self) -> None:
        """Stop the live region after an error, keeping what was printed."""
        self._stop()

    # -- outside a turn ----------------------------------------------------------------------------
    def notice(self, text: str, kind: str = "notice") -> None:
        self._print(Text(text, style=kind))

    def show_reasoning(self, turn: dict[str, str]) -> None:
        """`/think show`: re-open a past reasoning block in full."""
        text = printable(turn.get("reasoning", "")).strip("\n")
        self.console.print(Text("Thinking", style="think.header"))
        self.console.print(Tail(Text(text, style="think.text"), rows=-1, prefix=Text(_BAR, style="think.bar")))

    def show_reply(self, reply: Reply) -> None:
        if reply.reasoning is not None:
            self.show_reasoning(reply.reasoning)
        if reply.text:
            style = {"error": "error", "notice": "notice"}.get(reply.kind, "info")
            # text from the model's file (a template, a name) never reaches the terminal as escape sequences
            self.console.print(printable(reply.text), style=style, markup=False, highlight=False)
        if reply.rows:
            table = Table.grid(padding=(0, 2))
            table.add_column(style="key", no_wrap=True)
            table.add_column()
            for key, value in reply.rows:
                table.add_row(Text(printable(key)), Text(printable(value)))
            self.console.print(table)
        if reply.transcript:
            self.show_transcript(reply.transcript)

    def show_transcript(self, turns: list[dict[str, str]]) -> None:
        for t in turns:
            if t["role"] == "user":
                self.console.print(Text(">>> ", style="prompt") + Text(printable(t["content"])))
            else:
                if t.get("reasoning"):
                    self.console.print(Text("(reasoning kept: /think show)", style="think.summary"))
                self.console.print(markdown(printable(t["content"])))
                if t.get("interrupted"):
                    self.console.print("[interrupted]", style="notice", markup=False)

    # -- internals ------------------------------------------------------------------------------
    def _commit(self, block: str) -> None:
        renderable = render_block(block, after_list=self._splitter.last_was_list)
        if self._blocks:
            renderable = Group(Text(""), renderable)  # blocks apart by a blank line, as in the source
        self._blocks += 1
        self._splitter.last_was_list = is_list_block(block) or (
            self._splitter.last_was_list and block[:1].isspace()
        )
        self._print(renderable)

    def _print(self, renderable: RenderableType) -> None:
        if self._live is not None and self._live.is_started:
            self._live.console.print(renderable)  # this redraws the live region below it too
            self._last_refresh = time.perf_counter()
        else:
            self.console.print(renderable)

    def _rows(self) -> int:
        return max(3, self.console.size.height - 4)

    def _thinking_rows(self) -> int:
        return min(THINKING_ROWS, self._rows() - 1)

    @property
    def _tail_keep(self) -> int:
        return self._thinking_rows() * max(20, self.console.size.width - len(_BAR))

    def _reasoning_tokens(self) -> int:
        stats = self._stats() if self._stats else None
        return stats.generated_tokens if stats else len(self._reasoning)

    def _maybe_refresh(self) -> None:
        now = time.perf_counter()
        if now - self._last_refresh >= self._min_interval:
            self._refresh(now)

    def _refresh(self, now: float | None = None) -> None:
        self._last_refresh = now or time.perf_counter()
        if self._live is not None and self._live.is_started:
            self._live.refresh()

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def region(self) -> RenderableType:
        """What the live region shows now (rendered on refresh, so never more than once per frame)."""
        rows = self._rows()
        stats = self._stats() if self._stats else None
        if self._phase == "waiting":
            label = "Reading the prompt…"
            if stats is not None and stats.prompt_tokens:
                label = f"Reading the prompt ({stats.prompt_tokens} tokens)…"
            return self._status(label)
        if self._phase == "thinking":
            seconds = time.perf_counter() - self._think_started
            tokens = stats.generated_tokens if stats else len(self._reasoning)
            header = self._status(f"Thinking… {seconds:.1f} s · {_count(tokens)}")
            if not self.show_thinking:
                return header
            body = ReasoningTail(self._reasoning_tail.lstrip("\n"), self._thinking_rows(), style="think.text",
                                 bar=_BAR, bar_style="think.bar")
            return Group(header, body)
        pending = self._splitter.pending(max_lines=rows if self._splitter.in_fence else 2 * rows)
        parts: list[RenderableType] = []
        if pending.strip():
            parts.append(Tail(render_pending(pending), rows - 1))
        if stats is not None and stats.generated_tokens:
            parts.append(self._status(f"{_count(stats.generated_tokens)} · {stats.tokens_per_second:.1f} tok/s"))
        return Group(*parts)

    def _status(self, label: str) -> RenderableType:
        frame = self._spinner.render(time.perf_counter())
        return Text.assemble(frame if isinstance(frame, Text) else "", " ", (label, "stats"))


class _Live(Live):
    """Rich's Live, whose timer refresh (it animates the spinner and the clock while no token comes) is
    skipped when tokens are already refreshing the region."""

    def __init__(self, view: ChatView, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._view = view

    def refresh(self) -> None:
        timer = threading.current_thread() is not threading.main_thread()
        if timer and time.perf_counter() - self._view._last_refresh < 0.2:
            return
        super().refresh()


class _Region:
    def __init__(self, view: ChatView) -> None:
        self.view = view

    def __rich__(self) -> RenderableType:
        return self.view.region()


class PlainView(_EventView):
    """No terminal: the answer as plain text on `out`; reasoning on `err` only when asked for."""

    def __init__(self, *, out: TextIO | None = None, err: TextIO | None = None, show_thinking: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.show_thinking = show_thinking
        self._reset()

    def _reset(self) -> None:
        self._reasoning_open = False
        self._answer_started = False
        self._answer_ends_newline = True

    def begin_turn(self) -> None:
        self._reset()

    def handle(self, event: object) -> None:
        if isinstance(event, Reasoning):
            if self.show_thinking:
                text = event.text if self._reasoning_open else event.text.lstrip("\n")
                self._reasoning_open = True
                self.err.write(text)
                self.err.flush()
        elif isinstance(event, Answer):
            text = event.text
            if not self._answer_started:
                text = text.lstrip("\n")
                if not text:
                    return
                self._close_reasoning()
                self._answer_started = True
            self.out.write(text)
            self.out.flush()
            self._answer_ends_newline = text.endswith("\n")
        elif isinstance(event, ContextTrimmed):
            self.notice(f"note: {event.dropped_turns} oldest messages no longer fit the context and were left out")

    def _close_reasoning(self) -> None:
        if self._reasoning_open:
            self.err.write("\n")
            self.err.flush()
            self._reasoning_open = False

    def end_turn(self, done: Done | None, *, interrupted: bool = False) -> None:
        self._close_reasoning()
        if self._answer_started and not self._answer_ends_newline:
            self.out.write("\n")
            self.out.flush()

    def abort(self) -> None:
        self.end_turn(None)

    def notice(self, text: str, kind: str = "notice") -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def show_reasoning(self, turn: dict[str, str]) -> None:
        self.out.write(turn.get("reasoning", "").strip("\n") + "\n")

    def show_reply(self, reply: Reply) -> None:
        if reply.reasoning is not None:
            self.show_reasoning(reply.reasoning)
        if reply.text:
            (self.err if reply.kind == "error" else self.out).write(reply.text + "\n")
        for key, value in reply.rows:
            self.out.write(f"{key}: {value}\n")
        for t in reply.transcript or []:
            self.out.write(f"{'>>> ' if t['role'] == 'user' else ''}{t['content']}\n")
        self.out.flush()
