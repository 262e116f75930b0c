"""Streaming GGUF writer: the header is written first (all shapes and types are planned up front), then each
tensor's bytes arrive in chunks, so no more than one chunk of one tensor is ever held.

- Split output (`-00001-of-0000N.gguf`, llama.cpp's `split.*` keys) when `split_max_size` is set.
- Atomic: every part is written to a hidden temp file in the output folder and renamed only when all parts
  are complete; on any error or Ctrl-C the temp files are removed.
- Refuses to overwrite unless `force`; checks free disk space before starting.
- A run that is killed (kill -9, power loss) cannot clean up: its hidden `.NAME.partial` files stay. Each temp
  file is held under an exclusive `flock` while it is written, so the next run of the same output can tell a
  stale one (no lock: removed, and reported) from one a live run is writing (locked: refused).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
from gguf import GGUFValueType as V

from quantize.errors import OutputError, OutputExists

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; stale partials are still removed, live ones not detected
    fcntl = None  # type: ignore[assignment]

ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT
_SIMPLE = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
    V.BOOL: "<?",
}


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # numpy order: last axis is the row
    ggml_type: gguf.GGMLQuantizationType
    nbytes: int


def _string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(val: object, vtype: V, sub_type: V | None = None) -> bytes:
    if vtype in _SIMPLE:
        return struct.pack(_SIMPLE[vtype], val)
    if vtype == V.STRING:
        return _string(val)  # type: ignore[arg-type]
    if vtype == V.ARRAY:
        items = list(val)  # type: ignore[call-overload]
        if sub_type is None:
            first = items[0]
            sub_type = (
                V.STRING
                if isinstance(first, (str, bytes))
                else V.BOOL
                if isinstance(first, bool)
                else V.INT32
                if isinstance(first, int)
                else V.FLOAT32
            )
        return struct.pack("<IQ", int(sub_type), len(items)) + b"".join(_value(i, sub_type) for i in items)
    raise ValueError(f"cannot write GGUF value of type {vtype}")


def pack_kv(kv: dict[str, gguf.GGUFValue]) -> bytes:
    out = bytearray()
    for key, v in kv.items():
        out += _string(key) + struct.pack("<I", int(v.type)) + _value(v.value, v.type, v.sub_type)
    return bytes(out)


def _pad(n: int) -> int:
    return (-n) % ALIGNMENT


def partial_path(path: Path) -> Path:
    """The hidden temp file `path` is written to before it is renamed into place."""
    return path.with_name(f".{path.name}.partial")


def _lock(fd: int, path: Path) -> int:
    """Take `path`'s exclusive lock on `fd` without waiting; OutputError (fd closed) when a live run holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"Another conversion is writing {path.name.removeprefix('.').removesuffix('.partial')} right now; "
                "wait for it to finish or choose another -o."
            ) from None
    return fd


def open_locked(path: Path) -> int:
    """Create (or reuse) `path`, lock it, then empty it: a writable fd. Never truncates a file another run holds."""
    fd = _lock(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), path)
    os.ftruncate(fd, 0)
    return fd


def clean_stale_partials(out: Path) -> list[tuple[Path, int]]:
    """Remove the `.partial` files an earlier, killed run of this same output left (its single file or its split
    parts); returns what was removed, with sizes. Raises OutputError when a live run is writing them."""
    stem = glob.escape(out.name.removesuffix(".gguf"))
    part = "[0-9]" * 5
    patterns = [f".{glob.escape(out.name)}.partial", f".{stem}-{part}-of-{part}.gguf.partial"]
    removed = []
    for found in sorted({p for pattern in patterns for p in out.parent.glob(pattern)}):
        if found.is_symlink() or not found.is_file():
            continue
        fd = _lock(os.open(found, os.O_RDONLY), found)
        try:
            size = os.fstat(fd).st_size
            found.unlink()
        finally:
            os.close(fd)
        removed.append((found, size))
    return removed


def split_paths(out: Path, n: int) -> list[Path]:
    if n <= 1:
        return [out]
    stem = out.name.removesuffix(".gguf")
    return [out.with_name(f"{stem}-{i + 1:05d}-of-{n:05d}.gguf") for i in range(n)]


