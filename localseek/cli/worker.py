"""`localseek worker`: lend this machine's memory and compute to another machine's `localseek run --rpc`."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from localseek.cli import app
from localseek.planning import rpc as plan_rpc
from localseek.sizes import format_size, parse_size


def security_warning(host: str, port: int) -> str | None:
    """One line for a worker that listens beyond this machine (None on loopback)."""
    if plan_rpc.is_loopback(host):
        return None
    me = socket.gethostname() or "THIS-MACHINE"
    return (f"warning: the RPC protocol has no authentication and has had remote-code-execution bugs: make "
            f"{host}:{port} reachable only from a trusted network (LAN, VPN), or keep the default 127.0.0.1 and "
            f"tunnel from the main machine: ssh -N -L {port}:127.0.0.1:{port} USER@{me} "
            f"(then --rpc 127.0.0.1:{port}).")


@app.command()
def worker(
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on: 127.0.0.1 (default, reach it through an SSH tunnel), this machine's LAN "
                       "address, or 0.0.0.0 for all. Only on a network you trust: the protocol has no authentication."
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on.")]
    = plan_rpc.DEFAULT_PORT,
    threads: Annotated[int | None, typer.Option(
        "--threads", "-t", min=1, help="CPU threads for the layers computed here (default: physical cores).")] = None,
    mem: Annotated[str | None, typer.Option(
        "--mem", help="Offer at most this much memory per device, e.g. 48GiB (default: what is available, less "
                      "headroom for the system).")] = None,
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Keep received tensors here (by hash), so loading the same model again sends hashes instead "
                        "of weights.")] = None,
) -> None:
    """Serve this machine's memory and compute to a main process (`localseek run MODEL --rpc HOST:PORT`).

    One main process at a time. Ctrl-C stops it. Exit code 2 when it cannot start.
    """
    from localseek.runtime import worker as runtime_worker

    offer, serve = runtime_worker.prepare(host, port, threads=threads, mem=parse_size(mem, "--mem") if mem else None,
                                          cache=cache)
    say = _printer()
    say(f"localseek worker · llama.cpp RPC protocol {'.'.join(map(str, plan_rpc.PROTOCOL))} · {offer.threads} "
        f"thread{'s' if offer.threads > 1 else ''}")
    for d in offer.devices:
        say(f"  {d.name} ({d.description}): offers {format_size(d.free)} of {format_size(d.total)}")
    if not offer.honest_memory:
        say("  (memory as ggml reports it: the main machine keeps headroom off it)")
    if offer.cache:
        say(f"  cache: {offer.cache}")
    warning = security_warning(host, port)
    if warning:
        say(warning)
    use = "127.0.0.1" if host == "0.0.0.0" else host
    shown = f"{socket.gethostname()}:{port}" if host == "0.0.0.0" else f"{use}:{port}"

    def ready() -> None:
        say(f"listening on {offer.endpoint}; on the main machine: localseek run MODEL --rpc {shown}")
        say("Ctrl-C stops it.")

    signal.signal(signal.SIGTERM, _stop)
    runtime_worker.run(offer, serve, log=say, ready=ready)
    say("worker stopped")
    # The server thread is inside llama.cpp's accept loop and cannot be joined; end here, sockets closed by the OS.
    sys.stdout.flush()
    os._exit(0)


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _printer() -> Callable[[str], None]:
    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return say
