"""What the OpenAI and Ollama endpoints share: reading the JSON body, holding a model for a request, watching for
the client going away, and turning a turn's first item into "headers now" or an error status."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from localseek.errors import LocalseekError
from localseek.serve.errors import HTTPError, bad_request, from_localseek
from localseek.serve.manager import Loaded, ModelManager, Running
from localseek.serve.turn import CallDelta, Delta, Finish, Started, TurnRequest, stream_turn


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past `limit` bytes (counted as they arrive, whatever Content-Length says)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.")
    return body


async def watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set `cancel` when the client goes away (the body has been read: the next message is the disconnect)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                cancel.set()
                return
    except Exception:  # noqa: BLE001 — the connection is gone either way
        cancel.set()


@dataclass
class Generation:
    """A turn under way for one request: its model, its place in `ps`, and its items after `Started`."""

    manager: ModelManager
    loaded: Loaded
    run: Running
    items: AsyncIterator[Started | Delta | CallDelta | Finish]
    started: Started
    watcher: asyncio.Task[None]
    closed: bool = False

    async def close(self) -> None:
        """The request is over (finished, failed or abandoned): a turn still running stops within a token."""
        if self.closed:
            return
        self.closed = True
        self.watcher.cancel()
        await self.items.aclose()  # type: ignore[attr-defined]
        await self.manager.release(self.loaded, self.run)


async def start(request: Request, manager: ModelManager, model: str, endpoint: str,
                make: Callable[[Loaded], TurnRequest], log: dict[str, Any]) -> Generation:
    """Hold the model (loading it first if needed), start the turn, and wait until it is accepted: errors before
    that point (context overflow, a grammar llama.cpp refuses) are raised here, while a status can still be sent."""
    loaded, run = await manager.acquire(model, endpoint)
    log["model"] = loaded.name
    watcher = asyncio.create_task(watch_disconnect(request, run.cancel))
    try:
        turn = make(loaded)
        items = stream_turn(loaded, turn, run.cancel)
        first = await items.__anext__()
    except BaseException:
        watcher.cancel()
        await manager.release(loaded, run)
        raise
    assert isinstance(first, Started)
    return Generation(manager, loaded, run, items, first, watcher)


def error_body(exc: BaseException) -> HTTPError:
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, LocalseekError):
        return from_localseek(exc)
    return HTTPError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")


def log_usage(request: Request, finish: Finish) -> None:
    """What the access line of this request shows: tokens; the prompt text only with --log-prompts."""
    request.state.log["tokens"] = f"{finish.stats.prompt_tokens}+{finish.stats.generated_tokens}"
    if request.app.state.config.log_prompts:
        request.state.log["prompt"] = finish.prompt_text
