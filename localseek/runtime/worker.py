"""`localseek worker`: lend this machine's memory and compute to a main process, through llama.cpp's RPC server
running inside this process (`ggml_backend_rpc_start_server` from the same libggml the main process uses — so both
ends always speak the same protocol version, and nothing else has to be built).

Two things the stock server does not do, done here:
- **Honest memory.** ggml's CPU device reports all of RAM as free. The worker reports what is available (cgroup
  aware, less the usual headroom), capped by `--mem`: each device handed to the server is a copy of the real one
  whose `get_memory` answers that, and the backends the server creates are pointed at the copy (the pointer is
  found and checked through ggml's public getter before it is changed; if the layout is not what we expect, the
  worker says so and serves ggml's own numbers).
- **A readable log.** The server prints to C's stdout; that goes through a pipe and comes out as
  "connected"/"disconnected" lines with the time.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localseek.errors import UsageError, WorkerError
from localseek.planning import backends
from localseek.planning import rpc as plan_rpc
from localseek.planning.hardware import default_threads, memory
from localseek.planning.plan import RUNTIME_RAM
from localseek.runtime import rpc

_START_SERVER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_void_p))
_GET_MEMORY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))
_INIT_BACKEND = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)
_IFACE = ("get_name", "get_description", "get_memory", "get_type", "get_props", "init_backend", "get_buffer_type",
          "get_host_buffer_type", "buffer_from_host_ptr", "supports_op", "supports_buft", "offload_op", "event_new",
          "event_free", "event_synchronize")


class _DeviceIface(ctypes.Structure):
    """`struct ggml_backend_device_i` (ggml/src/ggml-backend-impl.h of the pinned llama.cpp)."""

    _fields_ = [(name, ctypes.c_void_p) for name in _IFACE]


class _Device(ctypes.Structure):
    """`struct ggml_backend_device`."""

    _fields_ = [("iface", _DeviceIface), ("reg", ctypes.c_void_p), ("context", ctypes.c_void_p)]


@dataclass(frozen=True)
class Offered:
    """One device the worker serves, and the memory it reports."""

    name: str
    description: str
    free: int
    total: int


@dataclass(frozen=True)
class Offer:
    endpoint: str
    devices: tuple[Offered, ...]
    threads: int
    cache: Path | None
    honest_memory: bool  # False: the layout check failed and ggml's own numbers are served


def check_host(host: str) -> str:
    """ggml's server binds with inet_addr: an IPv4 address, not a name."""
    try:
        socket.inet_aton(host)
        if host.count(".") != 3:
            raise OSError
    except OSError:
        raise UsageError(f"--host takes an IPv4 address of this machine (127.0.0.1, 0.0.0.0, 192.168.1.20…), "
                         f"not {host!r}.") from None
    return host


def _check_port(host: str, port: int) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise WorkerError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): another worker or program has "
                          "that port, or the address is not this machine's; pick another --port or --host.") from None
    finally:
        probe.close()


class _Lib:
    def __init__(self) -> None:
        lib = backends.ggml()
        lib.ggml_backend_dev_init.restype = ctypes.c_void_p
        lib.ggml_backend_dev_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.ggml_backend_get_device.restype = ctypes.c_void_p
        lib.ggml_backend_get_device.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_free.restype = None
        lib.ggml_backend_free.argtypes = [ctypes.c_void_p]
        self.lib = lib


