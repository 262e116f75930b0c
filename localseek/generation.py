"""One turn of generation as typed events: `Reasoning`, `Answer`, then `Done` with stats.

This joins the engine (tokens) and the reasoning parser (think/answer split); any UI consumes the events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from localseek.chat import FALLBACK_TEMPLATE, ChatTemplate
from localseek.engine import Engine, Sampling, Stats
from localseek.reasoning import Event, Reasoning, ReasoningParser


@dataclass(frozen=True)
class Done:
    stats: Stats
    reasoning: str
    answer: str
    prompt_opened_think: bool = False


@dataclass
class Turn:
    """Accumulates a turn's text while streaming (also kept when the turn is interrupted)."""

    reasoning: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)

    def add(self, event: Event) -> None:
        (self.reasoning if isinstance(event, Reasoning) else self.answer).append(event.text)


def template_for(engine: Engine) -> ChatTemplate:
    source = engine.metadata.get("tokenizer.chat_template") or FALLBACK_TEMPLATE
    return ChatTemplate(source=source, bos_token=engine.bos_text, eos_token=engine.eos_text)


def respond(
    engine: Engine,
    messages: list[dict[str, str]],
    sampling: Sampling,
    *,
    template: ChatTemplate | None = None,
    turn: Turn | None = None,
    template_vars: dict[str, Any] | None = None,
) -> Iterator[Event | Done]:
    """Render the conversation, stream the reply, yield events. `turn` (if given) collects the text."""
    template = template or template_for(engine)
    prompt = template.render(messages, add_generation_prompt=True, **(template_vars or {}))
    opened = ReasoningParser.prompt_ends_in_think(prompt)
    parser = ReasoningParser(prompt_opened_think=opened)
    turn = turn if turn is not None else Turn()
    tokens = engine.tokenize(prompt)
    for piece in engine.stream(tokens, sampling):
        for event in parser.feed(piece):
            turn.add(event)
            yield event
    for event in parser.flush():
        turn.add(event)
        yield event
    yield Done(engine.last_stats, "".join(turn.reasoning), "".join(turn.answer), opened)
