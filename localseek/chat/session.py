"""An interactive chat session: conversation + settings + the last turn's results. No terminal I/O.

The TUI feeds it user text (`ask`, which yields generation events) and slash commands
(`localseek.chat.commands.run_command`); it keeps what both need to agree on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localseek.chat.conversation import ChatTemplate, Conversation
from localseek.chat.generation import Done, Prompt, ThinkingDone, Turn, build_prompt, respond, template_for
from localseek.chat.reasoning import Event
from localseek.errors import LocalseekError, UsageError
from localseek.runtime.engine import Engine
from localseek.runtime.options import Sampling, Stats


@dataclass
class ChatSettings:
    sampling: Sampling = field(default_factory=Sampling)
    think: bool = True  # hybrid templates: ask the model to reason (V3.1 `thinking` flag)
    show_thinking: bool = True  # show the reasoning live (it is always kept, for `/think show`)
    think_budget: int | None = None  # cap on reasoning tokens; then `</think>` is forced


@dataclass(frozen=True)
class ContextTrimmed:
    """Event: the oldest turns were left out so the conversation fits the context."""

    dropped_turns: int
    total_dropped: int


@dataclass
class SessionTotals:
    turns: int = 0
    generated_tokens: int = 0
    reasoning_tokens: int = 0
    generation_seconds: float = 0.0
    interrupted: int = 0


class ChatSession:
    """One model, one conversation. Not thread-safe."""

    def __init__(
        self,
        engine: Engine,
        settings: ChatSettings | None = None,
        *,
        system: str | None = None,
        model_name: str = "",
        model_facts: dict[str, Any] | None = None,
        template: ChatTemplate | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or ChatSettings()
        self.template = template or template_for(engine)  # `template`: e.g. from run --template-file
        self.hybrid = self.template.has_thinking_flag
        self.conversation = Conversation(system=system)
        self.model_name = model_name or engine.path.name
        self.model_facts = model_facts or {}
        self.last: Done | None = None
        self.last_prompt: Prompt | None = None
        self.totals = SessionTotals()
        self._turn: Turn | None = None  # the turn streaming now (or last)
        self._pending_tokens = 0  # tokens of a conversation loaded (/load) but not yet sent

    @property
    def live_stats(self) -> Stats | None:
        """The measurements of the reply being generated (for a status line while it streams)."""
        return self._turn.stats if self._turn is not None else None

    # -- facts the UI shows --------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def context_used(self) -> int:
        """Tokens of the last turn (prompt + reply): what the conversation occupies now. After `/load`, before the
        next turn, the tokens the loaded conversation will take."""
        if self.last is None:
            return self._pending_tokens
        return self.last.stats.prompt_tokens + self.last.stats.generated_tokens

    @property
    def reasons(self) -> bool:
        """Whether the next reply is expected to reason (hybrid with thinking off: no)."""
        return self.settings.think or not self.hybrid

    def template_vars(self) -> dict[str, Any]:
        if not self.hybrid:
            return {}
        return {"thinking": self.settings.think, "enable_thinking": self.settings.think}

    def reply_reserve(self) -> int:
        """Tokens kept free for the reply when fitting the conversation into the context."""
        n_ctx = self.n_ctx
        wanted = self.settings.sampling.max_tokens or n_ctx // 4
        return max(1, min(wanted, n_ctx // 2))

    # -- a turn --------------------------------------------------------------------------------
    def ask(self, text: str, turn: Turn) -> Iterator[Event | ThinkingDone | Done | ContextTrimmed]:
        """Add the user's message and stream the reply. On completion the reply joins the conversation;
        if the consumer stops early (Ctrl-C), it must call `interrupted(turn)`."""
        self._turn = turn
        self.conversation.add_user(text)
        try:
            prompt = build_prompt(
                self.engine,
                self.conversation,
                template=self.template,
                template_vars=self.template_vars(),
                reserve=self.reply_reserve(),
            )
        except UsageError:
            self.conversation.turns.pop()
            raise
        self.last_prompt = prompt
        if prompt.dropped_turns:
            yield ContextTrimmed(prompt.dropped_turns, self.conversation.dropped)
        budget = self.settings.think_budget if self.reasons else None
        for event in respond(
            self.engine, None, self.settings.sampling, turn=turn, think_budget=budget, prompt=prompt
        ):
            if isinstance(event, Done):
                self._record(event.answer, event.reasoning, event.stats, interrupted=False)
                self.last = event
                self.totals.reasoning_tokens += event.reasoning_tokens
            yield event

    def interrupted(self, turn: Turn) -> Done:
        """Keep the partial reply of a turn stopped by the user (marked as interrupted)."""
        stats = turn.stats
        stats.stop_reason = "interrupted"
        answer, reasoning = "".join(turn.answer), "".join(turn.reasoning)
        self._record(answer, reasoning, stats, interrupted=True)
        self.totals.interrupted += 1
        think = turn.thinking
        # Stopped while still reasoning: everything generated so far was reasoning (less the opening tag).
        opened = self.last_prompt is not None and self.last_prompt.opened_think
        still_thinking = max(0, stats.generated_tokens - (0 if opened else 1)) if reasoning and not answer else 0
        self.last = Done(
            stats,
            reasoning,
            answer,
            reasoning_tokens=think.tokens if think else still_thinking,
            reasoning_seconds=think.seconds if think else 0.0,
        )
        return self.last

    def _record(self, answer: str, reasoning: str, stats: Stats, *, interrupted: bool) -> None:
        self.conversation.add_assistant(answer, reasoning, interrupted=interrupted)
        self.totals.turns += 1
        self.totals.generated_tokens += stats.generated_tokens
        self.totals.generation_seconds += stats.generation_seconds

    # -- conversation management ----------------------------------------------------------------
    def clear(self) -> None:
        self.conversation.clear()
        self.last = None
        self._pending_tokens = 0

    def save(self, path: Path) -> None:
        self.conversation.save(path)

    def load(self, path: Path) -> None:
        loaded = Conversation.load(path)
        self.conversation = loaded
        self.last = None
        self._pending_tokens = self._measure()

    def _measure(self) -> int:
        """Tokens the conversation takes as the model will see it (template applied, nothing left out)."""
        messages = self.conversation.for_model()
        if not messages:
            return 0
        try:
            text = self.template.render(messages, add_generation_prompt=False, **self.template_vars())
        except LocalseekError:  # the next turn reports a broken template; loading itself worked
            return 0
        return len(self.engine.tokenize(text))
