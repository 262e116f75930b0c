"""The ASGI application: routes, the API key, CORS, the access log, errors as JSON, the server's lifespan (models
named on the command line loaded at start, idle ones unloaded)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from localseek import __version__
from localseek.errors import LocalseekError
from localseek.serve import models_info, ollama_api, openai_api, page
from localseek.serve.errors import HTTPError, bad_request, from_localseek
from localseek.serve.manager import ModelManager
from localseek.serve.streaming import read_json

log = logging.getLogger("localseek.serve")
access = logging.getLogger("localseek.serve.access")

DEFAULT_MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    api_key: str | None = None
    cors: tuple[str, ...] = ()
    reasoning_field: str = "reasoning_content"
    log_prompts: bool = False
    max_body: int = DEFAULT_MAX_BODY


# -- middleware ---------------------------------------------------------------------------------------
class AccessLog:
    """One line per request when it is over (streams included): client, method, path, model, status, tokens,
    seconds. Never a header (so never the key), never prompt text unless --log-prompts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [0]
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = fields

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            extra = "".join(f" {k}={fields[k]}" for k in ("model", "tokens") if k in fields)
            access.info('%s "%s %s"%s status=%s time=%.3fs', f"{client[0]}:{client[1]}", scope["method"],
                        scope["path"], extra, status[0] or "-", time.monotonic() - started)
            if "prompt" in fields:
                access.info("prompt: %s", json.dumps(fields["prompt"], ensure_ascii=False))


