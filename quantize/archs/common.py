"""Metadata every text model writes, read from config.json as llama.cpp's converter reads it."""

from __future__ import annotations

import logging

import gguf

log = logging.getLogger(__name__)


def rope_parameters(config: dict) -> dict:
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "rope_type" not in rope and "type" in rope:
        rope["rope_type"] = rope["type"]
    if "rope_theta" not in rope and config.get("rope_theta") is not None:
        rope["rope_theta"] = config["rope_theta"]
    return rope


def text_metadata(
    w: gguf.GGUFWriter, config: dict, block_count: int, *, n_head_kv: int | None = None
) -> None:
    """The keys of llama.cpp's `TextModel.set_gguf_parameters` that these families use."""
    w.add_block_count(block_count)
    if (n_ctx := config.get("max_position_embeddings")) is not None:
        w.add_context_length(int(n_ctx))
    w.add_embedding_length(int(config["hidden_size"]))
    if (n_ff := config.get("intermediate_size")) is not None:
        w.add_feed_forward_length(int(n_ff))
    w.add_head_count(int(config["num_attention_heads"]))
    kv = n_head_kv if n_head_kv is not None else config.get("num_key_value_heads")
    if kv is not None:
        w.add_head_count_kv(int(kv))
    rope = rope_parameters(config)
    rope_type = rope.get("rope_type")
    if rope_type == "linear" and rope.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type == "yarn" and rope.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        if (v := rope.get("extrapolation_factor")) is not None:
            w.add_rope_scaling_yarn_ext_factor(float(v))
        if (v := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
            w.add_rope_scaling_yarn_attn_factor(float(v))
        if (v := rope.get("beta_fast")) is not None:
            w.add_rope_scaling_yarn_beta_fast(float(v))
        if (v := rope.get("beta_slow")) is not None:
            w.add_rope_scaling_yarn_beta_slow(float(v))
    elif rope_type not in (None, "default", "llama3"):
        log.warning("RoPE scaling type %r is not carried over", rope_type)
    if (theta := rope.get("rope_theta")) is not None:
        w.add_rope_freq_base(float(theta))
    if (eps := config.get("rms_norm_eps")) is not None:
        w.add_layer_norm_rms_eps(float(eps))
    if (n := config.get("n_routed_experts") or config.get("num_experts")) is not None:
        w.add_expert_count(int(n))
    if (n := config.get("num_experts_per_tok")) is not None:
        w.add_expert_used_count(int(n))
    if (n := config.get("n_group")) is not None:
        w.add_expert_group_count(int(n))
    if (n := config.get("topk_group")) is not None:
        w.add_expert_group_used_count(int(n))
    score = config.get("scoring_func")
    if score == "sigmoid":
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    elif score == "softmax":
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SOFTMAX)
    elif score == "sqrtsoftplus":  # DeepSeek-V4; gguf-py 0.19's enum lacks it (llama.cpp: 4)
        w.add_uint32(gguf.Keys.LLM.EXPERT_GATING_FUNC.format(arch=w.arch), 4)
    if (head_dim := config.get("head_dim")) is not None:
        w.add_key_length(int(head_dim))
        w.add_value_length(int(head_dim))
