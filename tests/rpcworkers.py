"""Real `localseek worker` processes for the tests: on loopback ports, or in network namespaces joined to this one by
veth pairs (their own addresses, a real network path, links that can be cut). Every wait is bounded."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


def require_rpc() -> None:
    """Skip without llama.cpp's RPC backend — or fail where CI says the build must have it."""
    from localseek.runtime import rpc

    if rpc.available():
        return
    reason = "llama-cpp-python was built without -DGGML_RPC=on (see `localseek doctor`)"
    if os.environ.get("LOCALSEEK_REQUIRE_RPC") == "1":
        pytest.fail(f"{reason} (LOCALSEEK_REQUIRE_RPC=1: CI must run the RPC tests)")
    pytest.skip(reason)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@dataclass
class Worker:
    proc: subprocess.Popen
    endpoint: str
    log: list[str]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)


def _read_until_ready(proc: subprocess.Popen, log: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            rest = proc.stdout.read() or b""
            raise AssertionError(f"worker exited {proc.returncode}: {(buf + rest).decode(errors='replace')}")
        try:
            chunk = proc.stdout.read() or b""
        except BlockingIOError:
            chunk = b""
        buf += chunk
        lines = buf.decode(errors="replace").splitlines()
        if any(line.startswith("listening on") for line in lines):
            log.extend(lines)
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"worker not ready in {timeout}s: {buf.decode(errors='replace')}")


@contextmanager
def worker(*args: str, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None,
           threads: int = 1, timeout: float = 90) -> Iterator[Worker]:
    """`localseek worker` in its own process (inside `netns` when given); stopped (and reaped) afterwards."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "localseek", "worker", "--host", host, "--port", str(port), "--threads",
           str(threads), *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    w = Worker(proc, f"{host}:{port}", [])
    try:
        _read_until_ready(proc, w.log, timeout)
        yield w
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def netns_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"lsprobe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return ok


@dataclass
class Namespace:
    name: str
    address: str  # the worker's address inside
    here: str  # this namespace's end of the veth pair
    inside: str


@contextmanager
def namespaces(n: int) -> Iterator[list[Namespace]]:
    """`n` network namespaces, each joined to this one by a veth pair on its own /24 (10.<pid-derived>.<i>.0)."""
    tag = os.getpid() % 10000
    net = 100 + os.getpid() % 150
    made: list[Namespace] = []

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    try:
        for i in range(n):
            ns = Namespace(f"ls{tag}n{i}", f"10.{net}.{i}.2", f"ls{tag}h{i}", f"ls{tag}w{i}")
            ip("netns", "add", ns.name)
            made.append(ns)
            ip("link", "add", ns.here, "type", "veth", "peer", "name", ns.inside)
            ip("link", "set", ns.inside, "netns", ns.name)
            ip("addr", "add", f"10.{net}.{i}.1/24", "dev", ns.here)
            ip("link", "set", ns.here, "up")
            ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", ns.inside)
            ip("-n", ns.name, "link", "set", ns.inside, "up")
            ip("-n", ns.name, "link", "set", "lo", "up")
        yield made
    finally:
        for ns in made:
            subprocess.run(["ip", "link", "del", ns.here], capture_output=True, check=False, timeout=10)
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False, timeout=10)


def cut(ns: Namespace) -> None:
    """The worker's side of the link goes down: packets vanish, nothing is closed or reset."""
    subprocess.run(["ip", "-n", ns.name, "link", "set", ns.inside, "down"], check=True, capture_output=True, timeout=10)