class GGUFStreamWriter:
    """Usage: `with GGUFStreamWriter(...) as w: for t in tensors: w.begin(t); w.write(bytes)…; w.end()`;
    leaving the block normally renames the parts into place."""

    def __init__(
        self,
        out: Path,
        kv: dict[str, gguf.GGUFValue],
        tensors: list[PlannedTensor],
        *,
        split_max_size: int | None = None,
        force: bool = False,
    ) -> None:
        self.out = Path(out)
        self.kv = kv
        self.tensors = tensors
        self.force = force
        self.parts: list[list[PlannedTensor]] = [[]]
        size = 0
        for t in tensors:
            cost = t.nbytes + _pad(t.nbytes)
            if split_max_size and self.parts[-1] and size + cost > split_max_size:
                self.parts.append([])
                size = 0
            self.parts[-1].append(t)
            size += cost
        self.paths = split_paths(self.out, len(self.parts))
        self._temps: list[Path] = []
        self._files: list = []
        self._current: PlannedTensor | None = None
        self._written = 0
        self._part_of = {t.name: i for i, part in enumerate(self.parts) for t in part}

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes + _pad(t.nbytes) for t in self.tensors)

    def _headers(self) -> list[bytes]:
        heads = []
        n = len(self.parts)
        for i, part in enumerate(self.parts):
            kv = dict(self.kv) if i == 0 else {}
            if n > 1:
                kv[gguf.Keys.Split.LLM_KV_SPLIT_NO] = gguf.GGUFValue(i, V.UINT16)
                kv[gguf.Keys.Split.LLM_KV_SPLIT_COUNT] = gguf.GGUFValue(n, V.UINT16)
                kv[gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT] = gguf.GGUFValue(len(self.tensors), V.INT32)
            head = bytearray(struct.pack("<IIQQ", gguf.GGUF_MAGIC, gguf.GGUF_VERSION, len(part), len(kv)))
            head += pack_kv(kv)
            offset = 0
            for t in part:
                head += _string(t.name) + struct.pack("<I", len(t.shape))
                head += b"".join(struct.pack("<Q", d) for d in reversed(t.shape))
                head += struct.pack("<IQ", int(t.ggml_type), offset)
                offset += t.nbytes + _pad(t.nbytes)
            head += b"\0" * _pad(len(head))
            heads.append(bytes(head))
        return heads

    def __enter__(self) -> GGUFStreamWriter:  # noqa: PYI034
        existing = [p for p in self.paths if p.exists()]
        if self.out.exists() and self.out not in existing:
            existing.append(self.out)
        if existing and not self.force:
            raise OutputExists(
                f"{existing[0]} already exists; pass --force to overwrite it or choose another -o."
            )
        folder = self.out.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create {folder}: {exc.strerror}.") from None
        heads = self._headers()
        need = sum(len(h) for h in heads) + self.total_bytes
        free = shutil.disk_usage(folder).free
        if need > free:
            raise OutputError(
                f"Not enough disk space in {folder}: the output needs {need / 1e9:.2f} GB, "
                f"{free / 1e9:.2f} GB free. Free some space or write elsewhere with -o."
            )
        try:
            for path, head in zip(self.paths, heads):
                tmp = partial_path(path)
                fd = open_locked(tmp)
                self._temps.append(tmp)
                f = os.fdopen(fd, "wb")
                self._files.append(f)
                f.write(head)
        except OSError as exc:
            self._cleanup()
            raise _os_error(exc, folder) from None
        except BaseException:
            self._cleanup()
            raise
        return self

    def begin(self, t: PlannedTensor) -> None:
        self._current = t
        self._written = 0
        self._file = self._files[self._part_of[t.name]]

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _os_error(exc, self.out.parent) from None
        self._written += len(data)

    def end(self) -> None:
        t = self._current
        assert t is not None
        if self._written != t.nbytes:
            raise OutputError(f"internal error: wrote {self._written} bytes for {t.name}, planned {t.nbytes}")
        self.write(b"\0" * _pad(t.nbytes))
        self._current = None

    def _cleanup(self) -> None:
        for tmp in self._temps:  # unlinked while still locked: no other run can mistake them for stale
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        for f in self._files:
            try:
                f.close()
            except OSError:
                pass

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._cleanup()
            return
        try:
            for f in self._files:
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self._cleanup()
            raise _os_error(e, self.out.parent) from None
        # with --force, a stale single file beside new split parts would confuse llama.cpp's loader
        if self.force and self.out.exists() and self.out not in self.paths:
            self.out.unlink()
        for tmp, path in zip(self._temps, self.paths):
            os.replace(tmp, path)
        for f in self._files:  # the locks go with the last close, after the rename
            f.close()


def _os_error(exc: OSError, folder: Path) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"The disk holding {folder} is full; nothing was kept. Free some space and rerun.")
    return OutputError(f"Writing to {folder} failed: {exc.strerror or exc}; nothing was kept.")
