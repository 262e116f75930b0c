"""Memory-mapped reader for (sharded) safetensors checkpoints, including DeepSeek's `F8_E4M3` weights.

Nothing is loaded up front: headers are parsed and validated (offsets inside the file, byte span = shape ×
dtype size, every shard named by the index present), tensor bytes are read through `mmap` on demand, and
the pages of a finished tensor are released again (`release`) so the resident set stays bounded by what
the converter is working on, not by the checkpoint's size.
"""

from __future__ import annotations

import itertools
import json
import math
import mmap
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from quantize.errors import SourceError, shown

# safetensors dtype → (numpy storage dtype, bytes per element). BF16 is kept as raw uint16 bits; F8_E8M0 (V4's
# power-of-two block scales) as raw exponent bytes; I8 holds V4's packed FP4 expert weights (two per byte).
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "F8_E4M3": (np.dtype(np.uint8), 1),
    "F8_E8M0": (np.dtype(np.uint8), 1),
    "BF16": (np.dtype(np.uint16), 2),
    "F16": (np.dtype(np.float16), 2),
    "F32": (np.dtype(np.float32), 4),
    "I8": (np.dtype(np.uint8), 1),
    "U8": (np.dtype(np.uint8), 1),
    "I32": (np.dtype(np.int32), 4),
    "I64": (np.dtype(np.int64), 8),
}

_MAX_HEADER = 100_000_000  # the safetensors format's own limit (its reference reader refuses larger headers)
_MAX_INDEX = 64 * 1024 * 1024  # DeepSeek-V3's index is ~9 MB
MAX_DIMS = 8


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute byte offset in `file`
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


class _Shard:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh = open(path, "rb")  # noqa: SIM115 (kept open for mmap until close())
        except FileNotFoundError:
            raise SourceError(
                f"Shard {path.name} is missing from {path.parent}; download the model again."
            ) from None
        try:
            self._parse(path)
        except BaseException:
            self._fh.close()
            raise
        self._mm: mmap.mmap | None = None

    def _parse(self, path: Path) -> None:
        size = path.stat().st_size
        head = self._fh.read(8)
        if len(head) < 8:
            raise SourceError(f"{path.name} is truncated (not even a safetensors header); download it again.")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise SourceError(
                f"{path.name} is truncated or not a safetensors file (header of {n} bytes in a "
                f"{size}-byte file); download it again."
            )
        header = _load_json(self._fh.read(n), f"{shown(path.name)} has a damaged safetensors header")
        if not isinstance(header, dict):
            raise SourceError(f"{shown(path.name)} has a damaged safetensors header; download it again.")
        base = 8 + n
        self.tensors: dict[str, TensorInfo] = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, (begin, end) = _entry(path, name, meta)
            if dtype not in DTYPES:
                raise SourceError(
                    f"{shown(path.name)}: tensor {shown(name)} has dtype {shown(dtype)}, which localseek cannot "
                    f"convert (supported: {', '.join(DTYPES)})."
                )
            expected = math.prod(shape) * DTYPES[dtype][1]
            if end - begin != expected:
                raise SourceError(
                    f"{shown(path.name)}: tensor {shown(name)} declares shape {list(shape)} ({dtype}, "
                    f"{expected} bytes) but spans {end - begin} bytes; the file is damaged."
                )
            if base + end > size:
                raise SourceError(
                    f"{shown(path.name)} is truncated: tensor {shown(name)} ends at byte {base + end} but the "
                    f"file has {size} bytes; download it again."
                )
            self.tensors[name] = TensorInfo(name, dtype, shape, path, base + begin, end - begin)
        _check_overlaps(path, self.tensors.values())

    def map(self) -> mmap.mmap:
        if self._mm is None:
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a caller still holds a view; the map is freed with it
                pass
            self._mm = None
        self._fh.close()


class Checkpoint:
    """All safetensors files of one model folder, addressed by tensor name."""

    def __init__(self, model_dir: Path | str) -> None:
        self.dir = Path(model_dir)
        index = self.dir / "model.safetensors.index.json"
        if index.exists():
            weight_map = _read_index(index)
            files = sorted(set(weight_map.values()))
            for f in files:
                _check_shard_name(index, f)
        else:
            files = sorted(p.name for p in self.dir.glob("*.safetensors"))
            weight_map = {}
            if not files:
                raise SourceError(
                    f"No .safetensors files in {self.dir}; is this a Hugging Face model folder?"
                )
        missing = [f for f in files if not (self.dir / f).is_file()]
        if missing:
            n = sum(1 for v in weight_map.values() if v in missing)
            raise SourceError(
                f"{len(missing)} shard(s) missing from {self.dir} ({', '.join(shown(m) for m in missing[:3])}"
                f"{'…' if len(missing) > 3 else ''}; {n} tensors): finish the download first."
            )
        self._shards: list[_Shard] = []
        self.tensors: dict[str, TensorInfo] = {}
        self._by_file: dict[Path, _Shard] = {}
        try:
            for f in files:
                shard = _Shard(self.dir / f)
                self._shards.append(shard)
                self._by_file[shard.path] = shard
                for name, info in shard.tensors.items():
                    if weight_map and weight_map.get(name, f) != f:
                        continue  # the index says another shard owns it
                    self.tensors[name] = info
        except BaseException:
            self.close()
            raise
        absent = [n for n, f in weight_map.items() if n not in self.tensors]
        if absent:
            self.close()
            raise SourceError(
                f"{len(absent)} tensor(s) listed in the index are not in their shard "
                f"(first: {shown(absent[0])} in {shown(weight_map[absent[0]])}); download the model again."
            )

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise SourceError(f"Tensor {shown(name)} is not in the checkpoint at {self.dir}.") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's stored elements as a read-only, memory-mapped array (BF16 as uint16 bits)."""
        info = self.info(name)
        mm = self._by_file[info.file].map()
        dtype = DTYPES[info.dtype][0]
        arr = np.frombuffer(mm, dtype=dtype, count=info.n_elements, offset=info.offset)
        return arr.reshape(info.shape)

    def release(self, name: str, start: int = 0, length: int | None = None) -> None:
        """Drop the resident pages of a consumed tensor (or of bytes start…start+length of it); they stay in
        the page cache, and a later read simply maps them again."""
        info = self.tensors.get(name)
        if info is None:
            return
        mm = self._by_file[info.file]._mm
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        begin = info.offset + start
        end = info.offset + (info.nbytes if length is None else min(info.nbytes, start + length))
        first = begin - begin % page  # madvise wants an aligned start; a shared edge page is simply re-read
        if end <= first:
            return
        try:
            mm.madvise(mmap.MADV_DONTNEED, first, end - first)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        for s in self._shards:
            s.close()
        self._shards = []

    def __enter__(self) -> Checkpoint:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_json(raw: bytes, damaged: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: hostile nesting depth
        raise SourceError(f"{damaged}; download it again.") from None


def _counts(value: Any) -> bool:
    """A JSON list of whole numbers ≥ 0 (not booleans, fractions or text)."""
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _entry(path: Path, name: str, meta: Any) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """(dtype, shape, (begin, end)) of one header entry, each of the type the format prescribes."""
    ok = isinstance(meta, dict)
    dtype, shape, offsets = (meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")) if ok else (0, 0, 0)
    if not (ok and isinstance(dtype, str) and _counts(shape) and len(shape) <= MAX_DIMS and _counts(offsets)
            and len(offsets) == 2 and offsets[0] <= offsets[1]):
        raise SourceError(
            f"{shown(path.name)}: tensor {shown(name)} has a malformed header entry ({shown(str(meta), 60)}); "
            "download the file again."
        )
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _check_overlaps(path: Path, tensors: Iterable[TensorInfo]) -> None:
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors if t.nbytes)
    for (_, end, a), (begin, _, b) in itertools.pairwise(spans):
        if begin < end:
            raise SourceError(
                f"{shown(path.name)}: tensors {shown(a)} and {shown(b)} share bytes; the file is damaged or "
                "crafted — download it again."
            )


def _read_index(index: Path) -> dict[str, str]:
    bad = f"{index} is not a valid safetensors index"
    if index.stat().st_size > _MAX_INDEX:
        raise SourceError(f"{bad} (over {_MAX_INDEX // (1024 * 1024)} MiB); download it again.")
    data = _load_json(index.read_bytes(), bad)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise SourceError(f"{bad} (no weight_map of tensor → file names); download it again.")
    return weight_map


def _check_shard_name(index: Path, name: str) -> None:
    """A shard the index names must be a plain relative path inside the model folder: no `..`, not absolute, no
    control characters (the index is data from the download, and may be hostile)."""
    parts = PurePosixPath(name).parts
    if (not name or name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in name
            or any(ord(c) < 32 for c in name) or not parts or name.endswith("/")):
        raise SourceError(
            f"{index} names the shard {shown(name)}, which is not a file inside the model folder; the index is "
            "damaged or crafted — download the model again."
        )
