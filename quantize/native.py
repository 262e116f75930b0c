"""llama.cpp's own quantizers, reached through the libraries that llama-cpp-python ships.

- `quantize_rows`: ggml's row quantizer (`ggml_quantize_chunk`) for every GGML type, with an optional
  importance matrix; ctypes releases the GIL, so two threads quantize two halves of a chunk at once.
- `requantize_gguf`: GGUF → GGUF through `llama_model_quantize` (all mixtures, imatrix, tensor-type
  overrides).
- `load_imatrix`: importance matrices in llama.cpp's GGUF format (`*.in_sum2` / `*.counts`) or its legacy
  `.dat` format, normalised exactly as `llama-quantize` does.
"""

from __future__ import annotations

import ctypes
import itertools
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from quantize.errors import QuantizeError, SourceError


@lru_cache(maxsize=1)
def _lib_dir() -> Path:
    try:
        import llama_cpp  # noqa: F401  (loading it also loads libggml into the process)
    except ImportError as exc:  # pragma: no cover - llama-cpp-python is a hard dependency
        raise QuantizeError("llama-cpp-python is not installed; reinstall localseek.") from exc
    return Path(sys.modules["llama_cpp"].__file__).parent / "lib"


def _find(stem: str) -> Path:
    d = _lib_dir()
    for pattern in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll", f"lib{stem}.so.*", f"lib{stem}.*"):
        hits = sorted(d.glob(pattern))
        if hits:
            return hits[0]
    raise QuantizeError(
        f"llama-cpp-python's {stem} library was not found in {d}; reinstall llama-cpp-python."
    )


@lru_cache(maxsize=1)
def ggml() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_find("ggml-base")))
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    return lib


def requires_imatrix(ggml_type: int) -> bool:
    return bool(ggml().ggml_quantize_requires_imatrix(int(ggml_type)))


def row_size(ggml_type: int, n_per_row: int) -> int:
    return int(ggml().ggml_row_size(int(ggml_type), int(n_per_row)))


def _chunk(ggml_type: int, src: np.ndarray, dst: np.ndarray, imatrix: np.ndarray | None) -> int:
    rows, n = src.shape
    im = imatrix.ctypes.data if imatrix is not None else None
    return int(ggml().ggml_quantize_chunk(int(ggml_type), src.ctypes.data, dst.ctypes.data, 0, rows, n, im))


_POOL: ThreadPoolExecutor | None = None


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers < threads:  # type: ignore[attr-defined]
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="quantize")
    return _POOL


def quantize_rows(
    ggml_type: int, rows: np.ndarray, imatrix: np.ndarray | None = None, threads: int = 1
) -> np.ndarray:
    """Quantize float32 rows [n_rows, n_per_row] to `ggml_type`; returns the packed bytes (uint8)."""
    src = np.ascontiguousarray(rows, dtype=np.float32)
    n_rows, n = src.shape
    rsize = row_size(ggml_type, n)
    dst = np.empty(n_rows * rsize, dtype=np.uint8)
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (n,):
            raise QuantizeError(f"importance matrix has {imatrix.size} values for rows of {n}")
    ggml().ggml_quantize_init(int(ggml_type))  # not thread-safe for IQ types: do it once, up front
    if threads <= 1 or n_rows < 2 * threads:
        written = _chunk(ggml_type, src, dst, imatrix)
    else:
        bounds = np.linspace(0, n_rows, threads + 1).astype(int)
        jobs = [
            _pool(threads).submit(_chunk, ggml_type, src[a:b], dst[a * rsize : b * rsize], imatrix)
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        written = sum(j.result() for j in jobs)
    if written != dst.size:
        raise QuantizeError(f"ggml wrote {written} bytes for {n_rows} rows, expected {dst.size}")
    return dst


# -- importance matrices ----------------------------------------------------------------------------------
def load_imatrix(path: Path | str) -> dict[str, np.ndarray]:
    """Read an importance matrix: tensor name → float32 values (n_per_row, or n_expert × n_per_row)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"Importance matrix {path} does not exist.")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _load_imatrix_gguf(path)
    return _load_imatrix_legacy(path)


def _load_imatrix_gguf(path: Path) -> dict[str, np.ndarray]:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 (gguf-py raises many types for a damaged file)
        raise SourceError(f"{path.name} is not a readable imatrix GGUF: {exc}") from None
    sums = {t.name[: -len(".in_sum2")]: t for t in reader.tensors if t.name.endswith(".in_sum2")}
    counts = {t.name[: -len(".counts")]: t for t in reader.tensors if t.name.endswith(".counts")}
    out: dict[str, np.ndarray] = {}
    for name, t in sums.items():
        s = np.asarray(t.data, dtype=np.float32).reshape(-1)
        c = (
            np.asarray(counts[name].data, dtype=np.float32).reshape(-1)
            if name in counts
            else np.ones(1, np.float32)
        )
        per = s.size // max(1, c.size)
        v = s.reshape(c.size, per) / np.where(c > 0, c, 1.0)[:, None]
        v[c <= 0] = 1.0
        out[name] = v.reshape(-1).astype(np.float32)
    if not out:
        raise SourceError(f"{path.name} holds no importance-matrix tensors (*.in_sum2).")
    return out


def _load_imatrix_legacy(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    out: dict[str, np.ndarray] = {}
    try:
        (n_entries,) = struct.unpack_from("<i", data, 0)
        pos = 4
        for _ in range(n_entries):
            (ln,) = struct.unpack_from("<i", data, pos)
            name = data[pos + 4 : pos + 4 + ln].decode("utf-8")
            pos += 4 + ln
            ncall, nval = struct.unpack_from("<ii", data, pos)
            pos += 8
            vals = np.frombuffer(data, dtype=np.float32, count=nval, offset=pos).copy()
            pos += 4 * nval
            out[name] = vals / ncall if ncall > 0 else vals
    except (struct.error, ValueError, UnicodeDecodeError):
        raise SourceError(
            f"{path.name} is not an importance matrix (neither GGUF nor legacy .dat)."
        ) from None
    if not out:
        raise SourceError(f"{path.name} holds no importance-matrix entries.")
    return out


# -- GGUF → GGUF ---------------------------------------------------------------------------------------
def requantize_gguf(
    src: Path,
    dst: Path,
    ftype: int,
    *,
    overrides: list[tuple[str, int]] | None = None,
    imatrix: dict[str, np.ndarray] | None = None,
    threads: int = 0,
    allow_requantize: bool = True,
    pure: bool = False,
) -> None:
    """Run llama.cpp's `llama_model_quantize` (the engine behind `llama-quantize`)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    params.pure = pure
    keep: list[object] = []
    if overrides:
        arr = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for i, (pattern, gtype) in enumerate(overrides):
            b = pattern.encode()
            keep.append(b)
            arr[i].pattern = b
            arr[i].type = gtype
        arr[len(overrides)].pattern = None
        params.tt_overrides = ctypes.cast(arr, type(params.tt_overrides))
        keep.append(arr)
    if imatrix:
        arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(imatrix.items()):
            v = np.ascontiguousarray(values, dtype=np.float32)
            b = name.encode()
            keep += [v, b]
            arr[i].name = b
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(imatrix)].name = None
        params.imatrix = ctypes.cast(arr, type(params.imatrix))
        keep.append(arr)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise QuantizeError(
            f"llama.cpp could not quantize {src.name} (llama_model_quantize returned {rc}); "
            "rerun with --verbose for llama.cpp's log."
        )
