"""Split a streamed completion into reasoning (`<think>…</think>`) and answer.

The parser is fed text pieces as they are detokenized, so a tag may arrive split over several pieces
(`<th` + `ink>`). It holds back only the shortest suffix that could still become a tag, so text is
released as soon as it cannot be part of one. It can start inside the think block, for templates
whose generation prompt already ends with `<think>\\n` (R1-0528, the updated distill templates).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

Phase = Literal["start", "thinking", "answer"]


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class Answer:
    text: str


Event = Reasoning | Answer


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ReasoningParser:
    """Stateful splitter. Feed pieces with `feed`, then call `flush` at the end of the stream.

    States: `start` (nothing but whitespace seen; an opening tag may still come), `thinking`, `answer`.
    A model that skips thinking goes from `start` straight to `answer` on its first non-space text.
    """

    def __init__(self, *, prompt_opened_think: bool = False) -> None:
        self.phase: Phase = "thinking" if prompt_opened_think else "start"
        self._buf = ""
        self._leading_ws = ""
        self.thinking_started = prompt_opened_think
        self.thinking_closed = False
        self._strip_next_newlines = False  # newlines right after </think> are formatting
        self._reasoning_started = False  # a newline right after <think> is formatting too

    @staticmethod
    def prompt_ends_in_think(prompt: str) -> bool:
        """True when the rendered prompt leaves a `<think>` block open for the model to continue."""
        last_open = prompt.rfind(OPEN_TAG)
        return last_open != -1 and prompt.find(CLOSE_TAG, last_open) == -1

    def feed(self, piece: str) -> list[Event]:
        self._buf += piece
        return list(self._drain(final=False))

    def flush(self) -> list[Event]:
        events = list(self._drain(final=True))
        if self._leading_ws and self.phase == "start":
            events.append(Answer(self._leading_ws))
            self._leading_ws = ""
        return events

    def _drain(self, *, final: bool) -> Iterator[Event]:
        while self._buf:
            if self.phase == "start":
                stripped = self._buf.lstrip()
                if not stripped:
                    self._leading_ws += self._buf
                    self._buf = ""
                    return
                if stripped.startswith(OPEN_TAG):
                    self._buf = stripped[len(OPEN_TAG):]
                    self._leading_ws = ""
                    self.phase = "thinking"
                    self.thinking_started = True
                    continue
                if OPEN_TAG.startswith(stripped) and not final:
                    return  # might still become "<think>"
                self.phase = "answer"
                self._buf = self._leading_ws + self._buf
                self._leading_ws = ""
                continue
            if self.phase == "thinking":
                idx = self._buf.find(CLOSE_TAG)
                if idx != -1:
                    text = self._buf[:idx] if self._reasoning_started else self._buf[:idx].lstrip("\n")
                    if text:
                        yield Reasoning(text)
                    self._buf = self._buf[idx + len(CLOSE_TAG):].lstrip("\n")
                    self.phase = "answer"
                    self.thinking_closed = True
                    if not self._buf and not final:
                        self._strip_next_newlines = True
                    continue
                keep = 0 if final else _partial_suffix(self._buf, CLOSE_TAG)
                text, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep:]
                if not self._reasoning_started:
                    text = text.lstrip("\n")
                if text:
                    self._reasoning_started = True
                    yield Reasoning(text)
                return
            # answer
            buf = self._buf
            if self._strip_next_newlines:
                buf = buf.lstrip("\n")
                if buf:
                    self._strip_next_newlines = False
            self._buf = ""
            if buf:
                yield Answer(buf)
            return