class BearerAuth:
    """With a key, every request (CORS preflights and the chat page's own files aside) needs
    `Authorization: Bearer <key>`; else 401."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS" and \
                not page.is_public(scope["method"], scope["path"]):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                err = HTTPError(401, "A valid API key is required: send `Authorization: Bearer <key>`.",
                                code="invalid_api_key")
                response = JSONResponse(err.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- error handlers -----------------------------------------------------------------------------------
async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _localseek_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LocalseekError)
    return await _http_error(request, from_localseek(exc))


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    message = f"No such endpoint: {request.method} {request.url.path}." if exc.status_code == 404 else exc.detail
    return JSONResponse(HTTPError(exc.status_code, message, type=kind).body(), status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return JSONResponse(HTTPError(500, f"internal error: {type(exc).__name__}", type="server_error").body(),
                        status_code=500)


# -- routes -------------------------------------------------------------------------------------------
async def health(request: Request) -> Response:
    state = request.app.state
    if state.preloading or state.manager.is_loading:
        return JSONResponse({"status": "loading", **HTTPError(503, "Loading model", type="unavailable_error").body()},
                            status_code=503)
    return JSONResponse({"status": "ok"})


async def ps(request: Request) -> Response:
    return JSONResponse({"version": __version__, "models": request.app.state.manager.status()})


async def stop(request: Request) -> Response:
    body = await read_json(request, request.app.state.config.max_body)
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request("`model` is required.", "model")
    manager: ModelManager = request.app.state.manager
    loaded = manager.find(name)
    if loaded is None:
        raise HTTPError(404, f"{name} is not loaded.", param="model", code="model_not_loaded")
    await manager.unload(loaded)
    return JSONResponse({"stopped": loaded.name})


ROUTES = [
    Route("/", page.root),
    Route(page.ASSET_PREFIX + "{path:path}", page.asset),
    Route("/health", health),
    Route("/v1/models", openai_api.list_models),
    Route("/v1/models/{model:path}", openai_api.get_model),
    Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
    Route("/v1/completions", openai_api.completions, methods=["POST"]),
    Route("/api/version", ollama_api.version),
    Route("/api/tags", ollama_api.tags),
    Route("/api/ps", ollama_api.ps),
    Route("/api/show", ollama_api.show, methods=["POST"]),
    Route("/api/chat", ollama_api.chat, methods=["POST"]),
    Route("/api/generate", ollama_api.generate, methods=["POST"]),
    Route("/localseek/ps", ps),
    Route("/localseek/models", models_info.models),
    Route("/localseek/stop", stop, methods=["POST"]),
]


# -- what the server knows of models ------------------------------------------------------------------
def catalog(manager: ModelManager) -> Callable[[], list[tuple[str, float]]]:
    """Names a request may use, with a creation time: models named on the command line, loaded ones, installed."""

    def names() -> list[tuple[str, float]]:
        from localseek.models import store

        out: dict[str, float] = {}
        for alias, ref in manager.named.items():
            if alias == ref.key:
                out[alias] = _mtime(ref.path)
        for loaded in manager.models.values():
            out.setdefault(loaded.name, loaded.loaded_at)
        try:
            for name, model in store.installed().items():
                if model.kind == "gguf":
                    out.setdefault(name, model.pulled_at)
        except LocalseekError:
            pass
        return sorted(out.items())

    return names


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def describer(manager: ModelManager) -> Callable[..., dict[str, Any]]:
    """Facts about a model for Ollama's /api/tags, /api/show, /api/ps (from its GGUF header, cached)."""

    @lru_cache(maxsize=64)
    def facts(path: str) -> dict[str, Any]:
        from localseek.chat.conversation import ChatTemplate
        from localseek.models.gguf_info import file_type_name, read_gguf
        from localseek.serve.tools import template_supports_tools

        info = read_gguf(Path(path))
        template = info.chat_template or ""
        capabilities = ["completion"]
        if "<think>" in template or "think" in str(info.metadata.get("general.name", "")).lower() or \
                ChatTemplate(template).has_thinking_flag or "r1" in Path(path).name.lower():
            capabilities.append("thinking")
        if template_supports_tools(template):
            capabilities.append("tools")
        simple = {k: v for k, v in info.metadata.items() if isinstance(v, (int, float, str)) and
                  not k.startswith("tokenizer.") and len(str(v)) < 256}
        return {
            "path": path, "arch": info.arch, "size": info.total_bytes, "quant": file_type_name(info) or "",
            "digest": hashlib.sha256(path.encode()).hexdigest(), "template": template,
            "capabilities": capabilities, "model_info": simple,
        }

    def describe(name: str, full: bool = False) -> dict[str, Any]:
        try:
            ref = manager.resolve(name)
        except HTTPError:
            raise
        except LocalseekError:
            if full:
                raise
            return {}
        out = dict(facts(str(ref.path)))
        if not full:
            out.pop("template", None)
            out.pop("model_info", None)
        return out

    return describe


def create_app(manager: ModelManager, config: ServerConfig, preload: tuple[str, ...] = ()) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        reaper = asyncio.create_task(manager.reap())
        loader = asyncio.create_task(_preload(app, manager, preload))
        try:
            yield
        finally:
            for task in (reaper, loader):
                task.cancel()
            await manager.close()

    middleware = [Middleware(AccessLog)]
    if config.cors:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors), allow_methods=["*"],
                                     allow_headers=["*"]))
    if config.api_key:
        middleware.append(Middleware(BearerAuth, key=config.api_key))
    app = Starlette(
        routes=ROUTES, middleware=middleware, lifespan=lifespan,
        exception_handlers={HTTPError: _http_error, LocalseekError: _localseek_error,
                            StarletteHTTPException: _starlette_error, Exception: _unexpected},
    )
    app.state.manager = manager
    app.state.config = config
    app.state.preloading = bool(preload)
    app.state.catalog = catalog(manager)
    app.state.describe = describer(manager)
    return app


async def _preload(app: Starlette, manager: ModelManager, names: tuple[str, ...]) -> None:
    try:
        for name in names:
            try:
                await manager.load(manager.resolve(name))
            except (LocalseekError, HTTPError) as exc:
                log.error("could not load %s: %s", name, exc)
    finally:
        app.state.preloading = False
