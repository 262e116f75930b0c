"""float32 rows of checkpoint tensors, a bounded chunk at a time, whatever their stored dtype.

FP8 weights get their `weight_scale_inv` block scales applied here (via `fp8.py`); BF16/F16 are widened.
Every chunk is checked for NaN/Inf before it goes anywhere.
"""

from __future__ import annotations

import math

import numpy as np

from quantize.errors import BadWeights, SourceError, shown
from quantize.fp8 import bf16_to_f32, dequantize_fp8_rows
from quantize.safetensors import DTYPES, Checkpoint

# Target size of one float32 chunk: bounded memory however large the tensor (16 MiB of float32).
CHUNK_ELEMENTS = 4 * 1024 * 1024


class RowSource:
    """Reads rows of a 2-D (or 1-D) tensor as float32, applying FP8 block scales."""

    def __init__(self, ckpt: Checkpoint, name: str, block: tuple[int, int] = (128, 128)) -> None:
        self.ckpt = ckpt
        self.name = name
        self.info = ckpt.info(name)
        self.block = block
        self.scale: np.ndarray | None = None
        shape = self.info.shape
        if self.info.dtype == "F8_E4M3":
            scale_name = (
                name[: -len("weight")] + "weight_scale_inv"
                if name.endswith("weight")
                else name + "_scale_inv"
            )
            if scale_name not in ckpt:
                raise SourceError(
                    f"{shown(name)} is FP8 but {shown(scale_name)} is missing; the checkpoint is incomplete."
                )
            if len(shape) != 2:
                raise SourceError(
                    f"{shown(name)} is FP8 with shape {list(shape)}; only 2-D FP8 weights are supported."
                )
            sinfo = ckpt.info(scale_name)
            want = (math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1]))
            if tuple(sinfo.shape) != want:
                raise SourceError(
                    f"{shown(scale_name)} has shape {list(sinfo.shape)}, expected {list(want)} for "
                    f"{block[0]}×{block[1]} blocks of {list(shape)}; the checkpoint is inconsistent."
                )
            self.scale = _to_f32(ckpt.raw(scale_name), sinfo.dtype)
        self.rows = shape[0] if len(shape) >= 1 else 1
        self.cols = int(np.prod(shape[1:])) if len(shape) >= 2 else (shape[0] if shape else 1)
        if len(shape) <= 1:
            self.rows, self.cols = 1, (shape[0] if shape else 1)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape

    def read(self, r0: int, r1: int) -> np.ndarray:
        raw = self.ckpt.raw(self.name).reshape(self.rows, self.cols)[r0:r1]
        if self.scale is not None:
            out = dequantize_fp8_rows(raw, self.scale, r0, self.block)
        else:
            out = _to_f32(raw, self.info.dtype)
        row_bytes = self.cols * DTYPES[self.info.dtype][1]
        self.ckpt.release(self.name, r0 * row_bytes, (r1 - r0) * row_bytes)  # keep RSS bounded by the chunk
        if not np.isfinite(out).all():
            bad = int(np.count_nonzero(~np.isfinite(out)))
            raise BadWeights(
                f"{shown(self.name)} contains {bad} NaN/Inf value(s) in rows {r0}–{r1 - 1}; "
                "the checkpoint is damaged: download it again."
            )
        return out

    def all(self) -> np.ndarray:
        return self.read(0, self.rows)

    def chunks(self, rows_per_chunk: int | None = None):
        step = rows_per_chunk or rows_for(self.cols)
        for r0 in range(0, self.rows, step):
            yield self.read(r0, min(self.rows, r0 + step))

    def release(self) -> None:
        self.ckpt.release(self.name)


def rows_for(cols: int, multiple: int = 128) -> int:
    """Rows per chunk for rows of `cols` floats: about CHUNK_ELEMENTS, aligned to FP8 block rows."""
    n = max(1, CHUNK_ELEMENTS // max(1, cols))
    return n if n < multiple else n - n % multiple


def _to_f32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return bf16_to_f32(raw)
    if dtype == "F32":
        return np.array(raw, dtype=np.float32)
    if dtype == "F16":
        return raw.astype(np.float32)
    raise SourceError(f"dtype {dtype} cannot be read as float32 here")
