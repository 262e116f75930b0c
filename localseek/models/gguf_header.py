"""A fast, bounded GGUF header parser: key/values and tensor infos, nothing else.

gguf-py's `GGUFReader` builds numpy views for every array element, which takes seconds for a DeepSeek
vocabulary (129k tokens + 127k merges) — paid on every `run` and `plan`. This reads the same header in a
fraction of that with `struct`. Values come out as `gguf_info` has always exposed them: scalars as Python
values, string arrays as lists, other arrays as lists when short and as "<array of N>" when long.

The file is hostile until proven otherwise. The header is read through a small buffer, never mapped whole; every
count is checked against the bytes the rest of the file could hold before anything is allocated or looped over,
so parsing costs time and memory proportional to the bytes actually read. The structural rules llama.cpp's own
loader (`gguf.cpp`) enforces are checked here too — unique keys and tensor names, at most 4 dimensions, known
tensor types, whole blocks per row, element counts that fit in int64, a power-of-two alignment, tensor data laid
out in order — so a file that passes is one llama.cpp will not refuse for its framing. Every refusal is a
`HeaderError` with one line saying what is wrong.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, Keys

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9
SHORT_ARRAY = 1024  # numeric arrays up to this long are kept (per-layer values); longer ones are skipped
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 63  # GGML_MAX_NAME - 1: bytes of a tensor name
MAX_STRING = 16 * 1024 * 1024  # one header string (chat templates are ~10 KB, tokens a few bytes)
MAX_ARRAY = 1 << 24  # elements of one array (the largest vocabularies have ~260k tokens)
INT64_MAX = (1 << 63) - 1
_MIN_KV = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR = 8 + 4 + 4 + 8  # name length, n_dims (0), type, offset
_CHUNK = 1 << 20


class HeaderError(ValueError):
    """The header is short, garbled, or breaks a rule of the format; the message says which."""


@dataclass(frozen=True)
class RawTensor:
    name: str
    shape: tuple[int, ...]  # ggml order (ne0 first), as gguf-py reports it
    type_id: int
    offset: int  # relative to the data section
    n_bytes: int

    @property
    def type_name(self) -> str:
        try:
            return GGMLQuantizationType(self.type_id).name
        except ValueError:
            return f"type{self.type_id}"


@dataclass(frozen=True)
class Header:
    version: int
    metadata: dict[str, Any]
    tensors: list[RawTensor]
    data_offset: int
    alignment: int = 32


class _Cursor:
    """Reads forward through a file with a bounded buffer; `pos` is an absolute file offset."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh = fh
        self.size = size
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = 0

    @property
    def left(self) -> int:
        """Bytes of the file after the cursor."""
        return self.size - self.pos

    def _need(self, n: int, what: str) -> None:
        if n > self.left:
            raise HeaderError(f"the header ends inside {what} (byte {self.pos:,} of {self.size:,})")
        end = self.pos + n
        if end <= self.base + len(self.buf):
            return
        keep = self.buf[self.pos - self.base:] if self.pos - self.base < len(self.buf) else b""
        self.fh.seek(self.pos + len(keep))
        more = self.fh.read(max(n - len(keep), _CHUNK))
        self.buf, self.base = keep + more, self.pos
        if len(self.buf) < n:
            raise HeaderError(f"the file changed while it was read (at byte {self.pos:,})")

    def take(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self._need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos - self.base)[0]
        self.pos += n
        return value

    def raw(self, n: int, what: str) -> bytes:
        self._need(n, what)
        start = self.pos - self.base
        self.pos += n
        return self.buf[start:start + n]

    def skip(self, n: int, what: str) -> None:
        if n > self.left:
            raise HeaderError(f"the header ends inside {what} (byte {self.pos:,} of {self.size:,})")
        self.pos += n

    def string(self, what: str) -> str:
        n = self.take("<Q", what)
        if n > MAX_STRING:
            raise HeaderError(f"{what} is a string of {n:,} bytes (at most {MAX_STRING:,} are plausible)")
        return self.raw(n, what).decode("utf-8", "replace")

    def strings(self, count: int, what: str) -> list[str]:
        """`count` strings (a vocabulary: 129k of them for DeepSeek), straight from the buffer while it holds them."""
        out: list[str] = []
        append, unpack = out.append, struct.unpack_from
        for _ in range(count):
            buf, off = self.buf, self.pos - self.base
            if 0 <= off and off + 8 <= len(buf):
                n = unpack("<Q", buf, off)[0]
                end = off + 8 + n
                if n <= MAX_STRING and end <= len(buf):
                    append(buf[off + 8:end].decode("utf-8", "replace"))
                    self.pos += 8 + n
                    continue
            append(self.string(what))  # at the buffer's end, or a string that is refused
        return out

    def value(self, vtype: int, what: str) -> Any:
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            itype = self.take("<I", what)
            count = self.take("<Q", what)
            if count > MAX_ARRAY:
                raise HeaderError(f"{what} is an array of {count:,} items (at most {MAX_ARRAY:,} are plausible)")
            if itype == STRING:
                if count * 8 > self.left:  # every string has an 8-byte length
                    raise HeaderError(f"{what} claims {count:,} strings, more than the file's size can hold")
                return self.strings(count, what)
            if itype not in _NP:
                raise HeaderError(f"{what} is an array of unsupported item type {itype}")
            size = np.dtype(_NP[itype]).itemsize * count
            if count > SHORT_ARRAY:
                self.skip(size, what)
                return f"<array of {count}>"
            return np.frombuffer(self.raw(size, what), dtype=_NP[itype], count=count).tolist()
        if vtype not in _SCALAR:
            raise HeaderError(f"{what} has unsupported value type {vtype}")
        return self.take(_SCALAR[vtype], what)


