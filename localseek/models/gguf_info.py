"""Read what a GGUF file says about itself, from its header only (no weights are read).

Also the checks that turn a bad file into a clear error before llama.cpp sees it: missing, not a GGUF,
truncated, or the first part of a split model whose other parts are absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import Keys

from localseek.errors import ModelFileError
from localseek.models import gguf_header as ggufheader
from localseek.models.quants import SPLIT_RE, split_name
from localseek.text import printable

GGUF_MAGIC = b"GGUF"
MAX_SPLIT_PARTS = 9999
# llama.cpp's architecture names ("deepseek2", "qwen2", "gpt-oss"); anything else cannot be a model it loads.
_ARCH_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# The most any real model has, with a wide margin (DeepSeek-V3: 61+1 layers, 256 experts, 129k tokens, 163k
# context). A count beyond these is a damaged or hostile file, refused before anything is sized by it (the
# planner keeps one record per layer and tries every GPU split, so `block_count` also bounds its time).
LIMITS: dict[str, int] = {
    "block_count": 512,
    "nextn_predict_layers": 16,
    "leading_dense_block_count": 512,
    "context_length": 1 << 24,
    "embedding_length": 1 << 20,
    "feed_forward_length": 1 << 22,
    "expert_feed_forward_length": 1 << 22,
    "expert_shared_feed_forward_length": 1 << 22,
    "attention.head_count": 1 << 14,
    "attention.head_count_kv": 1 << 14,
    "attention.key_length": 1 << 16,
    "attention.value_length": 1 << 16,
    "attention.key_length_mla": 1 << 16,
    "attention.value_length_mla": 1 << 16,
    "attention.kv_lora_rank": 1 << 16,
    "attention.q_lora_rank": 1 << 16,
    "rope.dimension_count": 1 << 16,
    "expert_count": 1 << 16,
    "expert_used_count": 1 << 16,
    "expert_shared_count": 1 << 16,
    "vocab_size": 1 << 24,
    # V3.2 / V4 (deepseek32, deepseek4): the DSA indexer, V4's sliding window and hyper-connection streams
    "attention.indexer.head_count": 1 << 14,
    "attention.indexer.key_length": 1 << 16,
    "attention.indexer.top_k": 1 << 24,
    "attention.sliding_window": 1 << 24,
    "hyper_connection.count": 64,
    "embedding_length_out": 1 << 22,
}


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
        return value if isinstance(value, str) and value else None

    def get(self, key: str, default: Any = None) -> Any:
        """A key as `gguf.Keys` spells it (`Keys.LLM.CONTEXT_LENGTH` = "{arch}.context_length" reads
        "deepseek2.context_length"); a bare name is looked up under the architecture first, then as it is."""
        if "{arch}" in key:
            return self.metadata.get(key.format(arch=self.arch), default)
        return self.metadata.get(f"{self.arch}.{key}", self.metadata.get(key, default))

    def int_value(self, key: str, default: int = 0, *, per_layer: bool = False) -> int:
        """`get(key)` as a whole number ≥ 0 and within `LIMITS`; a value of another type (text, a fraction, NaN, a
        list) or an implausible size is a damaged file (ModelFileError). `per_layer`: the key may also hold one
        value per layer (llama.cpp reads head counts and FFN widths that way); the largest is returned."""
        value = self.get(key)
        if value is None:
            return default
        key = key.removeprefix("{arch}.")  # gguf.Keys spelling: LIMITS and messages use the bare name
        if per_layer and isinstance(value, list) and value:
            return max(self._count(key, v) for v in value)
        return self._count(key, value)

    def _count(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelFileError(
                f"{printable(self.path.name)}: {key} is {printable(repr(value), limit=40)}, not a count; the file is "
                "damaged or not a model llama.cpp can load — download or convert it again."
            )
        limit = LIMITS.get(key)
        if limit is not None and value > limit:
            raise ModelFileError(
                f"{printable(self.path.name)}: {key} is {value:,}, more than any model has (at most {limit:,}); the "
                "file is damaged — download or convert it again."
            )
        return value


def split_parts(path: Path) -> list[Path]:
    """All parts of a split GGUF given any part (or just [path] when not split). Raises if parts are missing."""
    m = SPLIT_RE.match(path.name)
    if not m:
        return [path]
    count, index = int(m["count"]), int(m["idx"])
    if not 1 <= index <= count <= MAX_SPLIT_PARTS:
        raise ModelFileError(
            f"{printable(path.name)} is named as part {index} of {count}, which cannot be; rename it to "
            "STEM-0000i-of-0000N.gguf as llama.cpp's gguf-split writes them, or to a plain .gguf if it is not split."
        )
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
    if not path.is_file():
        raise ModelFileError(f"{path} is not a regular file (a device or a pipe?); point at a .gguf file.")
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
    reader = _parse(first)  # fast: GGUFReader takes seconds on a DeepSeek vocabulary
    metadata = dict(reader.metadata)
    arch = metadata.get("general.architecture", "unknown")
    if not isinstance(arch, str) or not _ARCH_RE.match(arch):
        raise ModelFileError(
            f"{printable(first.name)} names its architecture {printable(repr(arch), limit=40)}, which is no "
            "architecture llama.cpp has; the file is damaged or not a model — download or convert it again."
        )
    tensors = [TensorInfo(t.name, t.type_name, t.shape, t.n_bytes) for t in reader.tensors]
    _check_complete(first, reader)
    info = GGUFInfo(path=first, metadata=metadata, tensors=tensors, parts=parts)
    if len(parts) > 1:
        info.tensors.extend(_tensors_of_other_parts(parts[1:]))
    return info


def _parse(path: Path) -> ggufheader.Header:
    try:
        return ggufheader.parse(path)
    except ggufheader.HeaderError as exc:
        raise ModelFileError(
            f"{path} is truncated or corrupt ({printable(exc)}); download or convert it again."
        ) from exc
    except OSError as exc:
        raise ModelFileError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


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
        reader = _parse(part)
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
    if isinstance(value, bool) or not isinstance(value, int):
        return "?"
    try:
        name = LlamaFileType(value).name
    except ValueError:
        return f"type {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def bytes_by_type(tensors: list[TensorInfo]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tensors:
        out[t.type_name] = out.get(t.type_name, 0) + t.n_bytes
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


__all__ = [
    "LIMITS", "GGUFInfo", "TensorInfo", "bytes_by_type", "file_type_name", "parameter_count", "read_gguf", "split_parts",
    "summarize_types",
]
