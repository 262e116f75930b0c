"""FP8 (e4m3fn) decoding and DeepSeek's 128×128 block scales — vectorised, one bounded row chunk at a time.

A DeepSeek-V3/R1 linear weight `W [out, in]` is stored as e4m3 codes plus a float32 `W_scale_inv` of shape
`[ceil(out/128), ceil(in/128)]`; the real value is `e4m3(W[i, j]) * scale_inv[i // 128, j // 128]`. Blocks at
the ragged right/bottom edge are partial. These functions never see more than the rows they are given, so
the caller decides the memory bound (see `reader.py`).
"""

from __future__ import annotations

import numpy as np


def _e4m3_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = codes & 0x7
    value = np.where(exp == 0, man * 2.0**-9, (8 + man) * np.exp2(exp.astype(np.float64) - 10.0))
    value = sign * value
    value[(exp == 15) & (man == 7)] = np.nan  # 0x7F and 0xFF; e4m3fn has no infinities
    return value.astype(np.float32)


E4M3_LUT: np.ndarray = _e4m3_table()
E4M3_MAX = 448.0


def decode_e4m3(codes: np.ndarray) -> np.ndarray:
    """e4m3fn codes (uint8) → float32, exactly, through a 256-entry lookup table."""
    return np.take(E4M3_LUT, codes)


def apply_block_scale(
    values: np.ndarray, scale_inv: np.ndarray, row0: int, block: tuple[int, int] = (128, 128)
) -> None:
    """Multiply decoded rows `values` (rows row0 … row0+len-1 of the weight) by their block scales,
    in place."""
    bh, bw = block
    rows, cols = values.shape
    n_cb = -(-cols // bw)
    if scale_inv.ndim != 2 or scale_inv.shape[1] != n_cb:
        raise ValueError(f"scale_inv shape {scale_inv.shape} does not cover {cols} columns in {bw}-blocks")
    r = 0
    while r < rows:
        br = (row0 + r) // bh
        r_end = min(rows, (br + 1) * bh - row0)  # rows up to the end of this block row
        scales = scale_inv[br].astype(np.float32, copy=False)
        seg = values[r:r_end]
        full = (cols // bw) * bw
        if full:
            seg[:, :full].reshape(r_end - r, cols // bw, bw).__imul__(scales[: cols // bw, None])
        if full < cols:
            seg[:, full:] *= scales[-1]
        r = r_end


def dequantize_fp8_rows(
    codes: np.ndarray, scale_inv: np.ndarray, row0: int, block: tuple[int, int] = (128, 128)
) -> np.ndarray:
    """FP8 rows + block scales → float32 rows (a new array the size of `codes`, never more)."""
    values = decode_e4m3(codes)
    apply_block_scale(values, scale_inv, row0, block)
    return values


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits with round-to-nearest-even (NaN stays NaN)."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded
