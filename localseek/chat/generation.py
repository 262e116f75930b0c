"""One turn of generation as typed events: `Reasoning`, `Answer`, `ThinkingDone`, then `Done` with stats.

This joins the engine (tokens) and the reasoning parser (think/answer split); any UI consumes the events.
It also owns the two things that need both: fitting the conversation into the context (dropping the oldest
turns, never the system prompt) and the reasoning budget (closing `</think>` after N reasoning tokens).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gguf import Keys

from localseek.chat.conversation import (
    FALLBACK_TEMPLATE,
    MODEL_TEMPLATE,
    ChatTemplate,
    Conversation,
    PromptTooLong,
)
from localseek.chat.reasoning import Answer, Event, Reasoning, ReasoningParser
from localseek.errors import UsageError
from localseek.runtime.engine import Engine
from localseek.runtime.options import Sampling, Stats

# What is forced into the stream when the reasoning budget runs out (llama.cpp's server forces its
# end tag the same way; the newlines are how DeepSeek's models close the block themselves).
BUDGET_CLOSE = "\n</think>\n\n"
# A prompt longer than this many UTF-8 bytes per context token cannot fit (real vocabularies' tokens average ~4
# bytes and their longest are a few dozen); refused before tokenizing.
MAX_BYTES_PER_TOKEN = 64


@dataclass(frozen=True)
class ThinkingDone:
    """The think block closed (the answer starts next). `forced`: closed by the reasoning budget."""

    seconds: float
    tokens: int
    forced: bool = False


@dataclass(frozen=True)
class Done:
    stats: Stats
    reasoning: str
    answer: str
    prompt_opened_think: bool = False
    reasoning_tokens: int = 0
    reasoning_seconds: float = 0.0
    budget_hit: bool = False


@dataclass
class Turn:
    """Accumulates a turn's text and the engine's measurements while streaming (also kept when the turn is
    interrupted): a view may read `stats` live."""

    reasoning: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    thinking: ThinkingDone | None = None
    stats: Stats = field(default_factory=Stats)

    def add(self, event: Event) -> None:
        (self.reasoning if isinstance(event, Reasoning) else self.answer).append(event.text)


@dataclass(frozen=True)
class Prompt:
    """A rendered, tokenized prompt ready for `respond`."""

    text: str
    tokens: list[int]
    opened_think: bool
    dropped_turns: int = 0  # turns left out (oldest first) by this call to make it fit


def template_for(engine: Engine, source: str | None = None, origin: str | None = None) -> ChatTemplate:
    """The model's own chat template (R1's format when it has none), or `source` (a --template-file) instead."""
    if source is None:
        source = engine.metadata.get(Keys.Tokenizer.CHAT_TEMPLATE) or FALLBACK_TEMPLATE
        origin = None
    return ChatTemplate(source=source, bos_token=engine.bos_text, eos_token=engine.eos_text,
                        origin=origin or MODEL_TEMPLATE)


def tokenize_prompt(engine: Engine, text: str) -> list[int]:
    """Tokens of a rendered prompt, refusing (PromptTooLong) text that cannot fit the context before it reaches
    llama.cpp's tokenizer (which allocates in proportion to the text and aborts the process when that fails)."""
    n_ctx = engine.n_ctx
    limit = n_ctx * MAX_BYTES_PER_TOKEN
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PromptTooLong(
            f"The prompt is {size:,} bytes, more than a {n_ctx:,}-token context can hold (at most {limit:,} bytes, "
            f"{MAX_BYTES_PER_TOKEN} per token); shorten it, or raise --ctx."
        )
    return engine.tokenize(text)


