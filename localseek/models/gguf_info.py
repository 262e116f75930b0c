"""Read what a GGUF file says about itself, from its header only (no weights are read).

Also the checks that turn a bad file into a clear error before llama.cpp sees it: missing, not a GGUF,
truncated, or the first part of a split model whose other parts are absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import Keys

from localseek.errors import ModelFileError
from localseek.models import gguf_header as ggufheader
from localseek.models.quants import SPLIT_RE, split_name

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_name: str
    shape: tuple[int, ...]
    n_bytes: int


@dataclass
class GGUFInfo:
    path: Path
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return str(self.metadata.get(Keys.General.ARCHITECTURE, "unknown"))

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.parts)

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get(Keys.Tokenizer.CHAT_TEMPLATE)
        return str(value) if value else None

    def get(self, key: str, default: Any = None) -> Any:
        """A key as `gguf.Keys` spells it (`Keys.LLM.CONTEXT_LENGTH` = "{arch}.context_length" reads
        "deepseek2.context_length"); a bare name is looked up under the architecture first, then as it is."""
        if "{arch}" in key:
            return self.metadata.get(key.format(arch=self.arch), default)
        return self.metadata.get(f"{self.arch}.{key}", self.metadata.get(key, default))

    def int_value(self, key: str, default: int = 0) -> int:
        """`get(key)` as a whole number ≥ 0; a value of another type (text, a fraction, a list) is a damaged file."""
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelFileError(
                f"{self.path.name}: {key} is {str(value)[:40]!r}, not a count; the file is damaged or not a model "
                "llama.cpp can load — download or convert it again."
            )
        return value


def split_parts(path: Path) -> list[Path]:
    """All parts of a split GGUF given any part (or just [path] when not split). Raises if parts are missing."""
    m = SPLIT_RE.match(path.name)
    if not m:
        return [path]
    count = int(m["count"])
    parts = [path.with_name(split_name(m["stem"], i, count)) for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise ModelFileError(
            f"Split model {m['stem']} is missing {len(missing)} of {count} parts ({missing[0]}…); "
            "download all parts into the same folder."
        )
    return parts


def read_gguf(path: Path | str) -> GGUFInfo:
    """Parse a GGUF header and check the file is complete. Raises ModelFileError with the fix."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileError(f"No such file: {path}. Check the path, or `localseek pull` a model by name.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; point at a .gguf file inside it.")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"Cannot read {path}: {exc.strerror}.") from exc
    if magic != GGUF_MAGIC:
        hint = " It looks like safetensors; convert it with `localseek quantize`." if path.suffix == ".safetensors" \
            else ""
        raise ModelFileError(f"{path} is not a GGUF file.{hint}")
    parts = split_parts(path)
    first = parts[0]
    try:
        reader = ggufheader.parse(first)  # fast: GGUFReader takes seconds on a DeepSeek vocabulary
    except Exception as exc:  # ValueError/struct errors on short or garbled headers
        raise ModelFileError(
            f"{first} is truncated or corrupt ({type(exc).__name__}); download or convert it again."
        ) from exc
    metadata = dict(reader.metadata)
    tensors = [TensorInfo(t.name, t.type_name, t.shape, t.n_bytes) for t in reader.tensors]
    _check_complete(first, reader)
    info = GGUFInfo(path=first, metadata=metadata, tensors=tensors, parts=parts)
    if len(parts) > 1:
        info.tensors.extend(_tensors_of_other_parts(parts[1:]))
    return info


def _check_complete(path: Path, reader: ggufheader.Header) -> None:
    size = path.stat().st_size
    end = max((reader.data_offset + t.offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise ModelFileError(
            f"{path} is truncated ({size:,} of {end:,} bytes); the download or conversion did not finish — "
            "fetch or convert it again."
        )


def _tensors_of_other_parts(parts: list[Path]) -> list[TensorInfo]:
    out: list[TensorInfo] = []
    for part in parts:
        try:
            reader = ggufheader.parse(part)
        except Exception as exc:
            raise ModelFileError(f"{part} is truncated or corrupt; download it again.") from exc
        _check_complete(part, reader)
        out.extend(TensorInfo(t.name, t.type_name, t.shape, t.n_bytes) for t in reader.tensors)
    return out


def summarize_types(tensors: list[TensorInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in tensors:
        counts[t.type_name] = counts.get(t.type_name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def parameter_count(info: GGUFInfo) -> int:
    """Weights in the model: the element count of every tensor (all parts of a split model)."""
    total = 0
    for t in info.tensors:
        n = 1
        for d in t.shape:
            n *= d
        total += n
    return total


def file_type_name(info: GGUFInfo) -> str | None:
    """The quantization the file declares (general.file_type), as "Q4_K_M", "F16", "BF16", "F32"..."""
    from gguf import LlamaFileType

    value = info.metadata.get(Keys.General.FILE_TYPE)
    if value is None:
        return None
    try:
        name = LlamaFileType(int(value)).name
    except ValueError:
        return f"type {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def bytes_by_type(tensors: list[TensorInfo]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tensors:
        out[t.type_name] = out.get(t.type_name, 0) + t.n_bytes
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


__all__ = [
    "GGUFInfo", "TensorInfo", "bytes_by_type", "file_type_name", "parameter_count", "read_gguf", "split_parts",
    "summarize_types",
]
