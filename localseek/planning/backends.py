"""What this llama.cpp build can use: ggml's backend registry and devices, read through libggml (ctypes).

llama-cpp-python ships libggml next to libllama; the backend device API (`ggml_backend_dev_*`) is not wrapped
by its Python bindings, so the few functions we need are declared here. Nothing here allocates or loads a model.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# enum ggml_backend_dev_type
DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL"}


@dataclass(frozen=True)
class Device:
    """One ggml device as llama.cpp sees it (memory in bytes; 0/0 when the backend cannot tell)."""

    name: str
    description: str
    kind: str  # CPU, GPU, IGPU, ACCEL
    backend: str  # the registry it belongs to: CPU, CUDA, Metal, Vulkan, …
    memory_free: int
    memory_total: int


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "ggml_backend_reg_count": (ctypes.c_size_t, []),
    "ggml_backend_reg_get": (ctypes.c_void_p, [ctypes.c_size_t]),
    "ggml_backend_reg_name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "ggml_backend_reg_get_proc_address": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "ggml_backend_dev_count": (ctypes.c_size_t, []),
    "ggml_backend_dev_get": (ctypes.c_void_p, [ctypes.c_size_t]),
    "ggml_backend_dev_name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "ggml_backend_dev_description": (ctypes.c_char_p, [ctypes.c_void_p]),
    "ggml_backend_dev_type": (ctypes.c_int, [ctypes.c_void_p]),
    "ggml_backend_dev_memory": (
        None, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    ),
    "ggml_backend_dev_backend_reg": (ctypes.c_void_p, [ctypes.c_void_p]),
    "ggml_backend_dev_by_type": (ctypes.c_void_p, [ctypes.c_int]),
    "ggml_backend_dev_buffer_type": (ctypes.c_void_p, [ctypes.c_void_p]),
    "ggml_backend_buft_name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "ggml_backend_reg_by_name": (ctypes.c_void_p, [ctypes.c_char_p]),
}


@lru_cache(maxsize=1)
def _ggml() -> ctypes.CDLL:
    """libggml as loaded by llama-cpp-python (same process-wide handle), with backends initialised."""
    import llama_cpp

    llama_cpp.llama_backend_init()  # loads dynamic backends (GGML_BACKEND_DL builds) when none are registered
    # llama-cpp-python loads its libraries from LLAMA_CPP_LIB_PATH when set (a cross-built or custom llama.cpp)
    lib_dir = Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).parent / "lib")
    candidates = sorted(lib_dir.glob("libggml.*")) + sorted(lib_dir.glob("ggml.dll"))
    if not candidates:
        raise OSError(f"libggml not found next to llama-cpp-python in {lib_dir}")
    lib = ctypes.CDLL(str(candidates[0]))
    for fn, (restype, argtypes) in _SIGNATURES.items():
        f = getattr(lib, fn)
        f.restype = restype
        f.argtypes = argtypes
    return lib


def ggml() -> ctypes.CDLL:
    """The libggml handle, for the runtime's few other calls (RPC registration, abort callback)."""
    return _ggml()


def rpc_registry() -> int | None:
    """The RPC backend's registry (a `ggml_backend_reg_t`), or None when this build has no RPC backend."""
    return _ggml().ggml_backend_reg_by_name(b"RPC") or None


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def registries() -> list[str]:
    """Backends compiled into (or loaded by) this llama.cpp build, e.g. ["CPU"] or ["CUDA", "CPU"]."""
    g = _ggml()
    return [_text(g.ggml_backend_reg_name(g.ggml_backend_reg_get(i))) for i in range(g.ggml_backend_reg_count())]


def devices() -> list[Device]:
    """This machine's devices. Registered RPC workers are left out: they are not this machine's, and asking one
    for its memory is a network request (planning/rpc.py probes workers itself)."""
    g = _ggml()
    out = []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        reg = g.ggml_backend_dev_backend_reg(dev)
        if reg and _text(g.ggml_backend_reg_name(reg)) == "RPC":
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(
            Device(
                name=_text(g.ggml_backend_dev_name(dev)),
                description=_text(g.ggml_backend_dev_description(dev)),
                kind=DEVICE_TYPES.get(int(g.ggml_backend_dev_type(dev)), "UNKNOWN"),
                backend=_text(g.ggml_backend_reg_name(reg)) if reg else "",
                memory_free=int(free.value),
                memory_total=int(total.value),
            )
        )
    return out


def build_features() -> dict[str, dict[str, str]]:
    """Per backend, the features it was compiled with (CPU: SSE3, AVX2, AVX512, NEON, DOTPROD, REPACK, …)."""
    g = _ggml()
    out: dict[str, dict[str, str]] = {}
    getter_type = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)
    for i in range(g.ggml_backend_reg_count()):
        reg = g.ggml_backend_reg_get(i)
        name = _text(g.ggml_backend_reg_name(reg))
        addr = g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
        feats: dict[str, str] = {}
        if addr:
            arr = getter_type(addr)(reg)
            j = 0
            while arr and arr[j].name:
                feats[_text(arr[j].name)] = _text(arr[j].value)
                j += 1
        out[name] = feats
    return out


def cpu_buffer_type() -> int:
    """The CPU device's buffer type (a `ggml_backend_buffer_type_t`), the target of expert overrides."""
    g = _ggml()
    dev = g.ggml_backend_dev_by_type(0)
    if not dev:
        raise OSError("this llama.cpp build has no CPU backend")
    buft = g.ggml_backend_dev_buffer_type(dev)
    if not buft:
        raise OSError("the CPU backend has no buffer type")
    return int(buft)


def buffer_type_name(buft: int) -> str:
    return _text(_ggml().ggml_backend_buft_name(ctypes.c_void_p(buft)))


__all__ = ["Device", "buffer_type_name", "build_features", "cpu_buffer_type", "devices", "ggml", "registries",
           "rpc_registry"]
