"""Workers inside llama.cpp: register them as devices, keep every read from them under a timeout, and turn a
worker that dies into one line and exit code 2 instead of a hang or a core dump.

llama.cpp's RPC client (ggml-rpc.cpp) connects without a timeout, reads without a timeout, and answers any broken
connection with GGML_ABORT. So:
- `planning.rpc.probe` has already checked every worker with timeouts before llama.cpp connects;
- `guarding()` finds the sockets llama.cpp opened to the workers (they are this process's file descriptors) and
  sets a read/send timeout and TCP keepalive on them: a worker that stops answering, or a link that goes dead
  without a word, breaks the read within LOCALSEEK_RPC_TIMEOUT seconds;
- the abort callback (`ggml_set_abort_callback`) then finds which worker failed and how (its socket closed, reset,
  or silent), writes one line, and exits 2. The remote buffers are gone with the connection: nothing is left to
  recover in this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import stat
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from localseek.errors import NoRpcSupport, WorkerError
from localseek.planning import backends
from localseek.planning import rpc as plan_rpc

_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_ABORT = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_ATTACHED: dict[str, int] = {}  # endpoint → its ggml_backend_reg_t, registered once per process
_GUARDED: dict[int, str] = {}  # file descriptor → endpoint, for sockets put under the timeout (a reset socket no
# longer has a peer address to recognise it by)
_ABORT_HANDLER: list[object] = []  # keeps the callback alive for C
_LOCK = threading.Lock()
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "ggml_backend_register": (None, [ctypes.c_void_p]),
    "ggml_backend_reg_dev_count": (ctypes.c_size_t, [ctypes.c_void_p]),
    "ggml_backend_reg_dev_get": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]),
    "ggml_set_abort_callback": (ctypes.c_void_p, [_ABORT]),
}
TCP_INFO_BYTES_ACKED = 120  # struct tcp_info (linux/tcp.h): __u64 tcpi_bytes_acked
TCP_INFO_BYTES_RECEIVED = 128  # __u64 tcpi_bytes_received
TCP_INFO_LAST_DATA_SENT = 44  # __u32 tcpi_last_data_sent, ms ago
TCP_INFO_LAST_DATA_RECV = 52  # __u32 tcpi_last_data_recv, ms ago
TCP_CLOSE = 7  # tcpi_state: reset, or timed out by TCP itself
TCP_CLOSE_WAIT = 8  # tcpi_state: the peer closed its end


def _lib() -> ctypes.CDLL:
    lib = backends.ggml()
    for fn, (restype, argtypes) in _SIGNATURES.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = restype, argtypes
    return lib


def available() -> bool:
    """Whether this llama.cpp build has the RPC backend (a compile-time option)."""
    try:
        return backends.rpc_registry() is not None
    except OSError:
        return False


def require(what: str) -> None:
    """Refuse `what` in one line, with the install command, when this build has no RPC backend."""
    if available():
        return
    try:
        regs = tuple(backends.registries())
    except OSError:
        regs = ("CPU",)
    raise NoRpcSupport(
        f"{what} needs llama.cpp's RPC backend, which this llama-cpp-python was built without; rebuild it with: "
        f"{plan_rpc.install_command(regs)}")


# -- registering workers -----------------------------------------------------------------------------------------


def attach(endpoints: tuple[str, ...]) -> None:
    """Register each worker with ggml once per process (llama.cpp connects to it here to count its devices)."""
    require("--rpc")
    lib = _lib()
    install_abort_handler()
    reg = backends.rpc_registry()
    add = _ADD_SERVER(lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server"))
    with _LOCK:
        for endpoint in endpoints:
            if endpoint in _ATTACHED:
                continue
            server = add(endpoint.encode())
            if not server:
                raise WorkerError(f"worker {endpoint} exposes no devices; restart it (`localseek worker`).")
            lib.ggml_backend_register(server)
            _ATTACHED[endpoint] = server


def attached() -> tuple[str, ...]:
    return tuple(_ATTACHED)


def model_devices(remote: tuple[tuple[str, int], ...]) -> ctypes.Array | None:
    """The NULL-terminated `ggml_backend_dev_t[]` for `llama_model_params.devices`: the planned worker devices in
    plan order, then this machine's GPUs (as llama.cpp would pick them). None when no worker was ever registered
    in this process (llama.cpp's own choice is then the same). Once workers are registered llama.cpp would use them
    for every model, so every later load names its devices."""
    if not remote and not _ATTACHED:
        return None
    attach(tuple(dict.fromkeys(ep for ep, _ in remote)))
    lib = _lib()
    chosen = [lib.ggml_backend_reg_dev_get(_ATTACHED[ep], i) for ep, i in remote]
    gpus, igpus = [], []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        reg = lib.ggml_backend_dev_backend_reg(dev)
        if reg and lib.ggml_backend_reg_name(reg) == b"RPC":
            continue
        kind = lib.ggml_backend_dev_type(dev)
        (gpus if kind == 1 else igpus if kind == 2 else []).append(dev)
    chosen += gpus or igpus[:1]
    arr = (ctypes.c_void_p * (len(chosen) + 1))(*chosen, None)
    return arr


# -- timeouts on llama.cpp's sockets -----------------------------------------------------------------------------


def _addresses(endpoints: tuple[str, ...]) -> dict[tuple[str, int], str]:
    out = {}
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        try:
            out[(socket.gethostbyname(host), int(port))] = ep
        except OSError:
            continue
    return out


def _fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        import resource

        return list(range(3, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0])))


def worker_sockets(endpoints: tuple[str, ...]) -> Iterator[tuple[str, socket.socket]]:
    """This process's TCP connections to the workers, as borrowed socket objects (valid inside the loop only)."""
    wanted = _addresses(endpoints)
    if not wanted:
        return
    for fd in _fds():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM:
                try:
                    peer = sock.getpeername()
                except OSError:
                    peer = None
                if peer in wanted:
                    yield wanted[peer], sock
        finally:
            sock.detach()  # the descriptor stays llama.cpp's


def _tune(sock: socket.socket, timeout: float) -> None:
    """Reads and sends fail after `timeout` seconds of silence; keepalive probes notice a dead host or link sooner."""
    tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, min(10, int(timeout / 4)))
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", max(1, idle // 2)), ("TCP_KEEPCNT", 3),
                        ("TCP_USER_TIMEOUT", int(timeout * 1000))):
        option = getattr(socket, name, None)
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                pass


