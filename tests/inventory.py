"""GGUFs with the real tensor inventories of the DeepSeek family, for planning tests.

Two kinds of file, from one table of shapes per model:
- header-only: the real header (keys, vocabulary size, every tensor's name, shape and type) followed by a
  *sparse* data section (the file is truncated to its full length, never written), so a 400 GB R1 takes a
  few MB of disk. llama.cpp accepts these for metadata work (quantizer dry runs, `no_alloc` loads).
- tiny: the same layout with small dimensions and real (seeded random) data, which llama.cpp loads and runs.

Quantized inventories are not guessed: `quantized_types` asks llama.cpp's own quantizer (dry run) which type
it gives each tensor of a BF16 source for a given file type, exactly as `llama-quantize` would.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import gguf
import numpy as np
from factory import BOS, EOS, PAD, R1_TEMPLATE, build_vocab
from gguf import GGMLQuantizationType as Q

# -- shapes ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeepseekShape:
    """Hyper-parameters of a `deepseek2` model (V2/V2-Lite/V3/R1 share the arch)."""

    name: str
    n_layer: int  # trunk layers (MTP layers come on top)
    n_dense: int  # leading dense layers (first_k_dense_replace)
    n_embd: int
    n_head: int
    n_vocab: int
    q_lora: int | None
    kv_lora: int
    nope: int
    rope: int
    v_dim: int
    n_expert: int
    n_expert_used: int
    n_shared: int
    n_ff: int
    n_ff_exp: int
    nextn: int = 0  # MTP layers kept in the file (DeepSeek's converter drops them; localseek's keeps one)
    ctx: int = 163840
    sigmoid: bool = True  # V3/R1 score experts with a sigmoid and carry exp_probs_b; V2 uses softmax
    n_group: int = 0
    topk_group: int = 0
    routed_scale: float = 1.0
    pre: str = "deepseek-v3"
    legacy_mla: bool = False  # converted before llama.cpp split attn_kv_b into attn_k_b/attn_v_b (early 2025 GGUFs)
    arch: str = "deepseek2"  # "deepseek32": V3.2's layout, with the DSA lightning indexer in every layer
    index_heads: int = 0
    index_dim: int = 0
    index_topk: int = 0


@dataclass(frozen=True)
class DenseShape:
    """Hyper-parameters of the dense distills (`qwen2`, `llama`, `qwen3`)."""

    name: str
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    ctx: int = 131072
    head_dim: int | None = None
    tied: bool = False
    pre: str = "deepseek-r1-qwen"


R1 = DeepseekShape(
    "DeepSeek-R1", n_layer=61, n_dense=3, n_embd=7168, n_head=128, n_vocab=129280, q_lora=1536, kv_lora=512,
    nope=128, rope=64, v_dim=128, n_expert=256, n_expert_used=8, n_shared=1, n_ff=18432, n_ff_exp=2048,
    n_group=8, topk_group=4, routed_scale=2.5,
)
R1_MTP = replace(R1, name="DeepSeek-R1+MTP", nextn=1)
R1_LEGACY = replace(R1, name="DeepSeek-R1-legacy", legacy_mla=True)
V2_LITE = DeepseekShape(
    "DeepSeek-V2-Lite", n_layer=27, n_dense=1, n_embd=2048, n_head=16, n_vocab=102400, q_lora=None, kv_lora=512,
    nope=128, rope=64, v_dim=128, n_expert=64, n_expert_used=6, n_shared=2, n_ff=10944, n_ff_exp=1408,
    sigmoid=False, pre="deepseek-llm",
)
QWEN_1_5B = DenseShape("R1-Distill-Qwen-1.5B", "qwen2", 28, 1536, 12, 2, 8960, 151936)
QWEN_7B = DenseShape("R1-Distill-Qwen-7B", "qwen2", 28, 3584, 28, 4, 18944, 152064)
QWEN_14B = DenseShape("R1-Distill-Qwen-14B", "qwen2", 48, 5120, 40, 8, 13824, 152064)
QWEN_32B = DenseShape("R1-Distill-Qwen-32B", "qwen2", 64, 5120, 40, 8, 27648, 152064)
LLAMA_8B = DenseShape("R1-Distill-Llama-8B", "llama", 32, 4096, 32, 8, 14336, 128256, pre="llama-bpe")
LLAMA_70B = DenseShape("R1-Distill-Llama-70B", "llama", 80, 8192, 64, 8, 28672, 128256, pre="llama-bpe")
QWEN3_8B = DenseShape("R1-0528-Qwen3-8B", "qwen3", 36, 4096, 32, 8, 12288, 151936, head_dim=128, pre="qwen2")

# A deepseek2 small enough to run, with the V3/R1 layout (q-LoRA, sigmoid router, dense lead, shared expert).
TINY_MOE = DeepseekShape(
    "tiny-deepseek2-moe", n_layer=4, n_dense=1, n_embd=64, n_head=4, n_vocab=0, q_lora=32, kv_lora=32,
    nope=16, rope=8, v_dim=16, n_expert=8, n_expert_used=2, n_shared=1, n_ff=128, n_ff_exp=32, ctx=4096,
    n_group=0, topk_group=0, routed_scale=2.5,
)
# V2-Lite's layout (no q-LoRA, softmax router): llama.cpp recognises it by its 27 layers.
TINY_LITE = replace(
    TINY_MOE, name="tiny-deepseek2-lite", n_layer=27, q_lora=None, sigmoid=False, n_shared=2, routed_scale=1.0,
)
TINY_MTP = replace(TINY_MOE, name="tiny-deepseek2-mtp", nextn=1)


# -- tensor tables (ggml order: ne0 first) ----------------------------------------------------------------------

Tensor = tuple[str, tuple[int, ...]]


def deepseek_tensors(s: DeepseekShape, n_vocab: int) -> Iterator[Tensor]:
    """Every tensor llama.cpp's `llama_model_deepseek2::load_arch_tensors` creates, with its shape."""
    k_mla = s.nope + s.rope
    yield "token_embd.weight", (s.n_embd, n_vocab)
    yield "output_norm.weight", (s.n_embd,)
    yield "output.weight", (s.n_embd, n_vocab)
    for i in range(s.n_layer + s.nextn):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (s.n_embd,)
        if s.q_lora:
            yield p + "attn_q_a_norm.weight", (s.q_lora,)
            yield p + "attn_q_a.weight", (s.n_embd, s.q_lora)
            yield p + "attn_q_b.weight", (s.q_lora, s.n_head * k_mla)
        else:
            yield p + "attn_q.weight", (s.n_embd, s.n_head * k_mla)
        yield p + "attn_kv_a_norm.weight", (s.kv_lora,)
        yield p + "attn_kv_a_mqa.weight", (s.n_embd, s.kv_lora + s.rope)
        if s.legacy_mla:
            yield p + "attn_kv_b.weight", (s.kv_lora, s.n_head * (s.nope + s.v_dim))
        else:
            yield p + "attn_k_b.weight", (s.nope, s.kv_lora, s.n_head)
            yield p + "attn_v_b.weight", (s.kv_lora, s.v_dim, s.n_head)
        yield p + "attn_output.weight", (s.n_head * s.v_dim, s.n_embd)
        if s.index_heads:  # deepseek32: the lightning indexer of DeepSeek Sparse Attention
            yield p + "indexer.k_norm.weight", (s.index_dim,)
            yield p + "indexer.k_norm.bias", (s.index_dim,)
            yield p + "indexer.proj.weight", (s.n_embd, s.index_heads)
            yield p + "indexer.attn_k.weight", (s.n_embd, s.index_dim)
            yield p + "indexer.attn_q_b.weight", (s.q_lora or 0, s.index_heads * s.index_dim)
        yield p + "ffn_norm.weight", (s.n_embd,)
        if i < s.n_dense:
            yield p + "ffn_gate.weight", (s.n_embd, s.n_ff)
            yield p + "ffn_down.weight", (s.n_ff, s.n_embd)
            yield p + "ffn_up.weight", (s.n_embd, s.n_ff)
        else:
            yield p + "ffn_gate_inp.weight", (s.n_embd, s.n_expert)
            if s.sigmoid:
                yield p + "exp_probs_b.bias", (s.n_expert,)
            yield p + "ffn_gate_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert)
            yield p + "ffn_down_exps.weight", (s.n_ff_exp, s.n_embd, s.n_expert)
            yield p + "ffn_up_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert)
            sh = s.n_ff_exp * s.n_shared
            yield p + "ffn_gate_shexp.weight", (s.n_embd, sh)
            yield p + "ffn_down_shexp.weight", (sh, s.n_embd)
            yield p + "ffn_up_shexp.weight", (s.n_embd, sh)
        if i >= s.n_layer:
            yield p + "nextn.eh_proj.weight", (2 * s.n_embd, s.n_embd)
            yield p + "nextn.enorm.weight", (s.n_embd,)
            yield p + "nextn.hnorm.weight", (s.n_embd,)
            yield p + "nextn.shared_head_norm.weight", (s.n_embd,)


