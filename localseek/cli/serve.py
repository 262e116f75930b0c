"""`localseek serve [MODEL…]`: the OpenAI- and Ollama-compatible HTTP API; `localseek ps` and `localseek stop MODEL`
ask a running server what it holds, and unload."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer

from localseek.cli import app
from localseek.cli.offload import (
    CpuMoe,
    Ctx,
    Force,
    GpuLayers,
    Mlock,
    NCpuMoe,
    NoMmap,
    Rpc,
    Threads,
    make_request,
)
from localseek.errors import UsageError
from localseek.sizes import format_size

Opt = typer.Option
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435  # Ollama's 11434 + 1: both can run side by side
_SERVER = "Server"
_SPEED = "Speculative decoding"

Host = Annotated[str, Opt("--host", envvar="LOCALSEEK_HOST", rich_help_panel=_SERVER,
                          help="Address to listen on (default loopback only). Anything else is reachable by others.")]
Port = Annotated[int, Opt("--port", envvar="LOCALSEEK_PORT", min=0, max=65535, rich_help_panel=_SERVER,
                          help="Port to listen on (0: any free port, printed at start).")]
ApiKey = Annotated[str | None, Opt("--api-key", envvar="LOCALSEEK_API_KEY", show_default=False,
                                   rich_help_panel=_SERVER,
                                   help="Require `Authorization: Bearer KEY` on every request.")]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear line (and --port 0 works)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"Cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host.") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def parse_keep_alive(text: str) -> float | None:
    from localseek.serve.params import duration

    try:
        return duration(text, "--keep-alive")
    except Exception as exc:  # the HTTP 400 of a bad duration, here a usage error
        raise UsageError(f"--keep-alive takes a duration like 5m, 30s, 1h, or -1 for never, not {text!r}.") from exc


@app.command()
def serve(
    models: Annotated[list[str] | None, typer.Argument(
        help="Models to load now (others load on first request): catalog names, installed models, .gguf files.",
        show_default=False)] = None,
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    api_key: ApiKey = None,
    cors: Annotated[list[str] | None, Opt("--cors", metavar="ORIGIN", rich_help_panel=_SERVER,
                                          help="Allow browser pages from ORIGIN (repeat for more; `*` for any).")] = None,
    reasoning_field: Annotated[str, Opt(
        "--reasoning-field", rich_help_panel=_SERVER, metavar="reasoning_content|reasoning|both|inline",
        help="OpenAI API: where the reasoning goes (`inline`: inside <think> tags in the content).")
    ] = "reasoning_content",
    keep_alive: Annotated[str, Opt("--keep-alive", rich_help_panel=_SERVER,
                                   help="Unload a model after this long idle (5m, 1h, 30s; -1 = never).")] = "5m",
    parallel: Annotated[int | None, Opt(
        "--parallel", "-np", min=1, max=64, rich_help_panel=_SERVER,
        help="Requests one model generates at once (default 4; 1 for models that speculate, which keeps MTP/draft "
             "speculation on). More requests wait their turn in order.")] = None,
    log_prompts: Annotated[bool, Opt("--log-prompts", rich_help_panel=_SERVER,
                                     help="Also log each request's prompt text (off: only method, path, model, "
                                          "status, tokens, time).")] = False,
    ctx: Ctx = None,
    threads: Threads = None,
    gpu_layers: GpuLayers = "auto",
    cpu_moe: CpuMoe = False,
    n_cpu_moe: NCpuMoe = None,
    mlock: Mlock = False,
    no_mmap: NoMmap = False,
    force: Force = False,
    rpc: Rpc = None,
    mtp: Annotated[bool | None, Opt("--mtp/--no-mtp", rich_help_panel=_SPEED, show_default=False,
                                    help="Speculate with the model's MTP block (default: when it has one).")] = None,
    draft: Annotated[str | None, Opt("--draft", rich_help_panel=_SPEED,
                                     help="Speculate with a smaller model that shares the tokenizer.")] = None,
    verbose: Annotated[bool, Opt("--verbose", "-v", help="Show llama.cpp's own log.")] = False,
) -> None:
    """Serve models over HTTP for other programs: an OpenAI-compatible API under /v1 and an Ollama-compatible one
    under /api, with the reasoning apart from the answer. See docs/SERVER.md."""
    import uvicorn

    from localseek.runtime.open import Speculation
    from localseek.serve.app import ServerConfig, create_app
    from localseek.serve.manager import ModelManager
    from localseek.serve.openai_api import REASONING_FIELDS

    if reasoning_field not in REASONING_FIELDS:
        raise UsageError(f"--reasoning-field is one of {', '.join(REASONING_FIELDS)}, not {reasoning_field!r}.")
    request = make_request(ctx=ctx, gpu_layers=gpu_layers, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, threads=threads,
                           mlock=mlock, no_mmap=no_mmap, force=force, rpc=rpc)
    if (mtp or draft) and parallel is not None and parallel > 1:
        raise UsageError("Speculation (--mtp, --draft) serves one request at a time: drop --parallel or set it to 1.")
    manager = ModelManager(request, keep_alive=parse_keep_alive(keep_alive), parallel=parallel,
                           speculation=Speculation(mtp=mtp, draft=draft), verbose=verbose)
    names = tuple(models or ())
    for name in names:
        manager.add(name)  # a name that does not resolve stops here, before the server listens
    _configure_logging()
    config = ServerConfig(api_key=api_key or None, cors=tuple(cors or ()), reasoning_field=reasoning_field,
                          log_prompts=log_prompts)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    where = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    _say(f"localseek serve: listening on {where} (OpenAI API: {where}/v1, Ollama API: {where}/api, chat page: {where}/)")
    if not _is_loopback(host):
        if api_key:
            _say(f"{host} is reachable from other machines; requests need the API key.")
        else:
            _say(f"warning: {host} is reachable from other machines, and anyone who can reach it can use these "
                 "models; set --api-key (or LOCALSEEK_API_KEY) to require a key.")
    server = uvicorn.Server(uvicorn.Config(
        create_app(manager, config, names), log_level="warning", access_log=False, lifespan="on",
        timeout_graceful_shutdown=5, server_header=False,
    ))
    server.run(sockets=[sock])


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("localseek.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


# -- ps and stop: a client of the running server ------------------------------------------------------
def _call(host: str, port: int, path: str, api_key: str | None, body: dict[str, Any] | None = None) -> Any:
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except Exception:  # noqa: BLE001
            message = exc.reason
        if exc.code == 401:
            raise UsageError(f"The server at {url} wants an API key: pass --api-key or set LOCALSEEK_API_KEY.") \
                from None
        raise UsageError(f"{message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UsageError(f"No localseek server at {host}:{port} ({getattr(exc, 'reason', exc)}); start one with "
                         "`localseek serve`, or pass --host/--port.") from None


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@app.command()
def ps(
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    api_key: ApiKey = None,
    as_json: Annotated[bool, Opt("--json", help="Print the server's answer as JSON.")] = False,
) -> None:
    """What a running `localseek serve` holds: each model, its plan and memory, idle time, running requests."""
    data = _call(host, port, "/localseek/ps", api_key)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    models = data.get("models", [])
    if not models:
        sys.stdout.write("No models loaded.\n")
        return
    for m in models:
        memory = format_size(m["ram_bytes"]) + (f" + {format_size(m['vram_bytes'])} GPU" if m["vram_bytes"] else "")
        if m["requests"]:
            state = f"{len(m['requests'])} running"
        elif m["expires_in_s"] is None:
            state = f"idle {_ago(m['idle_s'])}, kept"
        else:
            state = f"idle {_ago(m['idle_s'])}, unloads in {_ago(m['expires_in_s'])}"
        busy = sum(1 for s in m["slots"] if s["busy"])
        sys.stdout.write(f"{m['name']}  {memory}  {state}  slots {busy}/{len(m['slots'])}"
                         + (f", {m['waiting']} waiting" if m["waiting"] else "")
                         + (f"  speculative ({m['speculation']})" if m.get("speculation") else "") + "\n")
        sys.stdout.write(f"  {m['path']}\n  plan: {m['plan']}\n")
        for r in m["requests"]:
            sys.stdout.write(f"  request {r['id']}: {r['endpoint']}, {_ago(r['running_s'])}\n")


@app.command()
def stop(
    model: Annotated[str, typer.Argument(help="The model to unload (as `localseek ps` names it).")],
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    api_key: ApiKey = None,
) -> None:
    """Unload MODEL from a running `localseek serve` (its running requests are stopped)."""
    data = _call(host, port, "/localseek/stop", api_key, {"model": model})
    sys.stdout.write(f"Stopped {data['stopped']}.\n")

