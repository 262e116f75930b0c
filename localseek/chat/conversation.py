"""Conversation state and chat-template rendering (the GGUF's own Jinja template, sandboxed)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localseek.errors import UsageError

# Used only when a GGUF carries no template: DeepSeek-R1's format, reasoning stripped from past turns.
FALLBACK_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] %}"
    "{% endif %}{% endfor %}{{ ns.system }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{% set c = m['content'] %}"
    "{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + c + '<｜end▁of▁sentence｜>' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)


# A Jinja expression that reads `thinking` / `enable_thinking` (V3.1: "{%- if not thinking is defined -%}").
_THINKING_FLAG = re.compile(r"{[{%][^}]*\b(?:enable_)?thinking\b")


class _TemplateError(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = lambda v, indent=None, ensure_ascii=False: json.dumps(
        v, indent=indent, ensure_ascii=ensure_ascii
    )
    return env


@dataclass
class ChatTemplate:
    source: str
    bos_token: str = ""
    eos_token: str = ""

    @property
    def has_thinking_flag(self) -> bool:
        """True for hybrid templates (DeepSeek-V3.1 and later) that switch reasoning on and off with a
        `thinking` (or `enable_thinking`) variable, instead of always reasoning like R1."""
        return bool(_THINKING_FLAG.search(self.source))

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True, **extra: Any) -> str:
        try:
            template = _environment().from_string(self.source)
            return template.render(
                messages=messages,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
                **extra,
            )
        except _TemplateError as exc:
            raise UsageError(f"The model's chat template rejected the conversation: {exc}") from exc
        except jinja2.TemplateError as exc:
            raise UsageError(
                f"The model's chat template could not be rendered ({exc}); "
                "re-convert the model or pass --template-file."
            ) from exc


def strip_reasoning(text: str) -> str:
    """What R1's templates keep of a past assistant turn: everything after the last `</think>`."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.lstrip("\n")


@dataclass
class Conversation:
    """Messages exchanged so far. Assistant turns keep their reasoning for display; `for_model` strips it."""

    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)
    dropped: int = 0  # the oldest turns no longer sent to the model (they did not fit the context)

    def add_user(self, text: str) -> None:
        self.turns.append({"role": "user", "content": text})

    def add_assistant(self, answer: str, reasoning: str = "", interrupted: bool = False) -> None:
        turn = {"role": "assistant", "content": answer, "reasoning": reasoning}
        if interrupted:
            turn["interrupted"] = "true"
        self.turns.append(turn)

    def for_model(self) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for t in self.turns[self.dropped:]:
            content = strip_reasoning(t["content"]) if t["role"] == "assistant" else t["content"]
            messages.append({"role": t["role"], "content": content})
        return messages

    def can_drop(self) -> bool:
        """Whether an older exchange can still be left out (the newest user message always stays)."""
        return self._next_exchange() is not None

    def drop_oldest(self) -> int:
        """Stop sending the oldest exchange (a user turn and the replies up to the next user turn).
        Returns how many turns were dropped (0 when nothing can be). The system prompt is never dropped."""
        nxt = self._next_exchange()
        if nxt is None:
            return 0
        count, self.dropped = nxt - self.dropped, nxt
        return count

    def _next_exchange(self) -> int | None:
        """Index of the next user turn after the first kept one, if that is not the last turn's exchange."""
        for i in range(self.dropped + 1, len(self.turns)):
            if self.turns[i]["role"] == "user":
                return i
        return None

    def last_reasoning(self) -> dict[str, str] | None:
        """The newest assistant turn that has reasoning (for `/think show`)."""
        for t in reversed(self.turns):
            if t["role"] == "assistant" and t.get("reasoning"):
                return t
        return None

    def clear(self) -> None:
        self.turns.clear()
        self.dropped = 0

    def save(self, path: Path) -> None:
        data = {"system": self.system, "messages": self.turns}
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"Could not write {path}: {exc.strerror or exc}; choose another file.") from exc

    @classmethod
    def load(cls, path: Path) -> Conversation:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            turns = [
                {k: str(v) for k, v in m.items()}
                for m in data["messages"]
                if m["role"] in ("user", "assistant") and isinstance(m["content"], str)
            ]
        except FileNotFoundError as exc:
            raise UsageError(f"No conversation file at {path}.") from exc
        except OSError as exc:
            raise UsageError(f"Could not read {path}: {exc.strerror or exc}.") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not a localseek conversation (JSON with a 'messages' list).") from exc
        system = data.get("system")
        return cls(system=system if isinstance(system, str) and system else None, turns=turns)