def dense_tensors(s: DenseShape, n_vocab: int) -> Iterator[Tensor]:
    hd = s.head_dim or s.n_embd // s.n_head
    yield "token_embd.weight", (s.n_embd, n_vocab)
    yield "output_norm.weight", (s.n_embd,)
    if not s.tied:
        yield "output.weight", (s.n_embd, n_vocab)
    if s.arch == "llama":
        yield "rope_freqs.weight", (hd // 2,)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (s.n_embd,)
        yield p + "attn_q.weight", (s.n_embd, s.n_head * hd)
        yield p + "attn_k.weight", (s.n_embd, s.n_head_kv * hd)
        yield p + "attn_v.weight", (s.n_embd, s.n_head_kv * hd)
        if s.arch == "qwen2":
            yield p + "attn_q.bias", (s.n_head * hd,)
            yield p + "attn_k.bias", (s.n_head_kv * hd,)
            yield p + "attn_v.bias", (s.n_head_kv * hd,)
        if s.arch == "qwen3":
            yield p + "attn_q_norm.weight", (hd,)
            yield p + "attn_k_norm.weight", (hd,)
        yield p + "attn_output.weight", (s.n_head * hd, s.n_embd)
        yield p + "ffn_norm.weight", (s.n_embd,)
        yield p + "ffn_gate.weight", (s.n_embd, s.n_ff)
        yield p + "ffn_up.weight", (s.n_embd, s.n_ff)
        yield p + "ffn_down.weight", (s.n_ff, s.n_embd)


class CustomShape(Protocol):
    """A layout with its own tensor table and keys (tests/inventory_dsv.py: DeepSeek-V4's `deepseek4`)."""

    name: str
    arch: str
    ctx: int
    n_embd: int
    n_head: int
    n_vocab: int
    pre: str

    def tensors(self, n_vocab: int) -> Iterator[Tensor]: ...

    def write_metadata(self, w: gguf.GGUFWriter, n_vocab: int) -> None: ...

    def source_type(self, name: str, ne: tuple[int, ...], default: Q) -> Q: ...


Shape = DeepseekShape | DenseShape | CustomShape


def tensors_of(shape: Shape, n_vocab: int) -> list[Tensor]:
    if isinstance(shape, DeepseekShape):
        return list(deepseek_tensors(shape, n_vocab))
    if isinstance(shape, DenseShape):
        return list(dense_tensors(shape, n_vocab))
    return list(shape.tensors(n_vocab))


def source_type(name: str, ne: tuple[int, ...], default: Q = Q.BF16, shape: Shape | None = None) -> Q:
    """The type a converter writes: 1-D tensors, the expert router and DSA's indexer.proj in F32, the rest in
    `default` (a custom layout decides for itself)."""
    if shape is not None and not isinstance(shape, (DeepseekShape, DenseShape)):
        return shape.source_type(name, ne, default)
    if len(ne) == 1 or "ffn_gate_inp" in name or "indexer.proj" in name:
        return Q.F32
    return default


# -- metadata -------------------------------------------------------------------------------------------------


def _write_metadata(w: gguf.GGUFWriter, shape: Shape, n_vocab: int, ftype: int) -> None:
    w.add_name(shape.name)
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if not isinstance(shape, (DeepseekShape, DenseShape)):
        shape.write_metadata(w, n_vocab)
        _write_padded_vocab(w, n_vocab, shape.pre)
        return
    w.add_context_length(shape.ctx)
    w.add_embedding_length(shape.n_embd)
    w.add_head_count(shape.n_head)
    w.add_layer_norm_rms_eps(1e-6)
    if isinstance(shape, DeepseekShape):
        s = shape
        w.add_block_count(s.n_layer + s.nextn)
        w.add_feed_forward_length(s.n_ff)
        w.add_head_count_kv(s.n_head if s.legacy_mla else 1)
        w.add_rope_freq_base(10000.0)
        w.add_expert_used_count(s.n_expert_used)
        if s.n_group:
            w.add_expert_group_count(s.n_group)
            w.add_expert_group_used_count(s.topk_group)
        w.add_leading_dense_block_count(s.n_dense)
        w.add_vocab_size(n_vocab)
        if s.q_lora:
            w.add_q_lora_rank(s.q_lora)
        w.add_kv_lora_rank(s.kv_lora)
        if s.legacy_mla:  # the old converter wrote plain multi-head sizes and no *_mla keys
            w.add_key_length(s.nope + s.rope)
            w.add_value_length(s.v_dim)
        else:
            w.add_key_length(s.kv_lora + s.rope)
            w.add_value_length(s.kv_lora)
            w.add_key_length_mla(s.nope + s.rope)
            w.add_value_length_mla(s.v_dim)
        w.add_expert_feed_forward_length(s.n_ff_exp)
        w.add_expert_count(s.n_expert)
        w.add_expert_shared_count(s.n_shared)
        w.add_expert_weights_scale(s.routed_scale)
        w.add_expert_weights_norm(s.sigmoid)
        w.add_expert_gating_func(
            gguf.ExpertGatingFuncType.SIGMOID if s.sigmoid else gguf.ExpertGatingFuncType.SOFTMAX
        )
        w.add_rope_dimension_count(s.rope)
        if s.nextn:
            w.add_nextn_predict_layers(s.nextn)
        if s.index_heads:
            w.add_uint32(f"{s.arch}.attention.indexer.head_count", s.index_heads)
            w.add_uint32(f"{s.arch}.attention.indexer.key_length", s.index_dim)
            w.add_uint32(f"{s.arch}.attention.indexer.top_k", s.index_topk)
    else:
        d = shape
        hd = d.head_dim or d.n_embd // d.n_head
        w.add_block_count(d.n_layer)
        w.add_feed_forward_length(d.n_ff)
        w.add_head_count_kv(d.n_head_kv)
        w.add_rope_freq_base(1000000.0 if d.arch != "llama" else 500000.0)
        if d.arch == "llama":
            w.add_rope_dimension_count(hd)
            w.add_vocab_size(n_vocab)
        if d.head_dim:
            w.add_key_length(hd)
            w.add_value_length(hd)
    _write_padded_vocab(w, n_vocab, shape.pre)


def _write_padded_vocab(w: gguf.GGUFWriter, n_vocab: int, pre: str) -> None:
    """The tests' byte-level BPE vocabulary padded to the model's size with `[PADn]` tokens (as the converter
    pads DeepSeek's own vocabulary), so token counts and embedding shapes match the real model."""
    vocab = build_vocab()
    tokens = list(vocab.tokens)
    types = list(vocab.token_types)
    if n_vocab < len(tokens):
        raise ValueError(f"n_vocab {n_vocab} is smaller than the test vocabulary ({len(tokens)})")
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [int(gguf.TokenType.UNUSED)] * (n_vocab - len(types))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(vocab.merges)
    w.add_bos_token_id(vocab.id(BOS))
    w.add_eos_token_id(vocab.id(EOS))
    w.add_pad_token_id(vocab.id(PAD))
    w.add_add_bos_token(True)
    w.add_chat_template(R1_TEMPLATE)


def vocab_size(shape: Shape) -> int:
    return shape.n_vocab or len(build_vocab().tokens)


# -- header-only (sparse) writer ------------------------------------------------------------------------------


def nbytes(qtype: Q, ne: tuple[int, ...]) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = 1
    for d in ne:
        n *= d
    if ne[0] % block:
        raise ValueError(f"ne0={ne[0]} is not a multiple of {qtype.name}'s block of {block}")
    return n // block * type_size


def write_header_only(
    path: Path,
    shape: Shape,
    types: dict[str, Q] | None = None,
    *,
    default: Q = Q.BF16,
    ftype: int = gguf.LlamaFileType.MOSTLY_BF16,
    split_max_size: int = 0,
) -> list[Path]:
    """Write a GGUF whose data section is a hole: real header, no weights. Returns the file(s) written
    (several `-0000i-of-0000N.gguf` parts when `split_max_size` is set, like the published R1 quants)."""
    n_vocab = vocab_size(shape)
    tensors = tensors_of(shape, n_vocab)
    types = types or {name: source_type(name, ne, default, shape) for name, ne in tensors}
    w = gguf.GGUFWriter(str(path), _arch_of(shape), split_max_size=split_max_size, dry_run=False)
    _write_metadata(w, shape, n_vocab, ftype)
    for name, ne in tensors:
        qtype = types[name]
        size = nbytes(qtype, ne)
        w.add_tensor_info(name, tuple(reversed(ne)), np.dtype(np.float32), size, raw_dtype=qtype)
    w.write_header_to_file(path=path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    written: list[Path] = []
    for fout, group in zip(w.fout or [], w.tensors):
        w.write_padding(fout, fout.tell())
        data = 0
        for ti in group.values():
            data += ti.nbytes
            data += (-data) % w.data_alignment
        end = fout.tell() + data
        fout.flush()
        os.ftruncate(fout.fileno(), end)  # a hole: no disk blocks are allocated for the weights
        written.append(Path(fout.name))
    w.close()
    return written


def _arch_of(shape: Shape) -> str:
    return shape.arch


# -- llama.cpp's own quantization mixes -------------------------------------------------------------------------

_TENSOR_LINE = re.compile(
    r"\]\s+(?P<name>\S+)\s+- \[[^\]]*\], type =\s*(?P<src>\S+), size =\s*[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((?P<dst>\S+)\))?"
)


def quantized_types(source: Path, ftype: int) -> dict[str, Q]:
    """Ask llama.cpp's quantizer (dry run: nothing read, nothing written) which type each tensor of `source` gets
    for `ftype` — the same mix `llama-quantize source out TYPE` would produce."""
    import llama_cpp

    chunks: list[str] = []

    @llama_cpp.llama_log_callback
    def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        chunks.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.dry_run = True
        params.nthread = 1
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(source).encode() + b".out", ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(ctypes.cast(None, llama_cpp.llama_log_callback), ctypes.c_void_p(0))
    if rc != 0:
        raise RuntimeError(f"llama.cpp dry-run quantize failed ({rc}): {''.join(chunks)[-2000:]}")
    out: dict[str, Q] = {}
    for m in _TENSOR_LINE.finditer("".join(chunks)):
        out[m["name"]] = Q[(m["dst"] or m["src"]).upper()]
    return out


def header_only_quant(
    directory: Path, shape: Shape, ftype: gguf.LlamaFileType, *, split_max_size: int = 0
) -> list[Path]:
    """A header-only GGUF of `shape` quantized to `ftype` with llama.cpp's own per-tensor type choices."""
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{shape.name}-BF16.gguf"
    if not source.exists():
        write_header_only(source, shape)
    types = quantized_types(source, int(ftype))
    quant = ftype.name.removeprefix("MOSTLY_")
    return write_header_only(
        directory / f"{shape.name}-{quant}.gguf", shape, types, ftype=int(ftype), split_max_size=split_max_size
    )


# -- tiny deepseek2 MoE with real data ---------------------------------------------------------------------------


def write_tiny_moe(path: Path, shape: DeepseekShape = TINY_MOE, seed: int = 0) -> Path:
    """A runnable `deepseek2` MoE (F32, random weights) with the R1 layout: q-LoRA, MLA split k_b/v_b, a dense
    first layer, routed + shared experts, sigmoid router with `exp_probs_b`."""
    rng = np.random.default_rng(seed)
    n_vocab = vocab_size(shape)
    tmp = path.with_name(path.name + ".part")
    w = gguf.GGUFWriter(str(tmp), "deepseek2")
    _write_metadata(w, shape, n_vocab, gguf.LlamaFileType.ALL_F32)
    for name, ne in tensors_of(shape, n_vocab):
        np_shape = tuple(reversed(ne))
        if len(ne) == 1:
            data = np.ones(np_shape, dtype=np.float32) if not name.endswith(".bias") else np.zeros(np_shape, np.float32)
        else:
            data = (rng.standard_normal(np_shape) * 0.1).astype(np.float32)
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


# -- llama.cpp's own memory numbers (no_alloc dry run) -----------------------------------------------------------

_MIB = 1024 * 1024


@dataclass(frozen=True)
class DryRun:
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    log: str
    state_bytes: int = 0  # deepseek4: the compressors' F32 state buffers (beside its KV caches)


def llama_dry_run(
    path: Path, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = True, *, swa_full: bool | None = None,
    mtp_context: bool = False,
) -> DryRun:
    """Load `path` with `no_alloc` (metadata only, allocations simulated) and create a context: llama.cpp reports
    the KV cache and compute buffer it *would* allocate on this (CPU-only) machine. `swa_full`: None keeps
    llama.cpp's default (a full-size sliding-window cache, as llama-cpp-python and localseek run it).
    `mtp_context`: load the MTP block and create the MTP context speculative decoding runs it in."""
    import llama_cpp

    chunks: list[str] = []

    @llama_cpp.llama_log_callback
    def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        chunks.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
    model = ctx = None
    try:
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        mp.no_alloc = True
        mp.n_gpu_layers = 0
        mp.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # no_alloc maps nothing
        mp.load_mtp = mtp_context
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
        if not model:
            raise RuntimeError("".join(chunks)[-2000:])
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, max(n_ubatch, 512), n_ubatch
        cp.n_threads = cp.n_threads_batch = 1
        cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else \
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if swa_full is not None:
            cp.swa_full = swa_full
        if mtp_context:
            cp.ctx_type = llama_cpp.LLAMA_CONTEXT_TYPE_MTP
        ctx = llama_cpp.llama_init_from_model(model, cp)
        if not ctx:
            raise RuntimeError("".join(chunks)[-2000:])
    finally:
        if ctx:
            llama_cpp.llama_free(ctx)
        if model:
            llama_cpp.llama_model_free(model)
        llama_cpp.llama_log_set(ctypes.cast(None, llama_cpp.llama_log_callback), ctypes.c_void_p(0))
    log = "".join(chunks)

    def mib(pattern: str) -> int:
        found = re.findall(pattern, log)
        return int(sum(float(x) for x in found) * _MIB)

    return DryRun(
        kv_bytes=mib(r"llama_kv_cache: size =\s*([\d.]+) MiB"),
        compute_bytes=mib(r"compute buffer size =\s*([\d.]+) MiB"),
        output_bytes=mib(r"output buffer size =\s*([\d.]+) MiB"),
        log=log,
        state_bytes=mib(r"state buffer size =\s*([\d.]+) MiB"),
    )


# -- full-size random models (for measurements) -------------------------------------------------------------------


def write_random_weights(path: Path, shape: DeepseekShape | DenseShape, seed: int = 0) -> Path:
    """A loadable GGUF of `shape` with seeded random F16 weights, written one tensor at a time (memory stays at
    one tensor). Used by bench/memory.py to measure real allocations; quantize it with llama.cpp afterwards."""
    rng = np.random.default_rng(seed)
    n_vocab = vocab_size(shape)
    tensors = tensors_of(shape, n_vocab)
    types = {name: source_type(name, ne, Q.F16) for name, ne in tensors}
    tmp = path.with_name(path.name + ".part")
    w = gguf.GGUFWriter(str(tmp), _arch_of(shape))
    _write_metadata(w, shape, n_vocab, gguf.LlamaFileType.MOSTLY_F16)
    for name, ne in tensors:
        dtype = np.float32 if types[name] == Q.F32 else np.float16
        w.add_tensor_info(name, tuple(reversed(ne)), np.dtype(dtype), nbytes(types[name], ne), raw_dtype=types[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, ne in tensors:
        np_shape = tuple(reversed(ne))
        if len(ne) == 1:
            data = np.ones(np_shape, np.float32) if not name.endswith(".bias") else np.zeros(np_shape, np.float32)
        else:
            scale = 1.0 / np.sqrt(ne[0])
            data = (rng.standard_normal(np_shape, dtype=np.float32) * scale).astype(types[name] == Q.F32 and
                                                                                    np.float32 or np.float16)
        w.write_tensor_data(data)
    w.close()
    tmp.replace(path)
    return path


def quantize(source: Path, dest: Path, ftype: int, threads: int = 2) -> Path:
    """llama.cpp's own quantizer (the real thing, not a dry run)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    tmp = dest.with_name(dest.name + ".part")
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama.cpp quantize failed ({rc})")
    tmp.replace(dest)
    return dest
