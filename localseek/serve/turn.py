"""One request's generation, API-neutral: a chat turn (template, thinking switch, budget, tools, grammar) or a raw
completion, streamed as `Delta`s and closed by a `Finish`. The OpenAI and Ollama modules only parse and render.

The turn runs in a thread of its own (`stream_turn` bridges it to the event loop): `chat.generation.respond` over a
`SequenceEngine` view of the loaded model, so the reasoning, answer, budget and stats are exactly `localseek run`'s.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from localseek.chat.generation import Done, Prompt, Turn, respond
from localseek.chat.reasoning import Answer, Reasoning, ReasoningParser
from localseek.runtime.options import Sampling, Stats
from localseek.runtime.parallel import Cancelled
from localseek.serve.errors import ContextOverflow, bad_request
from localseek.serve.manager import Loaded
from localseek.serve.tools import MARKERS, CallParser, ToolCall, call_grammar, template_supports_tools


@dataclass(frozen=True)
class TurnRequest:
    messages: list[dict[str, Any]] | None = None  # a chat; or …
    prompt: str | None = None  # … raw text, no template (completions, Ollama `raw`)
    sampling: Sampling = field(default_factory=Sampling)
    think: bool | None = None  # None: the model's way (R1 reasons; hybrid templates: on, as `run`)
    think_budget: int | None = None
    template_vars: dict[str, Any] = field(default_factory=dict)  # chat_template_kwargs (win over `think`)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None  # "auto" | "none" | "required" | a function name
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Started:
    """The request was accepted (prompt rendered, fits the context, grammar compiles): headers may go out."""

    prompt_tokens: int


@dataclass(frozen=True)
class Delta:
    kind: Literal["reasoning", "content"]
    text: str


@dataclass(frozen=True)
class CallDelta:
    """A tool call, sent as soon as its closing marker is generated (`Finish.tool_calls` lists every call)."""

    index: int
    call: ToolCall


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" | "length" | "tool_calls"
    stats: Stats
    reasoning_tokens: int
    reasoning: str
    content: str
    tool_calls: list[ToolCall]
    prompt_text: str = ""

    @property
    def usage(self) -> dict[str, Any]:
        prompt, completion = self.stats.prompt_tokens, self.stats.generated_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}}


_FINISH = {"eos": "stop", "length": "length", "context": "length", "interrupted": "stop"}


class _Shaper:
    """Turns respond's events into deltas whose concatenation equals what `Done` (and `run --json`) reports: the
    reasoning without its trailing newlines, the answer without leading ones; `stop` strings and tool-call markers
    cut the answer (held back while a suffix could still become one)."""

    def __init__(self, stop: tuple[str, ...], tools: bool) -> None:
        self.stop = tuple(s for s in stop if s)
        self.cuts = self.stop + (MARKERS if tools else ())
        self.held_newlines = ""
        self.answer_started = False
        self.pending = ""  # answer text that may be the start of a stop string or marker
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.calls = CallParser()  # answer text from a tool-call marker on
        self.stopped = False  # a stop string was met
        self.in_calls = False

    def reasoning_piece(self, text: str) -> Iterator[Delta]:
        text = self.held_newlines + text
        body = text.rstrip("\n")
        self.held_newlines = text[len(body):]
        if body:
            self.reasoning.append(body)
            yield Delta("reasoning", body)

    def answer_piece(self, text: str) -> Iterator[Delta | CallDelta]:
        if self.in_calls:
            yield from self._call_deltas(text)
            return
        if not self.answer_started:
            text = text.lstrip("\n")
            if not text:
                return
            self.answer_started = True
        buf = self.pending + text
        hits = [(buf.find(c), c) for c in self.cuts if c in buf]
        if hits:
            at, cut = min(hits)
            yield from self._emit(buf[:at])
            self.pending = ""
            if cut in self.stop:
                self.stopped = True
            else:
                self.in_calls = True
                yield from self._call_deltas(buf[at:])
            return
        keep = max((_partial(buf, c) for c in self.cuts), default=0)
        self.pending = buf[len(buf) - keep:] if keep else ""
        yield from self._emit(buf[: len(buf) - keep])

    def _call_deltas(self, text: str) -> Iterator[CallDelta]:
        done = len(self.calls.calls)
        for i, call in enumerate(self.calls.feed(text)):
            yield CallDelta(done + i, call)

    def flush(self) -> Iterator[Delta]:
        if self.pending and not self.stopped and not self.in_calls:
            yield from self._emit(self.pending)
        self.pending = ""

    def _emit(self, text: str) -> Iterator[Delta]:
        if text:
            self.content.append(text)
            yield Delta("content", text)


def _partial(text: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def _template_vars(loaded: Loaded, req: TurnRequest) -> tuple[dict[str, Any], int | None]:
    """Template variables and the reasoning budget for the request's thinking choice."""
    budget = req.think_budget
    variables: dict[str, Any] = {}
    think = req.think
    if loaded.template.has_thinking_flag:
        on = True if think is None else think
        variables = {"thinking": on, "enable_thinking": on}
    elif think is False:
        budget = 0  # R1-style templates always reason: close the block before it starts
    variables.update(req.template_vars)
    if req.tools:
        variables["tools"] = req.tools
    return variables, budget


