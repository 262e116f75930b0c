"""Tiny `deepseek2` GGUFs in the DeepSeek-V3/R1 layout, written directly with gguf-py, with the MTP module kept.

Layout (what llama.cpp's `src/models/deepseek2.cpp` loads and what `graph_mtp` asserts):
- MLA with q-LoRA (`attn_q_a`, `attn_q_a_norm`, `attn_q_b`), the compressed KV projection `attn_kv_a_mqa` +
  `attn_kv_a_norm`, and the absorbed split `attn_k_b` / `attn_v_b` (so `key_length_mla`/`value_length_mla` are set);
- the first `n_dense` layers dense, the rest MoE with a sigmoid router, `exp_probs_b` bias and shared experts;
- `block_count = n_layer + 1`, `nextn_predict_layers = 1`: block `n_layer` is the MTP module
  (`nextn.eh_proj`, `nextn.enorm`, `nextn.hnorm`, `nextn.embed_tokens`, `nextn.shared_head_norm`,
  `nextn.shared_head_head`, plus a full MoE decoder layer).

`weights="scripted"` makes greedy decoding follow the factory's scripted reply (see `factory.py`), and makes the MTP
module a good drafter of it: `eh_proj` passes the next token's embedding through, so the MTP head predicts the same
bigram chain one step ahead. A correct speculative loop then accepts nearly every draft; a misaligned one does not.
`weights="random"` gives a gibberish-but-deterministic model and a poor drafter (tests exact agreement under rejection).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from factory import _SCRIPT_PIECES, ASSISTANT, BOS, R1_TEMPLATE, _write_vocab, build_vocab


@dataclass(frozen=True)
class TinyDeepseekConfig:
    n_layer: int = 2  # main layers; must not be 26/27 (those are read as V2-Lite, without q-LoRA)
    n_dense: int = 1
    n_embd: int = 64
    n_head: int = 4
    q_lora_rank: int = 32
    kv_lora_rank: int = 32
    qk_nope: int = 16
    qk_rope: int = 16
    v_head: int = 16
    n_ff: int = 128
    n_expert: int = 4
    n_expert_used: int = 2
    n_expert_shared: int = 1
    n_ff_exp: int = 32
    context_length: int = 2048
    mtp: bool = True
    weights: str = "scripted"  # or "random"
    seed: int = 0
    mtp_wrong_every: int = 0  # scripted: the MTP head mispredicts every n-th link of the chain (partial acceptance)
    cycle: int = 0  # scripted: instead of the chat script, greedy decoding cycles through this many tokens forever
    dtype: str = "f32"  # or "f16" (matrices only; norms stay f32) for larger benchmark models


def write_deepseek2_gguf(path: Path, cfg: TinyDeepseekConfig = TinyDeepseekConfig()) -> Path:
    vocab = build_vocab()
    rng = np.random.default_rng(cfg.seed)
    n_vocab, d = len(vocab.tokens), cfg.n_embd
    k_mla = cfg.qk_nope + cfg.qk_rope
    scale = 0.02 if cfg.weights == "scripted" else 0.2
    tmp = path.with_name(path.name + ".part")
    w_ = gguf.GGUFWriter(str(tmp), "deepseek2")
    arch = "deepseek2"
    w_.add_name(f"tiny-deepseek2-{cfg.weights}{'-mtp' if cfg.mtp else ''}")
    w_.add_context_length(cfg.context_length)
    w_.add_embedding_length(d)
    w_.add_block_count(cfg.n_layer + (1 if cfg.mtp else 0))
    if cfg.mtp:
        w_.add_nextn_predict_layers(1)
    w_.add_feed_forward_length(cfg.n_ff)
    w_.add_head_count(cfg.n_head)
    w_.add_head_count_kv(1)
    w_.add_rope_freq_base(10000.0)
    w_.add_layer_norm_rms_eps(1e-6)
    w_.add_vocab_size(n_vocab)
    w_.add_leading_dense_block_count(cfg.n_dense)
    w_.add_q_lora_rank(cfg.q_lora_rank)
    w_.add_kv_lora_rank(cfg.kv_lora_rank)
    w_.add_key_length(cfg.kv_lora_rank + cfg.qk_rope)
    w_.add_value_length(cfg.kv_lora_rank)
    w_.add_key_length_mla(k_mla)
    w_.add_value_length_mla(cfg.v_head)
    w_.add_rope_dimension_count(cfg.qk_rope)
    w_.add_expert_feed_forward_length(cfg.n_ff_exp)
    w_.add_expert_count(cfg.n_expert)
    w_.add_expert_used_count(cfg.n_expert_used)
    w_.add_expert_shared_count(cfg.n_expert_shared)
    w_.add_expert_weights_scale(2.5)
    w_.add_expert_weights_norm(True)
    w_.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w_.add_file_type(gguf.LlamaFileType.ALL_F32 if cfg.dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _write_vocab(w_, vocab, "deepseek-v3")
    w_.add_chat_template(R1_TEMPLATE)
    assert arch == w_.arch

    wdtype = np.float32 if cfg.dtype == "f32" else np.float16

    def w(*shape: int, s: float = scale) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * s).astype(wdtype)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    chain = _chain(vocab, cfg)
    if cfg.weights == "scripted":
        embd, output = _chain_embeddings(rng, n_vocab, d, chain)
    else:
        embd = rng.standard_normal((n_vocab, d)).astype(np.float32)
        output = rng.standard_normal((n_vocab, d)).astype(np.float32) * 0.5
    w_.add_tensor("token_embd.weight", embd.astype(wdtype))
    # numpy shapes are ggml's `ne` reversed.
    for i in range(cfg.n_layer + (1 if cfg.mtp else 0)):
        p = f"blk.{i}."
        w_.add_tensor(p + "attn_norm.weight", ones(d))
        w_.add_tensor(p + "attn_q_a_norm.weight", ones(cfg.q_lora_rank))
        w_.add_tensor(p + "attn_kv_a_norm.weight", ones(cfg.kv_lora_rank))
        w_.add_tensor(p + "attn_q_a.weight", w(cfg.q_lora_rank, d))
        w_.add_tensor(p + "attn_q_b.weight", w(cfg.n_head * k_mla, cfg.q_lora_rank))
        w_.add_tensor(p + "attn_kv_a_mqa.weight", w(cfg.kv_lora_rank + cfg.qk_rope, d))
        w_.add_tensor(p + "attn_k_b.weight", w(cfg.n_head, cfg.kv_lora_rank, cfg.qk_nope))
        w_.add_tensor(p + "attn_v_b.weight", w(cfg.n_head, cfg.v_head, cfg.kv_lora_rank))
        w_.add_tensor(p + "attn_output.weight", w(d, cfg.n_head * cfg.v_head))
        w_.add_tensor(p + "ffn_norm.weight", ones(d))
        if i < cfg.n_dense:
            w_.add_tensor(p + "ffn_gate.weight", w(cfg.n_ff, d))
            w_.add_tensor(p + "ffn_up.weight", w(cfg.n_ff, d))
            w_.add_tensor(p + "ffn_down.weight", w(d, cfg.n_ff))
        else:
            shared = cfg.n_ff_exp * cfg.n_expert_shared
            w_.add_tensor(p + "ffn_gate_inp.weight", w(cfg.n_expert, d, s=0.2))
            w_.add_tensor(p + "exp_probs_b.bias", np.zeros(cfg.n_expert, dtype=np.float32))
            w_.add_tensor(p + "ffn_gate_exps.weight", w(cfg.n_expert, cfg.n_ff_exp, d))
            w_.add_tensor(p + "ffn_up_exps.weight", w(cfg.n_expert, cfg.n_ff_exp, d))
            w_.add_tensor(p + "ffn_down_exps.weight", w(cfg.n_expert, d, cfg.n_ff_exp))
            w_.add_tensor(p + "ffn_gate_shexp.weight", w(shared, d))
            w_.add_tensor(p + "ffn_up_shexp.weight", w(shared, d))
            w_.add_tensor(p + "ffn_down_shexp.weight", w(d, shared))
        if i == cfg.n_layer:  # the MTP module
            if cfg.weights == "scripted":
                eh = np.concatenate([np.eye(d, dtype=np.float32), np.zeros((d, d), dtype=np.float32)], axis=1)
            else:
                eh = w(d, 2 * d)
            w_.add_tensor(p + "nextn.eh_proj.weight", eh.astype(wdtype))
            w_.add_tensor(p + "nextn.enorm.weight", ones(d))
            w_.add_tensor(p + "nextn.hnorm.weight", ones(d))
            w_.add_tensor(p + "nextn.embed_tokens.weight", embd.astype(wdtype))
            w_.add_tensor(p + "nextn.shared_head_norm.weight", ones(d))
            w_.add_tensor(p + "nextn.shared_head_head.weight", _mtp_head(output, embd, chain, vocab, cfg).astype(wdtype))
    w_.add_tensor("output_norm.weight", ones(d))
    w_.add_tensor("output.weight", output.astype(wdtype))
    w_.write_header_to_file()
    w_.write_kv_data_to_file()
    w_.write_tensors_to_file()
    w_.close()
    tmp.replace(path)
    return path


def _chain(vocab, cfg: TinyDeepseekConfig) -> list[int]:
    """The token chain greedy decoding follows: the chat script, or a cycle through `cycle` ordinary tokens
    entered from BOS (so a generation started after BOS never leaves it)."""
    if not cfg.cycle:
        return [vocab.id(ASSISTANT)] + [vocab.id(p) for p in _SCRIPT_PIECES]
    ring = list(range(cfg.cycle))
    return [vocab.id(BOS), *ring, *ring[: max(1, cfg.cycle // 2)]]  # wraps around: the links repeat, same targets


def _chain_embeddings(rng: np.random.Generator, n_vocab: int, d: int, chain: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Embedding and output matrices whose greedy bigram chain follows `chain` (as factory._scripted_embeddings)."""
    embd = rng.standard_normal((n_vocab, d)).astype(np.float32)
    embd /= np.linalg.norm(embd, axis=1, keepdims=True)
    embd *= np.sqrt(d)
    output = rng.standard_normal((n_vocab, d)).astype(np.float32) * 0.02
    for prev, nxt in set(itertools.pairwise(chain)):
        output[nxt] += embd[prev] * (4.0 / np.sqrt(d))
    return embd, output


def _mtp_head(output: np.ndarray, embd: np.ndarray, chain: list[int], vocab, cfg: TinyDeepseekConfig) -> np.ndarray:
    """The MTP block's output head: the main head, with every n-th link of the chain sent to a wrong token."""
    head = output.copy()
    if cfg.weights != "scripted" or not cfg.mtp_wrong_every:
        return head
    wrong = vocab.id("Ġthe")
    c = 4.0 / np.sqrt(cfg.n_embd)
    for k, (prev, nxt) in enumerate(dict.fromkeys(itertools.pairwise(chain))):
        if k % cfg.mtp_wrong_every == cfg.mtp_wrong_every - 1 and nxt != wrong:
            head[nxt] -= embd[prev] * c
            head[wrong] += embd[prev] * 2 * c
    return head