def parse(path: Path) -> Header:
    """Parse the header of one GGUF file. Raises HeaderError (or OSError) on a short, garbled or invalid header."""
    with path.open("rb") as fh:
        size = path.stat().st_size
        if size < 24:
            raise HeaderError("the file is too short for a GGUF header")
        return _parse(_Cursor(fh, size))


def _parse(cur: _Cursor) -> Header:
    if cur.raw(4, "the magic") != b"GGUF":
        raise HeaderError("not a GGUF file")
    version = cur.take("<I", "the version")
    if version not in (2, 3):
        raise HeaderError(f"unsupported GGUF version {version}")
    n_tensors = cur.take("<Q", "the tensor count")
    n_kv = cur.take("<Q", "the key count")
    if n_kv * _MIN_KV + n_tensors * _MIN_TENSOR > cur.left:
        raise HeaderError(
            f"it claims {n_tensors:,} tensors and {n_kv:,} keys, more than the file's {cur.size:,} bytes can hold"
        )
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"key {i}")
        if key in metadata:
            raise HeaderError(f"key {key[:80]!r} appears twice")
        metadata[key] = cur.value(cur.take("<I", f"the type of {key[:80]!r}"), f"the value of {key[:80]!r}")
    alignment = metadata.get(Keys.General.ALIGNMENT, 32)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 \
            or alignment & (alignment - 1):
        raise HeaderError(f"general.alignment is {str(alignment)[:40]!r}, not a power of two")
    tensors = []
    names: set[str] = set()
    expected = 0  # llama.cpp wants each tensor's data right after the previous one's, padded to the alignment
    for i in range(n_tensors):
        name = cur.string(f"the name of tensor {i}")
        what = f"tensor {name[:80]!r}"
        if len(name.encode()) > MAX_NAME:
            raise HeaderError(f"{what} has a name longer than ggml's {MAX_NAME} bytes")
        if name in names:
            raise HeaderError(f"{what} appears twice")
        names.add(name)
        n_dims = cur.take("<I", what)
        if n_dims > MAX_DIMS:
            raise HeaderError(f"{what} has {n_dims} dimensions (ggml has at most {MAX_DIMS})")
        shape = tuple(cur.take("<Q", what) for _ in range(n_dims))
        type_id = cur.take("<I", what)
        offset = cur.take("<Q", what)
        n_bytes = _n_bytes(what, type_id, shape)
        if offset != expected:
            raise HeaderError(f"{what} has its data at offset {offset:,}, expected {expected:,}")
        expected += -(-n_bytes // alignment) * alignment
        tensors.append(RawTensor(name, shape, type_id, offset, n_bytes))
    data_offset = -(-cur.pos // alignment) * alignment
    return Header(version, metadata, tensors, data_offset, alignment)


def _n_bytes(what: str, type_id: int, shape: tuple[int, ...]) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        raise HeaderError(f"{what} has unknown tensor type {type_id}") from None
    n = 1
    for d in shape:
        n *= d
    if any(d > INT64_MAX for d in shape) or n > INT64_MAX:
        raise HeaderError(f"{what} has shape {list(shape)}, more elements than ggml can address")
    if shape and shape[0] % block:
        raise HeaderError(f"{what} has rows of {shape[0]} values, not a multiple of its type's block of {block}")
    return n // block * type_size


__all__ = ["Header", "HeaderError", "RawTensor", "parse"]
