"""float32 rows of checkpoint tensors, a bounded chunk at a time, whatever their stored dtype.

FP8 weights get their block scales applied here (via `fp8.py`): `weight_scale_inv` (float32, V3) or `scale`
(E8M0 powers of two, V4); BF16/F16 are widened. V4's MXFP4 experts (`I8` packed codes + E8M0 `scale` per 32
values) are decoded by `mxfp4.py`, or handed on as ggml `block_mxfp4` bytes (`raw`) when they stay MXFP4.
Integer tensors (V4's token → expert table) come as int32 (`ints`). Every float chunk is checked for NaN/Inf
before it goes anywhere.
"""

from __future__ import annotations

import math

import numpy as np

from quantize import mxfp4
from quantize.errors import BadWeights, SourceError, shown
from quantize.fp8 import bf16_to_f32, dequantize_fp8_rows
from quantize.safetensors import Checkpoint

INTEGER = ("I32", "I64")

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
        self.mx_scale: str | None = None  # name of the E8M0 scales of an MXFP4 weight
        shape = self.info.shape
        if self.info.dtype == "F8_E4M3":
            scale_name = self._scale_name(ckpt, name)
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
            raw_scale = ckpt.raw(scale_name)
            self.scale = (
                mxfp4.e8m0_to_f32(raw_scale) if sinfo.dtype == "F8_E8M0" else _to_f32(raw_scale, sinfo.dtype)
            )
            if not np.isfinite(self.scale).all():
                raise BadWeights(f"{shown(scale_name)} contains NaN/Inf scales; the checkpoint is damaged.")
        elif self.info.dtype in ("I8", "U8"):
            scale_name = self._scale_name(ckpt, name)
            sinfo = ckpt.info(scale_name)
            blocks = (shape[0], 2 * shape[1] // mxfp4.BLOCK) if len(shape) == 2 else None
            if blocks is None or sinfo.dtype != "F8_E8M0" or tuple(sinfo.shape) != blocks:
                raise SourceError(
                    f"{shown(name)} ({self.info.dtype} {list(shape)}) with {shown(scale_name)} ({sinfo.dtype} "
                    f"{list(sinfo.shape)}) is not MXFP4 (packed codes [rows, cols/2] + E8M0 scales "
                    "[rows, cols/32]); localseek cannot convert it."
                )
            self.mx_scale = scale_name
            shape = (shape[0], 2 * shape[1])
        self.shape: tuple[int, ...] = tuple(shape)
        self.rows = shape[0] if len(shape) >= 1 else 1
        self.cols = int(np.prod(shape[1:])) if len(shape) >= 2 else (shape[0] if shape else 1)
        if len(shape) <= 1:
            self.rows, self.cols = 1, (shape[0] if shape else 1)

    @staticmethod
    def _scale_name(ckpt: Checkpoint, name: str) -> str:
        base = name[: -len("weight")] if name.endswith("weight") else name + "_"
        for candidate in (base + "weight_scale_inv", base + "scale"):  # V3's float32, V4's E8M0
            if candidate in ckpt:
                return candidate
        raise SourceError(
            f"{shown(name)} is {ckpt.info(name).dtype} but {shown(base)}weight_scale_inv (or {shown(base)}scale) is "
            "missing; the checkpoint is incomplete."
        )

    @property
    def is_mxfp4(self) -> bool:
        return self.mx_scale is not None

    def _stored(self, r0: int, r1: int) -> np.ndarray:
        """Stored elements of rows r0…r1 (their pages released afterwards by the caller)."""
        return self.ckpt.raw(self.name).reshape(self.rows, -1)[r0:r1]

    def _release(self, r0: int, r1: int) -> None:
        row_bytes = self.info.nbytes // max(1, self.rows)
        self.ckpt.release(self.name, r0 * row_bytes, (r1 - r0) * row_bytes)  # keep RSS bounded by the chunk

    def raw(self, r0: int, r1: int) -> np.ndarray:
        """MXFP4 rows as ggml `block_mxfp4` bytes, unchanged (see mxfp4.repack)."""
        assert self.mx_scale is not None
        out = mxfp4.repack(self._stored(r0, r1), self.ckpt.raw(self.mx_scale)[r0:r1])
        self._release(r0, r1)
        return out

    def ints(self) -> np.ndarray:
        """An integer tensor as int32 (its values must fit)."""
        if self.info.dtype not in INTEGER:
            raise SourceError(f"{self.name} is {self.info.dtype}, not an integer tensor.")
        raw = self.ckpt.raw(self.name)
        if raw.size and (raw.min() < -(2**31) or raw.max() >= 2**31):
            raise SourceError(f"{self.name} has values beyond int32; the checkpoint is damaged.")
        return raw.astype(np.int32)

    def read(self, r0: int, r1: int) -> np.ndarray:
        raw = self._stored(r0, r1)
        if self.scale is not None:
            out = dequantize_fp8_rows(raw, self.scale, r0, self.block)
        elif self.mx_scale is not None:
            out = mxfp4.decode(raw, self.ckpt.raw(self.mx_scale)[r0:r1])
        else:
            out = _to_f32(raw, self.info.dtype)
        self._release(r0, r1)
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
