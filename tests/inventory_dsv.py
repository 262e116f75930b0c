"""The real tensor inventories of DeepSeek-V3.2 (`deepseek32`) and DeepSeek-V4 (`deepseek4`), for planning tests.

Same idea as tests/inventory.py (which writes the files): the real header, a sparse data section, per-tensor
types from llama.cpp's own quantizer. V3.2 is V3's `deepseek2` table plus the lightning indexer
(`inventory.DeepseekShape` with `arch="deepseek32"`); V4's own table follows
`llama_model_deepseek4::load_arch_tensors` (src/models/deepseek4.cpp) tensor for tensor, with the keys its
`load_arch_hparams` reads. Shapes are the published config.json values (DeepSeek-V3.2, DeepSeek-V4-Flash).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import gguf
from gguf import GGMLQuantizationType as Q
from inventory import R1_MTP, Tensor

# V3.2(-Exp): V3's shapes (61 layers + the MTP layer llama.cpp's converter keeps) and the indexer of its sparse
# attention: index_n_heads 64, index_head_dim 128, index_topk 2048.
V32 = replace(R1_MTP, name="DeepSeek-V3.2", arch="deepseek32", index_heads=64, index_dim=128, index_topk=2048)

EXPERT_GATING_SQRT_SOFTPLUS = 4  # llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SQRT_SOFTPLUS


@dataclass(frozen=True)
class V4Shape:
    """Hyper-parameters of a `deepseek4` model (the model file: llama.cpp's converter leaves the MTP block out)."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    head_dim: int
    rope: int
    q_lora: int
    o_groups: int
    o_lora: int
    n_expert: int
    n_expert_used: int
    n_shared: int
    n_ff_exp: int
    n_hash: int
    compress_ratios: tuple[int, ...]  # per layer, then the MTP layer's entry
    window: int
    index_heads: int
    index_dim: int
    index_topk: int
    hc: int
    n_vocab: int
    ctx: int = 1048576
    arch: str = "deepseek4"
    pre: str = "deepseek-v3"

    def tensors(self, n_vocab: int) -> Iterator[Tensor]:
        s = self
        hc_dim, mix = s.hc * s.n_embd, (2 + s.hc) * s.hc
        yield "token_embd.weight", (s.n_embd, n_vocab)
        yield "output_norm.weight", (s.n_embd,)
        yield "output.weight", (s.n_embd, n_vocab)
        yield "output_hc_fn.weight", (hc_dim, s.hc)
        yield "output_hc_base.weight", (s.hc,)
        yield "output_hc_scale.weight", (1,)
        for i in range(s.n_layer):
            p = f"blk.{i}."
            yield p + "attn_norm.weight", (s.n_embd,)
            yield p + "attn_sinks.weight", (s.n_head,)
            yield p + "attn_q_a.weight", (s.n_embd, s.q_lora)
            yield p + "attn_q_a_norm.weight", (s.q_lora,)
            yield p + "attn_q_b.weight", (s.q_lora, s.n_head * s.head_dim)
            yield p + "attn_kv.weight", (s.n_embd, s.head_dim)
            yield p + "attn_kv_a_norm.weight", (s.head_dim,)
            # as the file stores it; llama.cpp reshapes it to {heads·dim/groups, rank, groups} at load
            yield p + "attn_output_a.weight", (s.n_head * s.head_dim // s.o_groups, s.o_groups * s.o_lora)
            yield p + "attn_output_b.weight", (s.o_groups * s.o_lora, s.n_embd)
            for part in ("attn", "ffn"):
                yield p + f"hc_{part}_fn.weight", (hc_dim, mix)
                yield p + f"hc_{part}_base.weight", (mix,)
                yield p + f"hc_{part}_scale.weight", (3,)
            ratio = s.compress_ratios[i] if i < len(s.compress_ratios) else 0
            if ratio:
                coff = 2 if ratio == 4 else 1
                yield p + "attn_compressor_kv.weight", (s.n_embd, coff * s.head_dim)
                yield p + "attn_compressor_gate.weight", (s.n_embd, coff * s.head_dim)
                yield p + "attn_compressor_ape.weight", (coff * s.head_dim, ratio)
                yield p + "attn_compressor_norm.weight", (s.head_dim,)
            if ratio == 4:
                yield p + "indexer.proj.weight", (s.n_embd, s.index_heads)
                yield p + "indexer.attn_q_b.weight", (s.q_lora, s.index_heads * s.index_dim)
                yield p + "indexer_compressor_kv.weight", (s.n_embd, 2 * s.index_dim)
                yield p + "indexer_compressor_gate.weight", (s.n_embd, 2 * s.index_dim)
                yield p + "indexer_compressor_ape.weight", (2 * s.index_dim, ratio)
                yield p + "indexer_compressor_norm.weight", (s.index_dim,)
            yield p + "ffn_gate_inp.weight", (s.n_embd, s.n_expert)
            if i < s.n_hash:
                yield p + "ffn_gate_tid2eid.weight", (s.n_expert_used, n_vocab)
            else:
                yield p + "exp_probs_b.bias", (s.n_expert,)
            yield p + "ffn_norm.weight", (s.n_embd,)
            yield p + "ffn_gate_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert)
            yield p + "ffn_down_exps.weight", (s.n_ff_exp, s.n_embd, s.n_expert)
            yield p + "ffn_up_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert)
            sh = s.n_ff_exp * s.n_shared
            yield p + "ffn_gate_shexp.weight", (s.n_embd, sh)
            yield p + "ffn_down_shexp.weight", (sh, s.n_embd)
            yield p + "ffn_up_shexp.weight", (s.n_embd, sh)

    def source_type(self, name: str, ne: tuple[int, ...], default: Q) -> Q:
        """What llama.cpp's converter writes: hyper-connection mixers, sinks, compressor position biases, norms
        and the router in F32, the hash table as I32, routed experts as MXFP4 (V4 ships them so)."""
        if name.endswith("tid2eid.weight"):
            return Q.I32
        if "_exps." in name:
            return Q.MXFP4
        if len(ne) == 1 or "hc_" in name or "_ape." in name or "ffn_gate_inp" in name or "indexer.proj" in name:
            return Q.F32
        return default

    def write_metadata(self, w: gguf.GGUFWriter, n_vocab: int) -> None:
        s, a = self, self.arch
        w.add_context_length(s.ctx)
        w.add_embedding_length(s.n_embd)
        w.add_block_count(s.n_layer)
        w.add_head_count(s.n_head)
        w.add_head_count_kv(1)
        w.add_key_length(s.head_dim)
        w.add_value_length(s.head_dim)
        w.add_rope_dimension_count(s.rope)
        w.add_rope_freq_base(10000.0)
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(16.0)
        w.add_rope_scaling_orig_ctx_len(65536)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_vocab_size(n_vocab)
        w.add_expert_count(s.n_expert)
        w.add_expert_used_count(s.n_expert_used)
        w.add_expert_shared_count(s.n_shared)
        w.add_expert_feed_forward_length(s.n_ff_exp)
        w.add_expert_weights_scale(1.5)
        w.add_expert_weights_norm(True)
        w.add_uint32(f"{a}.expert_gating_func", EXPERT_GATING_SQRT_SOFTPLUS)
        w.add_q_lora_rank(s.q_lora)
        w.add_sliding_window(s.window)
        w.add_array(f"{a}.swiglu_clamp_exp", [10.0] * s.n_layer)
        w.add_array(f"{a}.swiglu_clamp_shexp", [10.0] * s.n_layer)
        w.add_uint32(f"{a}.attention.indexer.head_count", s.index_heads)
        w.add_uint32(f"{a}.attention.indexer.key_length", s.index_dim)
        w.add_uint32(f"{a}.attention.indexer.top_k", s.index_topk)
        w.add_uint32(f"{a}.attention.output_group_count", s.o_groups)
        w.add_uint32(f"{a}.attention.output_lora_rank", s.o_lora)
        w.add_array(f"{a}.attention.compress_ratios", list(s.compress_ratios))
        w.add_float32(f"{a}.attention.compress_rope_freq_base", 160000.0)
        w.add_uint32(f"{a}.hyper_connection.count", s.hc)
        w.add_uint32(f"{a}.hyper_connection.sinkhorn_iterations", 20)
        w.add_float32(f"{a}.hyper_connection.epsilon", 1e-6)
        w.add_uint32(f"{a}.hash_layer_count", s.n_hash)
        w.add_uint32(f"{a}.embedding_length_out", s.hc * s.n_embd)


# DeepSeek-V4-Flash (config.json): 43 layers, hidden 4096, 64 heads of 512 (RoPE 64), q-LoRA 1024, 8 output groups
# of LoRA 1024, 256 experts of 2048 (6 used, 1 shared), 3 hash layers, ratios [0, 0, 4, 128, 4, …, 128, 4] and 0
# for the MTP layer (21 CSA layers, 20 HCA), sliding window 128, indexer 64 heads of 128 (top-k 512), 4 streams.
V4_FLASH = V4Shape(
    "DeepSeek-V4-Flash", n_layer=43, n_embd=4096, n_head=64, head_dim=512, rope=64, q_lora=1024, o_groups=8,
    o_lora=1024, n_expert=256, n_expert_used=6, n_shared=1, n_ff_exp=2048, n_hash=3,
    compress_ratios=(0, 0) + (4, 128) * 20 + (4, 0), window=128, index_heads=64, index_dim=128, index_topk=512,
    hc=4, n_vocab=129280,
)

__all__ = ["V4_FLASH", "V32", "V4Shape"]