def run_turn(loaded: Loaded, req: TurnRequest, cancel: threading.Event) -> Iterator[Started | Delta | Finish]:
    """The request's deltas, then its Finish (blocking; run it off the event loop). Raises ContextOverflow and
    bad requests before anything is generated; Cancelled when `cancel` is set."""
    view = loaded.view(cancel)
    me = threading.get_ident()
    loaded.turns.add(me)
    try:
        sampling = req.sampling
        template_source = loaded.template.source
        tools = req.tools if req.tools and req.tool_choice != "none" else None
        if tools and not template_supports_tools(template_source):
            raise bad_request(f"{loaded.name}'s chat template does not support tools; call it without `tools`.",
                              "tools")
        if tools and req.tool_choice not in (None, "auto"):
            if sampling.grammar is not None:
                raise bad_request("Use either response_format or a required tool call, not both.", "tool_choice")
            name = None if req.tool_choice == "required" else req.tool_choice
            sampling = replace(sampling, grammar=call_grammar(tools, name, template_source))
        if req.messages is not None:
            variables, budget = _template_vars(loaded, req)
            if not tools:
                variables.pop("tools", None)
            text = loaded.template.render(req.messages, add_generation_prompt=True, **variables)  # type: ignore[arg-type]
        else:
            text, budget = req.prompt or "", None
        tokens = view.tokenize(text)
        if not tokens:
            raise bad_request("The prompt is empty.", "prompt")
        if len(tokens) >= view.n_ctx:
            raise ContextOverflow(
                f"The prompt is {len(tokens)} tokens but {loaded.name}'s context holds {view.n_ctx}; shorten it, "
                "or restart the server with a larger --ctx."
            )
        loaded.check_grammar(sampling)
        yield Started(len(tokens))
        yield from (_chat if req.messages is not None else _raw)(view, text, tokens, sampling, budget, req, tools)
    except Cancelled:
        return
    finally:
        view.close()
        loaded.turns.discard(me)


def _chat(view: Any, text: str, tokens: list[int], sampling: Sampling, budget: int | None, req: TurnRequest,
          tools: list[dict[str, Any]] | None) -> Iterator[Delta | CallDelta | Finish]:
    prompt = Prompt(text, tokens, ReasoningParser.prompt_ends_in_think(text))
    shaper = _Shaper(req.stop, tools is not None)
    turn = Turn()
    events = respond(view, None, sampling, prompt=prompt, think_budget=budget, turn=turn)
    done: Done | None = None
    try:
        for event in events:
            if isinstance(event, Reasoning):
                yield from shaper.reasoning_piece(event.text)
            elif isinstance(event, Answer):
                yield from shaper.answer_piece(event.text)
                if shaper.stopped:
                    break
            elif isinstance(event, Done):
                done = event
    finally:
        events.close()
    yield from shaper.flush()
    stats = turn.stats
    calls = shaper.calls.calls
    reason = "tool_calls" if calls else "stop" if shaper.stopped else _FINISH.get(stats.stop_reason, "stop")
    reasoning_tokens = done.reasoning_tokens if done is not None else turn.thinking.tokens if turn.thinking else 0
    yield Finish(reason, stats, reasoning_tokens, "".join(shaper.reasoning), "".join(shaper.content), calls, text)


def _raw(view: Any, text: str, tokens: list[int], sampling: Sampling, budget: int | None, req: TurnRequest,
         tools: Any) -> Iterator[Delta | Finish]:
    stats = Stats()
    shaper = _Shaper(req.stop, False)
    shaper.answer_started = True  # raw text is passed on as generated
    pieces = view.stream(tokens, sampling, stats)
    try:
        for piece in pieces:
            yield from shaper.answer_piece(piece)
            if shaper.stopped:
                break
    finally:
        pieces.close()
    yield from shaper.flush()
    reason = "stop" if shaper.stopped else _FINISH.get(stats.stop_reason, "stop")
    yield Finish(reason, stats, 0, "", "".join(shaper.content), [], text)


_END = object()


async def stream_turn(loaded: Loaded, req: TurnRequest, cancel: threading.Event
                      ) -> AsyncIterator[Started | Delta | CallDelta | Finish]:
    """`run_turn` in a thread of its own, its items handed to the event loop as they come. Leaving the iteration
    early (the client went away) sets `cancel`: the generation stops within a token."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()

    def work() -> None:
        try:
            for item in run_turn(loaded, req, cancel):
                loop.call_soon_threadsafe(items.put_nowait, item)
        except BaseException as exc:  # noqa: BLE001 — handed to the request's task
            loop.call_soon_threadsafe(items.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(items.put_nowait, _END)

    thread = threading.Thread(target=work, name="localseek-turn", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item = await items.get()
            if item is _END:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            yield item
    finally:
        if not finished:
            cancel.set()
