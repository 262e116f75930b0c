"""DeepSeek-V2/V2-Lite/V3/R1 (`DeepseekV2ForCausalLM`, `DeepseekV3ForCausalLM`) → GGUF `deepseek2`.

Differences from a plain copy:
- MLA: `kv_b_proj` [n_head·(nope+v), kv_lora] is split into `attn_k_b` (transposed per head) and `attn_v_b`,
  the layout llama.cpp's absorbed-MLA graph expects.
- MoE: routed experts are stacked into `ffn_{gate,up,down}_exps` (done generically in base.py).
- MTP: layer `num_hidden_layers` (the multi-token-prediction module) is KEPT as `blk.<n_layer>.*` with
  `blk.<n_layer>.nextn.{eh_proj,enorm,hnorm,embed_tokens,shared_head_head,shared_head_norm}` and
  `deepseek2.nextn_predict_layers` — llama.cpp's own converter drops it. `keep_mtp=False` drops it too.
V3.2 (`DeepseekV32ForCausalLM` → `deepseek32`) is the same plus the lightning indexer of its sparse attention
(`self_attn.indexer.{wq_b,wk,k_norm,weights_proj}` → `blk.N.indexer.{attn_q_b,attn_k,k_norm,proj}`) and the
keys `attention.indexer.{head_count,key_length,top_k}`; its MTP block is kept exactly like V3's (llama.cpp's
converter keeps it too). V4 has its own module (`deepseek4.py`).
"""

from __future__ import annotations

import gguf
import numpy as np

from quantize.archs.base import Arch, Context, OutTensor, per_group
from quantize.archs.common import rope_parameters, text_metadata

M = gguf.MODEL_TENSOR
NEXTN = (
    M.NEXTN_EH_PROJ,
    M.NEXTN_EMBED_TOKENS,
    M.NEXTN_ENORM,
    M.NEXTN_HNORM,
    M.NEXTN_SHARED_HEAD_HEAD,
    M.NEXTN_SHARED_HEAD_NORM,
)


