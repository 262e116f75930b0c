"""The Ollama-compatible endpoints: `/api/chat`, `/api/generate` (NDJSON streams, `thinking` apart, `think`),
`/api/tags`, `/api/show`, `/api/ps`, `/api/version` — what Open WebUI's Ollama connection and the `ollama` Python
package use. Errors are Ollama's `{"error": "message"}`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from localseek import __version__
from localseek.serve import params as p
from localseek.serve.errors import HTTPError, bad_request
from localseek.serve.manager import Loaded
from localseek.serve.openai_api import Parsed, tool_fields
from localseek.serve.streaming import error_body, log_usage, read_json, start
from localseek.serve.tools import JSON_OBJECT, schema_grammar
from localseek.serve.turn import CallDelta, Delta, Finish

OLLAMA_VERSION = "0.12.0"  # the Ollama API level these endpoints follow (clients check it for `think`)
_THINK_LEVELS = {"low": 1024, "medium": 8192, "high": None}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _options(body: dict[str, Any], parsed: Parsed) -> None:
    opts = p.obj(body, "options") or {}
    for key, value in (
        ("temperature", p.number(opts, "temperature", 0.0, 2.0, param="options.temperature")),
        ("top_p", p.number(opts, "top_p", 0.0, 1.0, param="options.top_p")),
        ("top_k", p.integer(opts, "top_k", 0, param="options.top_k")),
        ("min_p", p.number(opts, "min_p", 0.0, 1.0, param="options.min_p")),
        ("repeat_penalty", p.number(opts, "repeat_penalty", 0.01, 10.0, param="options.repeat_penalty")),
        ("frequency_penalty", p.number(opts, "frequency_penalty", -2.0, 2.0, param="options.frequency_penalty")),
        ("presence_penalty", p.number(opts, "presence_penalty", -2.0, 2.0, param="options.presence_penalty")),
        ("seed", p.integer(opts, "seed", -(2**63), 2**64 - 1, param="options.seed")),
    ):
        if value is not None:
            parsed.sampling[key] = value
    n = p.integer(opts, "num_predict", -2, param="options.num_predict")
    if n is not None and n > 0:
        parsed.sampling["max_tokens"] = n
    elif n == 0:
        raise bad_request("`options.num_predict` must be positive (or -1 for no limit).", "options.num_predict")
    parsed.stop = p.stops(opts, "stop")
    fmt = body.get("format")
    if fmt == "json":
        parsed.sampling["grammar"] = schema_grammar(JSON_OBJECT, "format")
    elif isinstance(fmt, dict):
        parsed.sampling["grammar"] = schema_grammar(fmt, "format")
    elif fmt not in (None, ""):
        raise bad_request("`format` is \"json\" or a JSON schema.", "format")
    think = body.get("think")
    if isinstance(think, bool):
        parsed.think = think
    elif think in _THINK_LEVELS:
        parsed.think, parsed.think_budget = True, _THINK_LEVELS[think]
    elif think is not None:
        raise bad_request("`think` is true, false, low, medium or high.", "think")


def _parse(body: dict[str, Any], chat: bool) -> tuple[Parsed, float | None | bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("`model` is required.", "model")
    stream = p.boolean(body, "stream")
    parsed = Parsed(model, stream=True if stream is None else stream)
    if chat:
        parsed.messages = p.messages(body)
        tools = body.get("tools")
        if tools is not None:
            tool_fields({"tools": tools}, parsed)
    else:
        prompt = p.string(body, "prompt") or ""
        system = p.string(body, "system")
        if p.boolean(body, "raw"):
            parsed.prompt = prompt
        else:
            parsed.messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
    _options(body, parsed)
    keep = body.get("keep_alive")
    keep_alive: float | None | bool = False if keep is None else p.duration(keep, "keep_alive")
    return parsed, keep_alive


def _final(loaded: Loaded, finish: Finish, started: float, chat: bool) -> dict[str, Any]:
    s = finish.stats
    out: dict[str, Any] = {"model": loaded.name, "created_at": _now()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update({
        "done": True, "done_reason": "length" if finish.reason == "length" else "stop",
        "total_duration": int((time.monotonic() - started) * 1e9), "load_duration": 0,
        "prompt_eval_count": s.prompt_tokens, "prompt_eval_duration": int(s.prompt_seconds * 1e9),
        "eval_count": s.generated_tokens, "eval_duration": int(s.generation_seconds * 1e9),
    })
    return out


async def _respond(request: Request, chat: bool) -> Response:
    state = request.app.state
    try:
        body = await read_json(request, state.config.max_body)
        parsed, keep_alive = _parse(body, chat)
        if not chat and not parsed.prompt and parsed.messages and not parsed.messages[-1]["content"]:
            # Ollama's way to load (or, with keep_alive 0, unload) a model: an empty prompt.
            return await _load_only(request, parsed.model, keep_alive)
        endpoint = "/api/chat" if chat else "/api/generate"
        gen = await start(request, state.manager, parsed.model, endpoint, parsed.turn, request.state.log)
    except HTTPError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except Exception as exc:  # noqa: BLE001
        err = error_body(exc)
        return JSONResponse({"error": err.message}, status_code=err.status)
    if keep_alive is not False:
        gen.loaded.keep_alive = keep_alive  # type: ignore[assignment]
    started = time.monotonic()
    name = gen.loaded.name

    def piece(item: Delta) -> dict[str, Any]:
        if chat:
            key = "thinking" if item.kind == "reasoning" else "content"
            msg = {"role": "assistant", "content": ""}
            msg[key] = item.text
            return {"model": name, "created_at": _now(), "message": msg, "done": False}
        key = "thinking" if item.kind == "reasoning" else "response"
        return {"model": name, "created_at": _now(), "response": "", key: item.text, "done": False}

    sent_calls = 0  # tool calls already streamed (call_piece); the final chunk carries only the rest

    def final(item: Finish) -> dict[str, Any]:
        out = _final(gen.loaded, item, started, chat)
        if not parsed.stream:
            if chat:
                out["message"] = {"role": "assistant", "content": item.content}
                if item.reasoning:
                    out["message"]["thinking"] = item.reasoning
                if item.tool_calls:
                    out["message"]["tool_calls"] = [c.ollama() for c in item.tool_calls]
            else:
                out["response"] = item.content
                if item.reasoning:
                    out["thinking"] = item.reasoning
        elif chat and item.tool_calls[sent_calls:]:
            out["message"]["tool_calls"] = [c.ollama() for c in item.tool_calls[sent_calls:]]
        return out

    def call_piece(item: CallDelta) -> dict[str, Any]:
        nonlocal sent_calls
        sent_calls = item.index + 1
        return {"model": name, "created_at": _now(), "done": False,
                "message": {"role": "assistant", "content": "", "tool_calls": [item.call.ollama()]}}

    if not parsed.stream:
        try:
            result: dict[str, Any] | None = None
            async for item in gen.items:
                if isinstance(item, Finish):
                    result = final(item)
                    log_usage(request, item)
        finally:
            await gen.close()
        if result is None:
            return JSONResponse({"error": "The request was cancelled."}, status_code=400)
        return JSONResponse(result)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for item in gen.items:
                if isinstance(item, Delta):
                    yield (json.dumps(piece(item), ensure_ascii=False) + "\n").encode()
                elif isinstance(item, CallDelta) and chat:
                    yield (json.dumps(call_piece(item), ensure_ascii=False) + "\n").encode()
                elif isinstance(item, Finish):
                    log_usage(request, item)
                    yield (json.dumps(final(item), ensure_ascii=False) + "\n").encode()
        except Exception as exc:  # noqa: BLE001 — the status is sent: the error goes in the stream
            yield (json.dumps({"error": error_body(exc).message}) + "\n").encode()
        finally:
            await gen.close()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _load_only(request: Request, model: str, keep_alive: float | None | bool) -> Response:
    manager = request.app.state.manager
    if keep_alive == 0:
        loaded = manager.find(model)
        if loaded is not None:
            await manager.unload(loaded)
        return JSONResponse({"model": model, "created_at": _now(), "response": "", "done": True,
                             "done_reason": "unload"})
    loaded, run = await manager.acquire(model, "/api/generate")
    await manager.release(loaded, run)
    if keep_alive is not False:
        loaded.keep_alive = keep_alive  # type: ignore[assignment]
    return JSONResponse({"model": loaded.name, "created_at": _now(), "response": "", "done": True,
                         "done_reason": "load"})


async def chat(request: Request) -> Response:
    return await _respond(request, chat=True)


async def generate(request: Request) -> Response:
    return await _respond(request, chat=False)


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_VERSION, "localseek": __version__})


def _details(info: dict[str, Any]) -> dict[str, Any]:
    return {"parent_model": "", "format": "gguf", "family": info.get("arch", ""), "families": [info.get("arch", "")],
            "parameter_size": info.get("parameter_size", ""), "quantization_level": info.get("quant", "")}


async def tags(request: Request) -> Response:
    out = []
    for name, created in request.app.state.catalog():
        info = request.app.state.describe(name)
        out.append({"name": name, "model": name, "modified_at": datetime.fromtimestamp(created, timezone.utc)
                    .isoformat().replace("+00:00", "Z"), "size": info.get("size", 0),
                    "digest": info.get("digest", ""), "details": _details(info)})
    return JSONResponse({"models": out})


async def show(request: Request) -> Response:
    try:
        body = await read_json(request, request.app.state.config.max_body)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("`model` is required.", "model")
        info = request.app.state.describe(name, full=True)
    except HTTPError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except Exception as exc:  # noqa: BLE001
        err = error_body(exc)
        return JSONResponse({"error": err.message}, status_code=err.status)
    return JSONResponse({
        "modelfile": f"FROM {info.get('path', '')}\n", "parameters": info.get("parameters", ""),
        "template": info.get("template", ""), "details": _details(info), "model_info": info.get("model_info", {}),
        "capabilities": info.get("capabilities", ["completion"]), "modified_at": _now(),
    })


async def ps(request: Request) -> Response:
    out = []
    for status in request.app.state.manager.status():
        expires = status["expires_in_s"]
        until = time.time() + (expires if expires is not None else 10 * 365 * 86400)
        info = request.app.state.describe(status["name"])
        out.append({"name": status["name"], "model": status["name"], "size": status["ram_bytes"] + status["vram_bytes"],
                    "digest": info.get("digest", ""), "details": _details(info),
                    "expires_at": datetime.fromtimestamp(until, timezone.utc).isoformat().replace("+00:00", "Z"),
                    "size_vram": status["vram_bytes"], "context_length": status["n_ctx"]})
    return JSONResponse({"models": out})
