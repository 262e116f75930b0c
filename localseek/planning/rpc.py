"""Workers: other machines that lend their memory and compute through llama.cpp's RPC backend (`localseek worker`).

This module knows what the planner needs of a worker and nothing of llama.cpp's state: it parses `--rpc` and
`--rpc-mem`, asks a running worker what it offers over the RPC protocol itself (a few bytes, every step under a
timeout), and builds simulated workers for what-if plans. Registering workers with llama.cpp is
`runtime.rpc`'s job.

The protocol (ggml/src/ggml-rpc/ggml-rpc.cpp of the pinned llama.cpp): a request is
`| command (1 byte) | size (u64) | payload |`, a reply `| size (u64) | payload |`, little-endian. Every connection
starts with HELLO (the reply carries the server's protocol version). A worker serves one connection at a time;
another client waits in its listen queue until the first one hangs up.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from localseek.errors import UsageError, WorkerError
from localseek.sizes import GiB, MiB, format_size, parse_size

# RPC_PROTO_{MAJOR,MINOR,PATCH}_VERSION of the pinned llama.cpp (ggml/include/ggml-rpc.h); a test checks them against
# a real worker's HELLO reply, so a new pin that changes the protocol fails loudly here.
PROTOCOL = (7, 0, 0)
DEFAULT_PORT = 50052
CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
CONN_CAPS = 24  # RPC_CONN_CAPS_SIZE: transport capabilities in HELLO (all zero: plain TCP)
MAX_DEVICES = 16  # llama_max_devices(): one model cannot use more devices than this

CONNECT_TIMEOUT = 5.0  # seconds
READ_TIMEOUT = 120.0  # seconds without a byte from a worker before it counts as gone (one micro-batch's compute)


def read_timeout() -> float:
    """Seconds a read from a worker may wait: LOCALSEEK_RPC_TIMEOUT, else 120 (enough for a 512-token micro-batch
    through a share of R1's layers on a slow CPU)."""
    raw = os.environ.get("LOCALSEEK_RPC_TIMEOUT", "").strip()
    if not raw:
        return READ_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 86400:
        raise UsageError(f"LOCALSEEK_RPC_TIMEOUT must be a number of seconds (0–86400), not {raw!r}; fix or unset it.")
    return value


def connect_timeout() -> float:
    return min(CONNECT_TIMEOUT, read_timeout())


@dataclass(frozen=True)
class RemoteDevice:
    """One device a worker exposes (its CPU, or each of its GPUs). `free == total` means the worker cannot tell what
    is free (ggml's CPU device reports all of RAM as free): the planner then keeps the usual RAM headroom."""

    index: int
    free: int
    total: int

    @property
    def honest(self) -> bool:
        return self.free < self.total


@dataclass(frozen=True)
class Worker:
    endpoint: str  # HOST:PORT as the user wrote it
    devices: tuple[RemoteDevice, ...]
    rtt: float = 0.0  # seconds, one request and its reply (0: not measured)
    version: tuple[int, int, int] = PROTOCOL
    simulated: bool = False

    @property
    def host(self) -> str:
        return self.endpoint.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.endpoint.rpartition(":")[2])

    @property
    def free(self) -> int:
        return sum(d.free for d in self.devices)


# -- what the user typed -----------------------------------------------------------------------------------------


def parse_endpoint(text: str, what: str = "--rpc") -> str:
    """"HOST:PORT" (or "HOST", port 50052) → "HOST:PORT". IPv4 addresses and host names; llama.cpp's RPC client
    resolves names with gethostbyname, so IPv6 does not work."""
    item = text.strip()
    host, sep, port = item.rpartition(":")
    if not sep:
        host, port = item, str(DEFAULT_PORT)
    if not host or ":" in host or "[" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{what}: {text!r} is not HOST:PORT (e.g. 192.168.1.20:{DEFAULT_PORT}; IPv4 or a host name).")
    if any(c.isspace() or c in ",=/" for c in host):
        raise UsageError(f"{what}: {text!r} is not a host name or IPv4 address.")
    return f"{host}:{int(port)}"


