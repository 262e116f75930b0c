"""The OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

The reasoning never goes into `content`: it is sent as `reasoning_content` (DeepSeek's API, llama-server, LM Studio),
`reasoning` (vLLM, Ollama's OpenAI layer), both, or — `--reasoning-field inline` — inside `<think>` tags in the
content for clients that show nothing else.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from localseek import __version__
from localseek.runtime.options import Grammar
from localseek.serve import params as p
from localseek.serve.errors import HTTPError, bad_request
from localseek.serve.manager import Loaded
from localseek.serve.streaming import Generation, error_body, log_usage, read_json, start
from localseek.serve.tools import JSON_OBJECT, schema_grammar
from localseek.serve.turn import CallDelta, Delta, Finish, TurnRequest

REASONING_FIELDS = ("reasoning_content", "reasoning", "both", "inline")
# reasoning_effort → reasoning budget in tokens (None: no cap); "none" switches reasoning off.
EFFORT_BUDGET: dict[str, int | None] = {"minimal": 256, "low": 1024, "medium": 8192, "high": None}
FINGERPRINT = f"localseek-{__version__}"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Parsed:
    """A validated request, before its model is known (sampling defaults are the model's)."""

    model: str
    stream: bool = False
    include_usage: bool = False
    sampling: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    think: bool | None = None
    think_budget: int | None = None
    template_vars: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    stop: tuple[str, ...] = ()

    def turn(self, loaded: Loaded) -> TurnRequest:
        return TurnRequest(
            messages=self.messages, prompt=self.prompt, sampling=replace(loaded.sampling, **self.sampling),
            think=self.think, think_budget=self.think_budget, template_vars=self.template_vars, tools=self.tools,
            tool_choice=self.tool_choice, stop=self.stop,
        )


def sampling_fields(body: dict[str, Any], *, max_key: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
                    default_max: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (
        ("temperature", p.number(body, "temperature", 0.0, 2.0)),
        ("top_p", p.number(body, "top_p", 0.0, 1.0)),
        ("top_k", p.integer(body, "top_k", 0)),
        ("min_p", p.number(body, "min_p", 0.0, 1.0)),
        ("repeat_penalty", p.number(body, "repeat_penalty", 0.01, 10.0)),
        ("frequency_penalty", p.number(body, "frequency_penalty", -2.0, 2.0)),
        ("presence_penalty", p.number(body, "presence_penalty", -2.0, 2.0)),
        ("seed", p.integer(body, "seed", -(2**63), 2**64 - 1)),
    ):
        if value is not None:
            out[key] = value
    limit = default_max
    for key in max_key:
        value = p.integer(body, key, 1)
        if value is not None:
            limit = value
            break
    if limit is not None:
        out["max_tokens"] = limit
    p.integer(body, "n", 1, 1)  # one choice per request
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") not in (None, 0):
        raise bad_request("logprobs are not supported.", "logprobs")
    return out


def thinking_fields(body: dict[str, Any], parsed: Parsed) -> None:
    effort = p.string(body, "reasoning_effort")
    if effort is not None:
        if effort == "none":
            parsed.think = False
        elif effort in EFFORT_BUDGET:
            parsed.think, parsed.think_budget = True, EFFORT_BUDGET[effort]
        else:
            raise bad_request("`reasoning_effort` is one of none, minimal, low, medium, high.", "reasoning_effort")
    thinking = body.get("thinking")
    if isinstance(thinking, bool):
        parsed.think = thinking
    elif isinstance(thinking, dict):  # DeepSeek's and Anthropic's form: {"type": "enabled", "budget_tokens": N}
        kind = thinking.get("type")
        if kind not in ("enabled", "disabled"):
            raise bad_request("`thinking.type` is enabled or disabled.", "thinking")
        parsed.think = kind == "enabled"
        budget = p.integer(thinking, "budget_tokens", 0, param="thinking.budget_tokens")
        if budget is not None:
            parsed.think_budget = budget
    elif thinking is not None:
        raise bad_request("`thinking` must be true, false or {\"type\": \"enabled\"|\"disabled\"}.", "thinking")
    budget = p.integer(body, "max_reasoning_tokens", 0)
    if budget is not None:
        parsed.think_budget = budget
    kwargs = p.obj(body, "chat_template_kwargs")
    if kwargs:
        parsed.template_vars = dict(kwargs)
        for key in ("thinking", "enable_thinking"):
            if isinstance(kwargs.get(key), bool):
                parsed.think = kwargs[key]


def response_format(body: dict[str, Any]) -> Grammar | None:
    fmt = p.obj(body, "response_format")
    if fmt is None or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return schema_grammar(JSON_OBJECT, "response_format")
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise bad_request("`response_format.json_schema` needs a `schema`.", "response_format.json_schema")
        return schema_grammar(spec["schema"], "response_format.json_schema.schema")
    raise bad_request("`response_format.type` is text, json_object or json_schema.", "response_format.type")


def tool_fields(body: dict[str, Any], parsed: Parsed) -> None:
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise bad_request("`tools` must be a list.", "tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad_request("Each tool is {\"type\": \"function\", \"function\": {\"name\": …}}.", f"tools[{i}]")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise bad_request("A tool's parameters must be a JSON schema object.", f"tools[{i}].function.parameters")
    parsed.tools = tools or None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_request("`tool_choice` names a function as {\"type\": \"function\", \"function\": {\"name\": …}}.",
                              "tool_choice")
        parsed.tool_choice = fn["name"]
    elif choice in (None, "auto", "none", "required"):
        parsed.tool_choice = choice
    else:
        raise bad_request("`tool_choice` is none, auto, required or a named function.", "tool_choice")


def parse_chat(body: dict[str, Any]) -> Parsed:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("`model` is required.", "model")
    parsed = Parsed(model, stream=bool(p.boolean(body, "stream")), messages=p.messages(body))
    options = p.obj(body, "stream_options") or {}
    parsed.include_usage = bool(options.get("include_usage"))
    parsed.sampling = sampling_fields(body)
    grammar = response_format(body)
    if grammar is not None:
        parsed.sampling["grammar"] = grammar
    thinking_fields(body, parsed)
    tool_fields(body, parsed)
    parsed.stop = p.stops(body)
    return parsed


def parse_completion(body: dict[str, Any]) -> Parsed:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("`model` is required.", "model")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("`prompt` must be a non-empty string.", "prompt")
    if body.get("echo") or body.get("suffix"):
        raise bad_request("`echo` and `suffix` are not supported.", "echo" if body.get("echo") else "suffix")
    parsed = Parsed(model, stream=bool(p.boolean(body, "stream")), prompt=prompt)
    parsed.include_usage = bool((p.obj(body, "stream_options") or {}).get("include_usage"))
    parsed.sampling = sampling_fields(body, max_key=("max_tokens",), default_max=16)  # OpenAI's default
    parsed.stop = p.stops(body)
    return parsed


# -- rendering ----------------------------------------------------------------------------------------
class Shape:
    """Where the reasoning goes in a message or a delta."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.fields = {"reasoning_content": ("reasoning_content",), "reasoning": ("reasoning",),
                       "both": ("reasoning_content", "reasoning"), "inline": ()}[mode]
        self.open = False  # inline: a <think> tag sent and not yet closed

    def message(self, finish: Finish) -> dict[str, Any]:
        content = finish.content
        if self.mode == "inline" and finish.reasoning:
            content = f"<think>\n{finish.reasoning}\n</think>\n\n{content}"
        msg: dict[str, Any] = {"role": "assistant", "content": content if content or not finish.tool_calls else None}
        for name in self.fields:
            msg[name] = finish.reasoning or None
        if finish.tool_calls:
            msg["tool_calls"] = [c.openai() for c in finish.tool_calls]
        return msg

    def delta(self, item: Delta) -> dict[str, Any]:
        if self.mode == "inline":
            if item.kind == "reasoning":
                text = item.text if self.open else "<think>\n" + item.text
                self.open = True
                return {"content": text}
            return {"content": self.close() + item.text}
        if item.kind == "reasoning":
            return {name: item.text for name in self.fields}
        return {"content": item.text}

    def close(self) -> str:
        if self.open:
            self.open = False
            return "\n</think>\n\n"
        return ""


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def _begin(request: Request, parse: Callable[[dict[str, Any]], Parsed], path: str, prefix: str,
                 obj: str) -> tuple[Parsed, Generation, dict[str, Any]]:
    """Read and check the body, start the generation, and the fields every response (or chunk) starts with."""
    state = request.app.state
    parsed = parse(await read_json(request, state.config.max_body))
    gen = await start(request, state.manager, parsed.model, path, parsed.turn, request.state.log)
    head = {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()),
            "model": gen.loaded.name, "system_fingerprint": FINGERPRINT}
    return parsed, gen, head


async def _whole(request: Request, gen: Generation) -> Finish:
    """The finished reply of a request that does not stream."""
    try:
        finish = await _finish(gen)
    finally:
        await gen.close()
    log_usage(request, finish)
    return finish


def _stream(request: Request, gen: Generation, lines: Callable[[Delta | CallDelta | Finish], list[bytes]],
            prologue: tuple[bytes, ...] = ()) -> StreamingResponse:
    """Server-sent events: `lines` turns each item into its events; errors after the status go in the stream."""

    async def events() -> AsyncIterator[bytes]:
        try:
            for line in prologue:
                yield line
            async for item in gen.items:
                for line in lines(item):
                    yield line
                if isinstance(item, Finish):
                    log_usage(request, item)
            yield _sse("[DONE]")
        except Exception as exc:  # noqa: BLE001 — the status is sent: the error goes in the stream
            yield _sse(error_body(exc).body())
            yield _sse("[DONE]")
        finally:
            await gen.close()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


async def chat_completions(request: Request) -> Response:
    parsed, gen, head = await _begin(request, parse_chat, "/v1/chat/completions", "chatcmpl",
                                     "chat.completion.chunk")
    shape = Shape(request.app.state.config.reasoning_field)
    if not parsed.stream:
        finish = await _whole(request, gen)
        return JSONResponse({
            **head, "object": "chat.completion",
            "choices": [{"index": 0, "message": shape.message(finish), "logprobs": None,
                         "finish_reason": finish.reason}],
            "usage": finish.usage, "timings": _timings(finish),
        })

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        data = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
        if parsed.include_usage:
            data["usage"] = None
        return _sse(data)

    sent_calls = 0

    def lines(item: Delta | CallDelta | Finish) -> list[bytes]:
        nonlocal sent_calls
        if isinstance(item, Delta):
            return [chunk(shape.delta(item))]
        out = []
        closing = shape.close()
        if closing:
            out.append(chunk({"content": closing}))
        if isinstance(item, CallDelta):  # each call as soon as it is complete, as llama-server sends them
            sent_calls = item.index + 1
            return [*out, chunk({"tool_calls": [item.call.openai(item.index)]})]
        if item.tool_calls[sent_calls:]:
            out.append(chunk({"tool_calls": [c.openai(i) for i, c in enumerate(item.tool_calls) if i >= sent_calls]}))
        out.append(chunk({}, item.reason))
        if parsed.include_usage:  # with llama-server's `timings` (the chat page shows tokens/s)
            out.append(_sse({**head, "choices": [], "usage": item.usage, "timings": _timings(item)}))
        return out

    return _stream(request, gen, lines, prologue=(chunk({"role": "assistant", "content": ""}),))


async def completions(request: Request) -> Response:
    parsed, gen, head = await _begin(request, parse_completion, "/v1/completions", "cmpl", "text_completion")

    def choice(text: str, reason: str | None) -> dict[str, Any]:
        return {**head, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}]}

    if not parsed.stream:
        finish = await _whole(request, gen)
        return JSONResponse({**choice(finish.content, finish.reason), "usage": finish.usage})

    def lines(item: Delta | CallDelta | Finish) -> list[bytes]:
        if isinstance(item, CallDelta):
            return []  # raw completions have no tools
        if isinstance(item, Delta):
            return [_sse(choice(item.text, None))]
        out = [_sse(choice("", item.reason))]
        if parsed.include_usage:
            out.append(_sse({**head, "choices": [], "usage": item.usage}))
        return out

    return _stream(request, gen, lines)


async def _finish(gen: Generation) -> Finish:
    async for item in gen.items:
        if isinstance(item, Finish):
            return item
    raise bad_request("The request was cancelled.")


def _timings(finish: Finish) -> dict[str, Any]:
    """llama-server's `timings` object (its field names), with the speculative counters when a drafter ran."""
    s = finish.stats
    out: dict[str, Any] = {"prompt_n": s.prompt_tokens, "prompt_ms": round(s.prompt_seconds * 1000, 2),
                           "predicted_n": s.generated_tokens, "predicted_ms": round(s.generation_seconds * 1000, 2),
                           "predicted_per_second": round(s.tokens_per_second, 2)}
    if s.spec is not None:
        out.update(draft_n=s.spec.drafted, draft_n_accepted=s.spec.accepted)
    return out


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [
        {"id": name, "object": "model", "created": int(created), "owned_by": "localseek"}
        for name, created in request.app.state.catalog()
    ]})


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    for known, created in request.app.state.catalog():
        if known == name:
            return JSONResponse({"id": name, "object": "model", "created": int(created), "owned_by": "localseek"})
    raise HTTPError(404, f"The model {name!r} does not exist here; GET /v1/models lists them.", param="model",
                    code="model_not_found")

