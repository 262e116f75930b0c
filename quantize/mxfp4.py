"""MXFP4 (OCP microscaling FP4) as DeepSeek-V4 ships its routed experts, and E8M0 block scales — pure functions.

A V4 expert weight `W [out, in]` is stored as `I8 [out, in/2]` (two E2M1 codes a byte: element 2k in the low
nibble, 2k+1 in the high one) plus `F8_E8M0 [out, in/32]` scales (one biased exponent per 32 values along the
row): value = e2m1(code) × 2^(e − 127). Its FP8 weights carry E8M0 scales too (`scale_fmt: ue8m0`).

ggml's `block_mxfp4` holds the same information per 32 values: the scale byte, then 16 bytes whose byte j has
element j in the low nibble and element j+16 in the high one. `repack` moves bits only (lossless, what
llama.cpp's converter does); `decode` gives the float32 values for quantizing to another type.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
E2M1: np.ndarray = np.array(
    [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32
)


def e8m0_to_f32(exponents: np.ndarray) -> np.ndarray:
    """E8M0 bytes → float32 powers of two, 2^(e − 127); 0xFF is NaN."""
    e = np.asarray(exponents, dtype=np.uint8).astype(np.int32)
    out = np.ldexp(np.float64(1.0), np.where(e == 0xFF, 0, e) - 127).astype(np.float32)
    out[e == 0xFF] = np.nan
    return out


def _check(packed: np.ndarray, scale: np.ndarray) -> tuple[int, int]:
    rows, half = packed.shape
    if (2 * half) % BLOCK or scale.shape != (rows, 2 * half // BLOCK):
        raise ValueError(
            f"MXFP4 scale shape {tuple(scale.shape)} does not cover packed weights of shape {packed.shape}"
        )
    return rows, 2 * half // BLOCK


def decode(packed: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Packed codes [rows, cols/2] + E8M0 scales [rows, cols/32] → float32 [rows, cols]."""
    rows, n_blocks = _check(packed, scale)
    p = np.asarray(packed).view(np.uint8)
    codes = np.empty((rows, 2 * p.shape[1]), dtype=np.uint8)
    codes[:, 0::2] = p & 0x0F
    codes[:, 1::2] = p >> 4
    values = np.take(E2M1, codes).reshape(rows, n_blocks, BLOCK)
    values *= e8m0_to_f32(scale)[:, :, None]
    return values.reshape(rows, n_blocks * BLOCK)


def repack(packed: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Packed codes + E8M0 scales → ggml `block_mxfp4` bytes [rows, cols/32 × 17] (bits moved, none changed)."""
    rows, n_blocks = _check(packed, scale)
    p = np.asarray(packed).view(np.uint8).reshape(rows, n_blocks, 16)
    codes = np.empty((rows, n_blocks, BLOCK), dtype=np.uint8)
    codes[:, :, 0::2] = p & 0x0F
    codes[:, :, 1::2] = p >> 4
    out = np.empty((rows, n_blocks, 17), dtype=np.uint8)
    out[:, :, 0] = np.asarray(scale).view(np.uint8)
    out[:, :, 1:] = codes[:, :, :16] | (codes[:, :, 16:] << 4)
    return out.reshape(rows, n_blocks * 17)