def parse_endpoints(text: str | None, what: str = "--rpc") -> tuple[str, ...]:
    """"a:1,b:2" → ("a:1", "b:2"); duplicates and more than llama.cpp's device limit are refused."""
    if not text or not text.strip():
        return ()
    out = tuple(parse_endpoint(part, what) for part in text.split(",") if part.strip())
    if len(set(out)) != len(out):
        raise UsageError(f"{what}: a worker is listed twice in {text!r}.")
    if len(out) >= MAX_DEVICES:
        raise UsageError(f"{what}: at most {MAX_DEVICES - 1} workers (llama.cpp uses at most {MAX_DEVICES} devices).")
    return out


def env_endpoints() -> tuple[str, ...]:
    """LOCALSEEK_RPC: the workers every command uses when --rpc is not given."""
    return parse_endpoints(os.environ.get("LOCALSEEK_RPC"), "LOCALSEEK_RPC")


def simulated(text: str) -> tuple[Worker, ...]:
    """`--rpc-mem 192.168.1.20=128GiB,192.168.1.21=64GiB` → workers that do not exist yet, each one CPU device with
    that much RAM (all of it free, so the planner keeps the usual headroom). No connection is made."""
    workers = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        where, sep, size = part.partition("=")
        if not sep:
            raise UsageError(f"--rpc-mem: {part!r} is not HOST[:PORT]=SIZE (e.g. 192.168.1.20=128GiB).")
        endpoint = parse_endpoint(where, "--rpc-mem")
        n = parse_size(size, "--rpc-mem size")
        if n < 1 * GiB // 4:
            raise UsageError(f"--rpc-mem: {format_size(n)} for {endpoint} is too little to hold a layer; give at least 256M.")
        workers.append(Worker(endpoint, (RemoteDevice(0, n, n),), simulated=True))
    if not workers:
        raise UsageError("--rpc-mem needs at least one HOST=SIZE.")
    if len({w.endpoint for w in workers}) != len(workers):
        raise UsageError(f"--rpc-mem: a worker is listed twice in {text!r}.")
    return tuple(workers)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- asking a worker ---------------------------------------------------------------------------------------------


class _Conn:
    """One RPC connection with a deadline on every step."""

    def __init__(self, endpoint: str, connect_s: float, read_s: float) -> None:
        self.endpoint = endpoint
        self.read_s = read_s
        host, _, port = endpoint.rpartition(":")
        try:
            addr = socket.gethostbyname(host)
        except OSError as exc:
            raise WorkerError(f"worker {endpoint}: cannot resolve {host!r} ({exc.strerror or exc}); "
                              "check the name, or give its IPv4 address.") from None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(connect_s)
        try:
            self.sock.connect((addr, int(port)))
        except TimeoutError:
            self.sock.close()
            raise WorkerError(f"worker {endpoint}: no answer to a connection within {connect_s:g}s: check the address, "
                              "that `localseek worker` runs there and listens on that address (--host), and firewalls."
                              ) from None
        except ConnectionRefusedError:
            self.sock.close()
            raise WorkerError(f"worker {endpoint}: connection refused: nothing listens on port {port} there; start "
                              f"`localseek worker --port {port}` on that machine (with --host for a LAN address)."
                              ) from None
        except OSError as exc:
            self.sock.close()
            raise WorkerError(f"worker {endpoint}: cannot connect ({exc.strerror or exc}); check the address and "
                              "the network.") from None
        self.sock.settimeout(read_s)

    def request(self, cmd: int, payload: bytes, reply_size: int, what: str) -> bytes:
        try:
            self.sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
            size = struct.unpack("<Q", self._recv(8))[0]
            if size != reply_size:
                raise WorkerError(f"worker {self.endpoint}: answered {what} with {size} bytes instead of {reply_size}: "
                                  "not a ggml RPC worker of this protocol version.")
            return self._recv(reply_size)
        except TimeoutError:
            raise WorkerError(
                f"worker {self.endpoint}: accepted the connection but did not answer {what} within {self.read_s:g}s. "
                "A worker serves one main process at a time: is another localseek or llama.cpp using it? "
                "Otherwise it is stuck; restart it.") from None
        except OSError as exc:  # ConnectionError included
            raise WorkerError(f"worker {self.endpoint}: the connection broke during {what} ({exc}); "
                              "is it a `localseek worker` (ggml RPC server)? Restart it and retry.") from None

    def _recv(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the worker")
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def probe(endpoint: str, *, connect_s: float | None = None, read_s: float | None = None) -> Worker:
    """Ask a running worker for its protocol version, devices and their memory, and time a round trip. Raises
    WorkerError with what happened and what to do; never waits longer than the timeouts per step."""
    conn = _Conn(endpoint, connect_timeout() if connect_s is None else connect_s,
                 min(10.0, read_timeout()) if read_s is None else read_s)
    try:
        reply = conn.request(CMD_HELLO, bytes(CONN_CAPS), 4 + CONN_CAPS, "the RPC handshake")
        version = (reply[0], reply[1], reply[2])
        if version[0] != PROTOCOL[0] or version[1] > PROTOCOL[1]:
            ours = ".".join(map(str, PROTOCOL))
            raise WorkerError(
                f"worker {endpoint} speaks RPC protocol {'.'.join(map(str, version))}, this install speaks {ours}: "
                "install the same localseek (and llama-cpp-python) version on both machines.")
        start = time.perf_counter()
        (count,) = struct.unpack("<I", conn.request(CMD_DEVICE_COUNT, b"", 4, "the device count"))
        rtt = time.perf_counter() - start
        if not 0 < count <= MAX_DEVICES:
            raise WorkerError(f"worker {endpoint} reports {count} devices; restart it (`localseek worker`).")
        devices = []
        for i in range(count):
            start = time.perf_counter()
            free, total = struct.unpack("<QQ", conn.request(CMD_GET_DEVICE_MEMORY, struct.pack("<I", i), 16,
                                                            "the memory query"))
            rtt = min(rtt, time.perf_counter() - start)
            devices.append(RemoteDevice(i, min(free, total) if total else free, total or free))
        return Worker(endpoint, tuple(devices), rtt=rtt, version=version)
    finally:
        conn.close()


def probe_all(endpoints: tuple[str, ...]) -> tuple[Worker, ...]:
    """Probe every worker at once (so several unreachable ones cost one timeout, not one each); the first failure
    in the order given is raised."""
    if not endpoints:
        return ()
    with ThreadPoolExecutor(max_workers=min(8, len(endpoints))) as pool:
        futures = [pool.submit(probe, ep) for ep in endpoints]
        results = []
        for future in futures:
            results.append(future.result())
    return tuple(results)


def headroom(total: int) -> int:
    """What a machine keeps for its OS and other programs: the planner's RAM rule (5 %, at least 512 MiB, at most
    2 GiB). A localseek worker subtracts it before it reports; the planner subtracts it from workers that cannot
    tell what is free."""
    return min(2 * GiB, max(512 * MiB, int(0.05 * total)))


__all__ = [
    "DEFAULT_PORT", "PROTOCOL", "RemoteDevice", "Worker", "connect_timeout", "env_endpoints", "headroom",
    "install_command", "is_loopback", "parse_endpoint", "parse_endpoints", "probe", "probe_all", "read_timeout", "simulated",
]


# -- installing the RPC backend ----------------------------------------------------------------------------------

_BACKEND_FLAGS = {"CUDA": "-DGGML_CUDA=on", "Metal": "-DGGML_METAL=on", "Vulkan": "-DGGML_VULKAN=on",
                  "ROCm": "-DGGML_HIP=on", "HIP": "-DGGML_HIP=on", "SYCL": "-DGGML_SYCL=on"}


def install_command(backends: tuple[str, ...] = ("CPU",), python: str | None = None) -> str:
    """The exact command that rebuilds this install's llama-cpp-python with the RPC backend, keeping the GPU
    backends it has. `--no-cache-dir` matters: pip's wheel cache is not keyed on CMAKE_ARGS, so without it pip
    would reinstall the cached build without RPC."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    try:
        pinned = version("llama-cpp-python")
    except PackageNotFoundError:
        pinned = "0.3.36"
    flags = [f for b in backends if (f := _BACKEND_FLAGS.get(b))]
    flags = list(dict.fromkeys(flags)) + ["-DGGML_RPC=on"]
    return (f'CMAKE_ARGS="{" ".join(flags)}" {python or sys.executable} -m pip install --force-reinstall '
            f"--no-cache-dir --no-deps --no-binary llama-cpp-python llama-cpp-python=={pinned}")