def guard(endpoints: tuple[str, ...], timeout: float | None = None) -> int:
    """Put every current connection to the workers under the read timeout. Returns how many were found."""
    timeout = plan_rpc.read_timeout() if timeout is None else timeout
    n = 0
    for endpoint, sock in worker_sockets(endpoints):
        try:
            _tune(sock, timeout)
            _GUARDED[sock.fileno()] = endpoint
            n += 1
        except OSError:
            continue
    return n


@contextmanager
def guarding(endpoints: tuple[str, ...], every: float = 0.2) -> Iterator[None]:
    """While loading (llama.cpp opens and closes connections as it goes), guard new connections every `every`
    seconds; once more at the end, when the connections the model keeps are open."""
    if not endpoints:
        yield
        return
    stop = threading.Event()
    timeout = plan_rpc.read_timeout()

    def loop() -> None:
        while not stop.wait(every):
            guard(endpoints, timeout)

    thread = threading.Thread(target=loop, name="localseek-rpc-guard", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        guard(endpoints, timeout)


def traffic(endpoints: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Bytes sent to and received from each worker on the open connections (Linux TCP_INFO), for benchmarks."""
    out: dict[str, tuple[int, int]] = {}
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return out
    for ep, sock in worker_sockets(endpoints):
        raw = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 192)
        if len(raw) < TCP_INFO_BYTES_RECEIVED + 8:
            continue
        sent, received = struct.unpack_from("<QQ", raw, TCP_INFO_BYTES_ACKED)
        sent = max(0, sent - 1)  # the kernel counts our SYN among the bytes acked
        old = out.get(ep, (0, 0))
        out[ep] = (old[0] + sent, old[1] + received)
    return out


# -- a worker that fails -----------------------------------------------------------------------------------------


def diagnose(message: str) -> str | None:
    """Which worker failed and how, from its socket's state (at the moment of the abort it is still open); None when
    the abort was not about a worker."""
    endpoints = tuple(_ATTACHED)
    timeout = plan_rpc.read_timeout()
    for ep in endpoints:  # "Failed to connect to HOST:PORT", "RPC handshake failed for HOST:PORT"
        if ep in message:
            if "handshake" in message:
                return (f"worker {ep} did not complete the RPC handshake: another process may be using it, or it "
                        "runs another version; restart it and run again.")
            return (f"worker {ep} cannot be reached any more (llama.cpp: {message.split(': ', 1)[-1].strip()}); "
                    "check that it still runs and run again.")
    rpc_related = "RPC" in message or "rpc" in message
    silent = []
    for ep, sock in _candidates(endpoints):
        state, (sent, quiet) = _state(sock), _last_data_s(sock)
        # Silent for the timeout while a request waits for its answer (we sent after we last heard from it): our
        # read timeout, or TCP's, gave up on it. A worker the pipeline has not reached yet is quiet too, but owes
        # nothing.
        if quiet >= timeout * 0.9 and quiet > sent and state in ("open", "aborted"):
            silent.append(ep)
        elif state in ("closed", "aborted"):
            return (f"worker {ep} dropped the connection (its process stopped, crashed or restarted); restart "
                    "`localseek worker` there and run again, or leave it out of --rpc.")
    if silent:
        return (f"worker {silent[0]} sent nothing for {timeout:g}s (LOCALSEEK_RPC_TIMEOUT): the machine, its network "
                "or the worker stopped; check it and run again.")
    if rpc_related and endpoints:
        return (f"a worker ({', '.join(endpoints)}) failed: llama.cpp says {message.split(': ', 1)[-1].strip()!r}; "
                "check the workers and run again.")
    return None


def _candidates(endpoints: tuple[str, ...]) -> Iterator[tuple[str, socket.socket]]:
    """The connections to the workers: those with a peer address, then guarded ones that lost theirs (reset)."""
    seen = set()
    for ep, sock in worker_sockets(endpoints):
        seen.add(sock.fileno())
        yield ep, sock
    for fd, ep in list(_GUARDED.items()):
        if fd in seen:
            continue
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            yield ep, sock
        finally:
            sock.detach()


def _state(sock: socket.socket) -> str:
    """"closed": the worker hung up (FIN); "aborted": the connection was reset, or TCP gave up on it; "open"."""
    state = _tcp_state(sock)
    if state == TCP_CLOSE_WAIT:
        return "closed"
    if state == TCP_CLOSE:
        return "aborted"
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "open"
    except OSError:
        return "aborted"
    return "closed" if not data else "open"


def _tcp_state(sock: socket.socket) -> int:
    """tcpi_state, the first byte of struct tcp_info (-1 where the system does not say)."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return -1
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 8)[0]
    except OSError:
        return -1


def _last_data_s(sock: socket.socket) -> tuple[float, float]:
    """Seconds since data was last sent to, and received from, the peer (0, 0 where the system does not say)."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return 0.0, 0.0
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 192)
        sent = struct.unpack_from("<I", raw, TCP_INFO_LAST_DATA_SENT)[0] / 1000
        return sent, struct.unpack_from("<I", raw, TCP_INFO_LAST_DATA_RECV)[0] / 1000
    except (OSError, struct.error):
        return 0.0, 0.0


def _on_abort(raw: bytes | None) -> None:
    message = (raw or b"").decode("utf-8", "replace")
    try:
        line = diagnose(message)
    except Exception:  # noqa: BLE001 - whatever happens here, the process must still end
        line = None
    if line is None:  # not a worker's failure: llama.cpp's own message, then its abort()
        os.write(2, (message.rstrip() + "\n").encode())
        return
    with contextlib.suppress(Exception):
        sys.stdout.flush()  # what was generated so far, before the line
    debug = os.environ.get("LOCALSEEK_DEBUG", "") not in ("", "0")
    os.write(2, (f"\nerror: {line}\n" + (f"llama.cpp: {message.strip()}\n" if debug else "")).encode())
    os._exit(2)


def install_abort_handler() -> None:
    """Once per process: a GGML_ABORT caused by a worker becomes one line and exit code 2."""
    if _ABORT_HANDLER:
        return
    handler = _ABORT(_on_abort)
    _lib().ggml_set_abort_callback(handler)
    _ABORT_HANDLER.append(handler)


__all__ = ["attach", "attached", "available", "diagnose", "guard", "guarding", "install_abort_handler",
           "model_devices", "require", "traffic", "worker_sockets"]
