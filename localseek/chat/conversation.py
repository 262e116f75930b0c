"""Conversation state and chat-template rendering (the GGUF's own Jinja template, or a --template-file, rendered
in a sandboxed helper process with time, memory and output limits: `template_sandbox`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from localseek.chat import template_sandbox
from localseek.errors import UsageError
from localseek.text import printable

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
_THINK_TAG = re.compile(r"</?think>")
MAX_TEMPLATE_FILE = 1024 * 1024  # a --template-file (DeepSeek's own templates are a few KB)
MODEL_TEMPLATE = "The model's chat template"


class PromptTooLong(UsageError):
    """The conversation (or its rendered prompt) is larger than a prompt may be; dropping older turns may help."""


@dataclass
class ChatTemplate:
    """A Jinja chat template, rendered in a sandboxed helper process with time, memory and output limits
    (`template_sandbox`). `origin` names it in errors: the model's own, or a --template-file."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    origin: str = MODEL_TEMPLATE

    @property
    def has_thinking_flag(self) -> bool:
        """True for hybrid templates (DeepSeek-V3.1 and later) that switch reasoning on and off with a
        `thinking` (or `enable_thinking`) variable, instead of always reasoning like R1."""
        return bool(_THINKING_FLAG.search(self.source))

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt for `messages`. Raises PromptTooLong when the messages alone exceed the output limit, and
        UsageError (one line naming the limit or the template's own error) when the template fails."""
        limit = template_sandbox.MAX_OUTPUT
        size = sum(len(str(m.get("content", ""))) for m in messages)
        if size > limit:
            raise PromptTooLong(
                f"The conversation is {size:,} characters, more than a prompt may be ({limit:,}); shorten it."
            )
        variables = {"messages": messages, "bos_token": self.bos_token, "eos_token": self.eos_token,
                     "add_generation_prompt": add_generation_prompt, **extra}
        try:
            return template_sandbox.render(self.source, variables)
        except template_sandbox.TemplateFailure as exc:
            raise UsageError(self._explain(exc)) from exc

    def _explain(self, exc: template_sandbox.TemplateFailure) -> str:
        fix = ("pass --template-file FILE with a template that works" if self.origin == MODEL_TEMPLATE
               else "fix the file, or drop --template-file to use the model's own")
        detail = printable(exc, limit=200)
        if exc.kind == "rejected":
            return f"{self.origin} rejected the conversation: {detail}"
        if exc.kind == "time":
            return (f"{self.origin} took more than {template_sandbox.SECONDS:g} s to render and was stopped (a "
                    f"runaway loop?); {fix}.")
        if exc.kind == "memory":
            return (f"{self.origin} needed more than {template_sandbox.MEMORY // (1024 * 1024)} MB of memory to "
                    f"render and was stopped; {fix}.")
        if exc.kind == "output":
            return (f"{self.origin} rendered more than {template_sandbox.MAX_OUTPUT:,} characters and was "
                    f"stopped; {fix}.")
        if exc.kind == "helper":
            return f"Cannot render the chat template: {detail}."
        return f"{self.origin} could not be rendered ({detail}); {fix}."


def thinking_mode(template: str | None, catalog_reasoning: bool | None = None) -> tuple[str, str]:
    """How a model reasons, and what says so: ("hybrid" | "reasoning" | "plain" | "unknown", "template" |
    "catalog" | "").

    A template that reads a `thinking`/`enable_thinking` flag is hybrid (V3.1, V3.2, V4: `/think off` and
    `--no-think` switch reasoning off); one that handles `<think>` blocks without a flag belongs to a model that
    always reasons (R1 and its distills); a template that does neither says nothing, and then the catalog's
    `reasoning` flag decides."""
    if template and _THINKING_FLAG.search(template):
        return "hybrid", "template"
    if template and _THINK_TAG.search(template):
        return "reasoning", "template"
    if catalog_reasoning is not None:
        return ("reasoning" if catalog_reasoning else "plain"), "catalog"
    return ("plain", "template") if template else ("unknown", "")


def read_template_file(path: Path) -> str:
    """A --template-file: UTF-8 Jinja source of at most 1 MiB that parses. Raises UsageError."""
    try:
        if path.stat().st_size > MAX_TEMPLATE_FILE:
            raise UsageError(f"{path} is over 1 MiB; a chat template is a few KB of Jinja.")
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"No template file at {path}.") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; a chat template is Jinja source.") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    try:
        template_sandbox.environment().parse(source)  # syntax only: nothing of it runs here
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"{path} line {exc.lineno}: {printable(exc.message, limit=200)}; fix the template.") from None
    except RecursionError:
        raise UsageError(f"{path} is nested too deeply to be a chat template.") from None
    return source


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