class DeepseekV2(Arch):
    hf_architectures = ("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM")
    gguf_arch = "deepseek2"
    # gguf-py 0.19 lacks the NextN kinds for deepseek2; llama.cpp loads them (src/models/deepseek2.cpp)
    extra_tensors = NEXTN
    tokenizer_pre = "deepseek-llm"

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        if config.get("architectures", [""])[0] == "DeepseekV3ForCausalLM":
            self.tokenizer_pre = "deepseek-v3"

    def n_mtp(self) -> int:
        return int(self.config.get("num_nextn_predict_layers") or 0)

    def normalize(self, hf_name: str) -> str:
        if hf_name.endswith("e_score_correction_bias"):
            return hf_name.replace("e_score_correction_bias", "e_score_correction.bias")
        return hf_name

    def expected_shapes(self) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        c = self.config
        h, nh = int(c["hidden_size"]), int(c["num_attention_heads"])
        vocab = int(c["vocab_size"])
        nope, rope, v = int(c["qk_nope_head_dim"]), int(c["qk_rope_head_dim"]), int(c["v_head_dim"])
        kv, q = int(c["kv_lora_rank"]), c.get("q_lora_rank")
        moe = int(c.get("moe_intermediate_size") or 0)
        shexp = moe * int(c.get("n_shared_experts") or 0)
        ff = int(c["intermediate_size"])
        shapes = {
            M.TOKEN_EMBD: (vocab, h),
            M.OUTPUT: (vocab, h),
            M.OUTPUT_NORM: (h,),
            M.ATTN_NORM: (h,),
            M.ATTN_Q: (nh * (nope + rope), h),
            M.ATTN_KV_A_MQA: (kv + rope, h),
            M.ATTN_KV_A_NORM: (kv,),
            M.ATTN_KV_B: (nh * (nope + v), kv),
            M.ATTN_OUT: (h, nh * v),
            M.FFN_NORM: (h,),
            M.FFN_GATE: (ff, h),
            M.FFN_UP: (ff, h),
            M.FFN_DOWN: (h, ff),
            M.FFN_GATE_INP: (int(c.get("n_routed_experts") or 0), h),
            M.FFN_GATE_EXP: (moe, h),
            M.FFN_UP_EXP: (moe, h),
            M.FFN_DOWN_EXP: (h, moe),
            M.FFN_GATE_SHEXP: (shexp, h),
            M.FFN_UP_SHEXP: (shexp, h),
            M.FFN_DOWN_SHEXP: (h, shexp),
            M.NEXTN_EH_PROJ: (h, 2 * h),
            M.NEXTN_EMBED_TOKENS: (vocab, h),
            M.NEXTN_SHARED_HEAD_HEAD: (vocab, h),
            M.NEXTN_ENORM: (h,),
            M.NEXTN_HNORM: (h,),
            M.NEXTN_SHARED_HEAD_NORM: (h,),
        }
        if q:
            shapes.update(
                {
                    M.ATTN_Q_A: (int(q), h),
                    M.ATTN_Q_A_NORM: (int(q),),
                    M.ATTN_Q_B: (nh * (nope + rope), int(q)),
                }
            )
        return shapes

    def transform(
        self, hf_name: str, gguf_name: str, kind: gguf.MODEL_TENSOR, ctx: Context
    ) -> list[OutTensor] | None:
        if kind != M.ATTN_KV_B:
            return None
        c = self.config
        nh, nope, v, kv = (
            int(c["num_attention_heads"]),
            int(c["qk_nope_head_dim"]),
            int(c["v_head_dim"]),
            int(c["kv_lora_rank"]),
        )
        kb_name = gguf_name.replace("attn_kv_b", "attn_k_b")
        vb_name = gguf_name.replace("attn_kv_b", "attn_v_b")

        def k_b():
            return per_group(
                ctx.source(hf_name), nope + v, lambda rows, _: np.ascontiguousarray(rows[:nope].T)
            )

        def v_b():
            return per_group(ctx.source(hf_name), nope + v, lambda rows, _: rows[nope:])

        return [
            OutTensor(kb_name, (nh, kv, nope), k_b, [hf_name], rows_per_expert=kv),
            OutTensor(vb_name, (nh, v, kv), v_b, [hf_name], rows_per_expert=v),
        ]

    def metadata(self, w: gguf.GGUFWriter, keep_mtp: bool) -> None:
        c = self.config
        text_metadata(w, c, self.block_count(keep_mtp), n_head_kv=1)  # MLA is written as MQA
        w.add_leading_dense_block_count(int(c.get("first_k_dense_replace") or 0))
        w.add_vocab_size(int(c["vocab_size"]))
        if c.get("q_lora_rank"):
            w.add_q_lora_rank(int(c["q_lora_rank"]))
        kv, rope = int(c.get("kv_lora_rank", 512)), int(c["qk_rope_head_dim"])
        w.add_kv_lora_rank(kv)
        w.add_key_length(kv + rope)
        w.add_value_length(kv)
        w.add_key_length_mla(int(c["qk_nope_head_dim"]) + rope)
        w.add_value_length_mla(int(c["v_head_dim"]))
        w.add_expert_feed_forward_length(int(c.get("moe_intermediate_size") or c["intermediate_size"]))
        w.add_expert_shared_count(int(c.get("n_shared_experts") or 0))
        if (scale := c.get("routed_scaling_factor")) is not None:
            w.add_expert_weights_scale(float(scale))
        if c.get("norm_topk_prob"):
            w.add_expert_weights_norm(True)
        w.add_rope_dimension_count(rope)
        if (mscale_all := rope_parameters(c).get("mscale_all_dim")) is not None:
            w.add_rope_scaling_yarn_log_mul(0.1 * float(mscale_all))  # llama.cpp divides it back by 0.1
        if keep_mtp and self.n_mtp():
            w.add_nextn_predict_layers(self.n_mtp())


INDEXER = (M.INDEXER_K_NORM, M.INDEXER_PROJ, M.INDEXER_ATTN_K, M.INDEXER_ATTN_Q_B)


class DeepseekV32(DeepseekV2):
    hf_architectures = ("DeepseekV32ForCausalLM",)
    gguf_arch = "deepseek32"
    table_arch = "deepseek2"  # gguf-py 0.19 lacks DEEPSEEK32; llama.cpp's table is deepseek2's + the indexer
    extra_tensors = NEXTN + INDEXER
    tokenizer_pre = "deepseek-v3"

    def expected_shapes(self) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        c = self.config
        h, heads, dim = int(c["hidden_size"]), int(c["index_n_heads"]), int(c["index_head_dim"])
        return {
            **super().expected_shapes(),
            M.INDEXER_K_NORM: (dim,),
            M.INDEXER_PROJ: (heads, h),
            M.INDEXER_ATTN_K: (dim, h),
            M.INDEXER_ATTN_Q_B: (heads * dim, int(c["q_lora_rank"])),
        }

    def metadata(self, w: gguf.GGUFWriter, keep_mtp: bool) -> None:
        super().metadata(w, keep_mtp)
        c = self.config
        w.add_indexer_head_count(int(c["index_n_heads"]))
        w.add_indexer_key_length(int(c["index_head_dim"]))
        w.add_indexer_top_k(int(c["index_topk"]))


ARCHS = {
    "DeepseekV2ForCausalLM": DeepseekV2,
    "DeepseekV3ForCausalLM": DeepseekV2,
    "DeepseekV32ForCausalLM": DeepseekV32,
}