def build_prompt(
    engine: Engine,
    conversation: Conversation,
    *,
    template: ChatTemplate,
    template_vars: dict[str, Any] | None = None,
    reserve: int = 0,
) -> Prompt:
    """Render the conversation; while it leaves fewer than `reserve` tokens free for the reply, leave out
    the oldest turns (never the system prompt, never the newest user message).

    Raises UsageError when even the newest message alone does not fit.
    """
    n_ctx = engine.n_ctx
    dropped = 0
    while True:
        try:
            text = template.render(conversation.for_model(), add_generation_prompt=True, **(template_vars or {}))
            tokens = tokenize_prompt(engine, text)
        except PromptTooLong:
            if not conversation.can_drop():
                raise
            dropped += conversation.drop_oldest()
            continue
        if len(tokens) + reserve <= n_ctx or len(tokens) < n_ctx and not conversation.can_drop():
            return Prompt(text, tokens, ReasoningParser.prompt_ends_in_think(text), dropped)
        if not conversation.can_drop():
            raise UsageError(
                f"This message needs {len(tokens)} tokens but the context holds {n_ctx}; "
                "shorten it, or raise --ctx."
            )
        dropped += conversation.drop_oldest()


def respond(
    engine: Engine,
    messages: list[dict[str, str]] | None,
    sampling: Sampling,
    *,
    template: ChatTemplate | None = None,
    turn: Turn | None = None,
    template_vars: dict[str, Any] | None = None,
    think_budget: int | None = None,
    prompt: Prompt | None = None,
) -> Iterator[Event | ThinkingDone | Done]:
    """Render the conversation (or use `prompt`), stream the reply, yield events.

    `turn` (if given) collects the text, so an interrupted turn keeps what it had. `think_budget` caps
    the reasoning at that many tokens, then forces `</think>` and lets the model answer.
    """
    if prompt is None:
        template = template or template_for(engine)
        text = template.render(messages or [], add_generation_prompt=True, **(template_vars or {}))
        prompt = Prompt(text, tokenize_prompt(engine, text), ReasoningParser.prompt_ends_in_think(text))
    tokens, opened = prompt.tokens, prompt.opened_think
    turn = turn if turn is not None else Turn()
    budget_hit = False
    if opened and think_budget is not None and think_budget <= 0:
        # Nothing to think: close the block the template opened before the model starts.
        tokens = engine.tokenize(prompt.text + BUDGET_CLOSE)
        opened, budget_hit = False, True
        turn.thinking = ThinkingDone(0.0, 0, forced=True)
        yield turn.thinking
    parser = ReasoningParser(prompt_opened_think=opened)
    think_from = 0  # generated-token count when the block opened
    think_tokens = 0  # reasoning tokens so far (frozen when the budget forces the close)
    started_at = 0.0

    def closed() -> ThinkingDone:
        seconds = time.perf_counter() - started_at if started_at else 0.0
        turn.thinking = ThinkingDone(seconds, think_tokens, budget_hit)
        return turn.thinking

    stats = turn.stats
    for piece in engine.stream(tokens, sampling, stats):
        generated = stats.generated_tokens
        started_at = started_at or time.perf_counter()
        was_thinking = parser.phase == "thinking"
        events = parser.feed(piece)
        if parser.phase == "thinking":
            if not was_thinking:
                think_from = generated  # the piece that opened the block is the tag itself
            if not budget_hit:
                think_tokens = generated - think_from
        elif was_thinking and not budget_hit:
            think_tokens = max(0, generated - think_from - 1)  # less the closing tag
        for event in events:
            if isinstance(event, Answer) and parser.thinking_started and turn.thinking is None:
                yield closed()
            turn.add(event)
            yield event
        if parser.thinking_closed and turn.thinking is None:
            yield closed()
        if parser.phase == "thinking" and think_budget is not None and not budget_hit and think_tokens >= think_budget:
            engine.inject(BUDGET_CLOSE)
            budget_hit = True
    for event in parser.flush():
        turn.add(event)
        yield event
    yield Done(
        stats,
        "".join(turn.reasoning).rstrip("\n"),
        "".join(turn.answer).lstrip("\n"),  # after "<think></think>" in the prompt, models start with "\n\n"
        prompt.opened_think,
        reasoning_tokens=turn.thinking.tokens if turn.thinking else think_tokens,
        reasoning_seconds=turn.thinking.seconds if turn.thinking else (
            time.perf_counter() - started_at if parser.thinking_started and started_at else 0.0
        ),
        budget_hit=budget_hit,
    )
