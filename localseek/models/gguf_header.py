"""A fast GGUF header parser: key/values and tensor infos, nothing else.

gguf-py's `GGUFReader` builds numpy views for every array element, which takes seconds for a DeepSeek
vocabulary (129k tokens + 127k merges) — paid on every `run` and `plan`. This reads the same header in a
fraction of that with `struct` on a memory map. Values come out as `ggufinfo` has always exposed them: scalars
as Python values, string arrays as lists, other arrays as lists when short and as "<array of N>" when long.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, Keys

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9
SHORT_ARRAY = 64


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


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if n > len(self.buf) - self.pos:
            raise ValueError("string runs past the end of the file")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            itype = self.take("<I")
            count = self.take("<Q")
            if itype == STRING:
                return [self.string() for _ in range(count)]
            if itype not in _NP:
                raise ValueError(f"unsupported array item type {itype}")
            size = np.dtype(_NP[itype]).itemsize * count
            if size > len(self.buf) - self.pos:
                raise ValueError("array runs past the end of the file")
            if count > SHORT_ARRAY:
                self.pos += size
                return f"<array of {count}>"
            arr = np.frombuffer(self.buf, dtype=_NP[itype], count=count, offset=self.pos)
            self.pos += size
            return arr.tolist()
        if vtype not in _SCALAR:
            raise ValueError(f"unsupported value type {vtype}")
        return self.take(_SCALAR[vtype])


def parse(path: Path) -> Header:
    """Parse the header of one GGUF file. Raises ValueError (or struct.error) on a short or garbled header."""
    with path.open("rb") as fh:
        size = path.stat().st_size
        if size < 24:
            raise ValueError("file too short for a GGUF header")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf)


def _parse(buf: mmap.mmap) -> Header:
    cur = _Cursor(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    cur.pos = 4
    version = cur.take("<I")
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    n_tensors = cur.take("<Q")
    n_kv = cur.take("<Q")
    if n_tensors > 1 << 24 or n_kv > 1 << 24:
        raise ValueError("implausible tensor or key count")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.take("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.take("<I")
        if n_dims > 8:
            raise ValueError(f"tensor {name} has {n_dims} dimensions")
        shape = tuple(cur.take("<Q") for _ in range(n_dims))
        type_id = cur.take("<I")
        offset = cur.take("<Q")
        tensors.append(RawTensor(name, shape, type_id, offset, _n_bytes(type_id, shape)))
    alignment = int(metadata.get(Keys.General.ALIGNMENT, 32) or 32)
    data_offset = -(-cur.pos // alignment) * alignment
    return Header(version, metadata, tensors, data_offset)


def _n_bytes(type_id: int, shape: tuple[int, ...]) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown tensor type {type_id}") from exc
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size


__all__ = ["Header", "RawTensor", "parse"]
