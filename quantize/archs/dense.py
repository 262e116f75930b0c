"""The dense R1 distills: Qwen2 (`qwen2`), Qwen3 (`qwen3`) and Llama (`llama`).

Llama alone needs more than renames: its q/k projections are permuted from Hugging Face's rotate-half RoPE
layout to llama.cpp's interleaved one, and Llama-3.1-style RoPE scaling becomes a `rope_freqs` tensor.
"""

from __future__ import annotations

import math

import gguf
import numpy as np

from quantize.archs.base import Arch, Context, OutTensor, per_group
from quantize.archs.common import rope_parameters, text_metadata

M = gguf.MODEL_TENSOR


class _Dense(Arch):
    def head_dim(self) -> int:
        c = self.config
        return int(c.get("head_dim") or int(c["hidden_size"]) // int(c["num_attention_heads"]))

    def expected_shapes(self) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        c = self.config
        h, vocab, ff = int(c["hidden_size"]), int(c["vocab_size"]), int(c["intermediate_size"])
        nh = int(c["num_attention_heads"])
        nkv = int(c.get("num_key_value_heads") or nh)
        hd = self.head_dim()
        return {
            M.TOKEN_EMBD: (vocab, h),
            M.OUTPUT: (vocab, h),
            M.OUTPUT_NORM: (h,),
            M.ATTN_NORM: (h,),
            M.ATTN_Q: (nh * hd, h),
            M.ATTN_K: (nkv * hd, h),
            M.ATTN_V: (nkv * hd, h),
            M.ATTN_OUT: (h, nh * hd),
            M.ATTN_Q_NORM: (hd,),
            M.ATTN_K_NORM: (hd,),
            M.FFN_NORM: (h,),
            M.FFN_GATE: (ff, h),
            M.FFN_UP: (ff, h),
            M.FFN_DOWN: (h, ff),
        }

    def metadata(self, w: gguf.GGUFWriter, keep_mtp: bool) -> None:
        text_metadata(w, self.config, self.block_count(keep_mtp))


class Qwen2(_Dense):
    hf_architectures = ("Qwen2ForCausalLM",)
    gguf_arch = "qwen2"
    tokenizer_pre = "qwen2"


class Qwen3(_Dense):
    hf_architectures = ("Qwen3ForCausalLM",)
    gguf_arch = "qwen3"
    tokenizer_pre = "qwen2"


class Llama(_Dense):
    hf_architectures = ("LlamaForCausalLM",)
    gguf_arch = "llama"
    tokenizer_pre = "llama-bpe"

    def metadata(self, w: gguf.GGUFWriter, keep_mtp: bool) -> None:
        super().metadata(w, keep_mtp)
        w.add_vocab_size(int(self.config["vocab_size"]))
        w.add_rope_dimension_count(self.head_dim())

    def transform(
        self, hf_name: str, gguf_name: str, kind: gguf.MODEL_TENSOR, ctx: Context
    ) -> list[OutTensor] | None:
        if kind not in (M.ATTN_Q, M.ATTN_K):
            return None
        hd = self.head_dim()
        src = ctx.source(hf_name)

        def permute(rows: np.ndarray, _: int) -> np.ndarray:
            # HF [head_dim] = [first halves | second halves] → llama.cpp pairs (x_i, x_{i+hd/2})
            return rows.reshape(2, hd // 2, *rows.shape[1:]).swapaxes(0, 1).reshape(rows.shape)

        shape = tuple(src.shape)
        return [OutTensor(gguf_name, shape, lambda: per_group(ctx.source(hf_name), hd, permute), [hf_name])]

    def extra(self, ctx: Context) -> list[OutTensor]:
        rope = rope_parameters(self.config)
        if str(rope.get("rope_type", "")).lower() != "llama3":
            return []
        base = float(rope.get("rope_theta", 10000.0))
        dim = self.head_dim()
        factor = float(rope.get("factor", 8.0))
        low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
        old_ctx = float(rope.get("original_max_position_embeddings", 8192))
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        # float32 throughout, as llama.cpp's converter computes it (torch float32 tensors)
        f32 = np.float32
        freqs = f32(1.0) / (f32(base) ** (np.arange(0, dim, 2, dtype=f32) / f32(dim)))
        factors = []
        for freq in freqs:
            wavelen = f32(2 * math.pi) / freq
            if wavelen < high_wavelen:
                factors.append(f32(1.0))
            elif wavelen > low_wavelen:
                factors.append(f32(factor))
            else:
                smooth = (f32(old_ctx) / wavelen - f32(low)) / f32(high - low)
                factors.append(f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth))
        data = np.asarray(factors, dtype=np.float32)
        return [OutTensor("rope_freqs.weight", data.shape, lambda: iter([data[None, :]]))]


ARCHS = {"Qwen2ForCausalLM": Qwen2, "Qwen3ForCausalLM": Qwen3, "LlamaForCausalLM": Llama}