class _HonestDevice:
    """A copy of a ggml device that reports `offer()` as its memory, and whose backends point back at the copy."""

    def __init__(self, lib: ctypes.CDLL, real: int, offer: Callable[[int, int], tuple[int, int]]) -> None:
        self.lib, self.real = lib, real
        self.struct = _Device.from_buffer_copy(_Device.from_address(real))
        self.real_memory = ctypes.cast(self.struct.iface.get_memory, _GET_MEMORY)
        self.real_init = ctypes.cast(self.struct.iface.init_backend, _INIT_BACKEND)
        self.offer = offer
        self.get_memory = _GET_MEMORY(self._memory)
        self.init_backend = _INIT_BACKEND(self._init)
        self.struct.iface.get_memory = ctypes.cast(self.get_memory, ctypes.c_void_p)
        self.struct.iface.init_backend = ctypes.cast(self.init_backend, ctypes.c_void_p)
        self.address = ctypes.addressof(self.struct)
        self.slot: int | None = None

    def _memory(self, _dev: int, free: ctypes.Array, total: ctypes.Array) -> None:
        f, t = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self.real_memory(self.real, ctypes.byref(f), ctypes.byref(t))
        free[0], total[0] = self.offer(int(f.value), int(t.value))

    def _init(self, _dev: int, params: bytes | None) -> int:
        backend = self.real_init(self.real, params)
        if backend and self.slot is not None:
            ctypes.c_void_p.from_address(backend + self.slot).value = self.address
        return backend or 0

    def find_slot(self) -> bool:
        """Where a backend keeps its device pointer: the one pointer-sized field of a fresh backend that holds the
        real device, as `ggml_backend_get_device` confirms before and after the change."""
        backend = self.real_init(self.real, None)
        if not backend:
            return False
        try:
            if self.lib.ggml_backend_get_device(backend) != self.real:
                return False
            size = ctypes.sizeof(ctypes.c_void_p)
            slots = [i * size for i in range(64) if ctypes.c_void_p.from_address(backend + i * size).value == self.real]
            if len(slots) != 1:
                return False
            ctypes.c_void_p.from_address(backend + slots[0]).value = self.address
            ok = self.lib.ggml_backend_get_device(backend) == self.address
            ctypes.c_void_p.from_address(backend + slots[0]).value = self.real
            if ok:
                self.slot = slots[0]
            return ok
        finally:
            self.lib.ggml_backend_free(backend)


def _served_devices(lib: ctypes.CDLL) -> list[int]:
    """Every accelerator of this build; the CPU when there is none (as llama.cpp's rpc-server chooses)."""
    found, cpu = [], None
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        reg = lib.ggml_backend_dev_backend_reg(dev)
        if reg and lib.ggml_backend_reg_name(reg) == b"RPC":
            continue
        kind = lib.ggml_backend_dev_type(dev)
        if kind == 0:
            cpu = cpu or dev
        elif kind in (1, 2):
            found.append(dev)
    return found or ([cpu] if cpu else [])


def prepare(host: str, port: int, *, threads: int | None = None, mem: int | None = None,
            cache: Path | None = None) -> tuple[Offer, Callable[[], None]]:
    """Check everything, build the devices; returns what will be offered and the blocking function that serves."""
    rpc.require("localseek worker")
    check_host(host)
    if not 0 < port < 65536:
        raise UsageError(f"--port must be 1–65535, not {port}.")
    _check_port(host, port)
    if mem is not None and mem < 256 * 1024**2:
        raise UsageError("--mem below 256M cannot hold a layer of any model; give more.")
    if cache is not None:
        cache = cache.expanduser().resolve()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--cache {cache}: cannot create it ({exc.strerror or exc}).") from None
    n_threads = threads or default_threads()
    lib = _Lib().lib
    devices = _served_devices(lib)
    if not devices:
        raise WorkerError("this llama.cpp build has no device to serve.")

    def cpu_offer(_free: int, total: int) -> tuple[int, int]:
        ram = memory()
        real_total = ram.total or total
        usable = max(0, ram.available - plan_rpc.headroom(real_total) - RUNTIME_RAM)
        return (min(usable, mem) if mem is not None else usable), real_total

    def gpu_offer(free: int, total: int) -> tuple[int, int]:
        return (min(free, mem) if mem is not None else free), total

    honest = []
    for dev in devices:
        is_cpu = lib.ggml_backend_dev_type(dev) == 0
        honest.append(_HonestDevice(lib, dev, cpu_offer if is_cpu else gpu_offer))
    wrapped = all(h.find_slot() for h in honest)
    if not wrapped and mem is not None:
        raise WorkerError("--mem cannot be applied: this llama.cpp build's device layout is not the one localseek "
                          "knows; run without --mem.")
    served = [h.address if wrapped else h.real for h in honest]
    offered = []
    for h in honest:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        h.real_memory(h.real, ctypes.byref(free), ctypes.byref(total))
        if wrapped:
            f, t = h.offer(int(free.value), int(total.value))
        else:
            f, t = int(free.value), int(total.value)
        offered.append(Offered(lib.ggml_backend_dev_name(h.real).decode(),
                               lib.ggml_backend_dev_description(h.real).decode(), f, t))
    endpoint = f"{host}:{port}"
    offer = Offer(endpoint, tuple(offered), n_threads, cache, wrapped)
    reg = backends.rpc_registry()
    start = _START_SERVER(lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_start_server"))
    array = (ctypes.c_void_p * len(served))(*served)
    cache_arg = str(cache).encode() if cache else None

    def serve() -> None:
        # the devices and callbacks must outlive the server: this closure holds them
        start(endpoint.encode(), cache_arg, n_threads, len(served), array)
        _ = honest

    return offer, serve


def run(offer: Offer, serve: Callable[[], None], *, log: Callable[[str], None],
        ready: Callable[[], None] | None = None) -> None:
    """Serve until Ctrl-C (or SIGTERM): the server runs in a thread (it never returns on its own); its C output is
    turned into timestamped lines through `log`; `ready` runs once the port answers the RPC handshake."""
    read_fd, write_fd = os.pipe()
    saved = os.dup(1)
    sys.stdout.flush()
    os.dup2(write_fd, 1)  # C's printf → the pipe; Python keeps writing to the terminal through `saved`
    os.close(write_fd)
    sys.stdout = open(saved, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    started = threading.Event()
    threading.Thread(target=_relay, args=(read_fd, log, started), name="worker-log", daemon=True).start()
    threading.Thread(target=serve, name="rpc-server", daemon=True).start()
    deadline = time.monotonic() + 30
    while True:
        try:
            plan_rpc.probe(offer.endpoint if not offer.endpoint.startswith("0.0.0.0:")
                           else "127.0.0.1:" + offer.endpoint.rpartition(":")[2], connect_s=1.0, read_s=5.0)
            break
        except WorkerError:
            if time.monotonic() > deadline:
                raise WorkerError(f"the RPC server did not start on {offer.endpoint}.") from None
            time.sleep(0.05)
    started.wait(5)
    if ready is not None:
        ready()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _relay(fd: int, log: Callable[[str], None], started: threading.Event, quiet_s: float = 2.0) -> None:
    """C's stdout, line by line, as "connected"/"disconnected" lines with the time. The startup block and the
    readiness check's own connection are skipped. llama.cpp opens and closes several short connections while a
    model loads, so a disconnection is only told once no new connection followed within `quiet_s` seconds."""
    skipping, connected, closing_at = True, False, None
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if closing_at is not None and time.monotonic() >= closing_at:
            log(f"{time.strftime('%H:%M:%S')} the main process disconnected")
            connected, closing_at = False, None
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if skipping:
                if text == "Client connection closed":  # the end of the readiness check
                    skipping = False
                    started.set()
                continue
            if text == "Accepted client connection":
                if not connected:
                    log(f"{time.strftime('%H:%M:%S')} a main process connected")
                connected, closing_at = True, None
            elif text == "Client connection closed":
                closing_at = time.monotonic() + quiet_s
            elif text:
                log(f"{time.strftime('%H:%M:%S')} {text}")


__all__ = ["Offer", "Offered", "check_host", "prepare", "run"]
