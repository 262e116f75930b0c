"""Tiny, deterministic Hugging Face checkpoints that look exactly like DeepSeek's real ones, only small.

Layouts (tensor names and config keys are the standard Hugging Face ones, so real checkpoints and these
share one contract):
- `deepseek_v3`: `DeepseekV3ForCausalLM` — FP8 e4m3 linear weights with 128×128 `weight_scale_inv` blocks
  (ragged edge blocks included), MLA with q-LoRA, MoE with routed + shared experts, sigmoid router with
  `e_score_correction_bias`, first layer dense, ONE MTP layer at index `num_hidden_layers`, sharded
  safetensors with `model.safetensors.index.json` (the experts of one layer span two shards).
- `deepseek_v32`: `DeepseekV32ForCausalLM` — V3's layout (UE8M0 power-of-two block scales) plus the lightning
  indexer of V3.2's sparse attention in every layer (MTP layer included).
- `deepseek_v4`: `DeepseekV4ForCausalLM` — V4's own tensor names, FP8 with E8M0 scales, MXFP4 experts,
  hyper-connections, compressors + indexer, a hash-routed layer, one MTP block (`mtp.0.*`), no chat template.
- `deepseek_v2_lite`: `DeepseekV2ForCausalLM` — BF16, no q-LoRA (plain `q_proj`), softmax router, 27 layers
  (llama.cpp recognises the V2-Lite layout by its layer count).
- `qwen2`: `Qwen2ForCausalLM` (R1-Distill-Qwen) — BF16, q/k/v biases.
- `llama`: `LlamaForCausalLM` (R1-Distill-Llama) — BF16, llama3 RoPE scaling.
- `qwen3`: `Qwen3ForCausalLM` (R1-0528-Qwen3) — BF16, per-head q/k RMS norms.

The tokenizer is `factory.build_vocab()` written as `tokenizer.json` (byte-level BPE, DeepSeek special tokens)
with each family's own pre-tokenizer, plus `tokenizer_config.json` (R1 chat template) and
`generation_config.json`.

`reference_tensors()` reads a written checkpoint back with its own tiny safetensors reader and its own FP8
decoder (arithmetic, not a lookup table), giving the float32 values a conversion must reproduce.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from factory import BOS, EOS, PAD, R1_TEMPLATE, R1_TEMPLATE_THINK, build_vocab

FP8_MAX = 448.0
BLOCK = 128

# -- pre-tokenizers, as the real tokenizer.json files declare them --------------------------------------
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


PRE_TOKENIZERS: dict[str, dict] = {
    "deepseek-v3": {
        "type": "Sequence",
        "pretokenizers": [
            _split("\\p{N}{1,3}"),
            _split("[一-龥\u3040-ゟ゠-ヿ]+"),
            _split(
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
                " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
            ),
            _BYTE_LEVEL,
        ],
    },
    "deepseek-llm": {
        "type": "Sequence",
        "pretokenizers": [
            _split("[\r\n]"),
            _split(
                "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕ]+"
            ),
            _split("\\s?[!-/:-~！-／：-～‘-‟\u3000-。]+"),
            _split("\\s+$"),
            _split("[一-龥ࠀ-一가-퟿]+"),
            {"type": "Digits", "individual_digits": True},
            _BYTE_LEVEL,
        ],
    },
    "qwen2": {
        "type": "Sequence",
        "pretokenizers": [
            _split(
                "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
                " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
            ),
            _BYTE_LEVEL,
        ],
    },
    "llama-bpe": {
        "type": "Sequence",
        "pretokenizers": [
            _split(
                "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
                " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
            ),
            _BYTE_LEVEL,
        ],
    },
}


# -- e4m3fn, implemented arithmetically (independent of quantize/fp8.py's lookup table) -----------------
def fp8_e4m3_decode(codes: np.ndarray) -> np.ndarray:
    """Decode e4m3fn bytes: 1 sign, 4 exponent bits (bias 7), 3 mantissa bits, 0x7F/0xFF are NaN."""
    c = codes.astype(np.int32)
    sign = np.where(c & 0x80, -1.0, 1.0)
    exp = (c >> 3) & 0xF
    man = (c & 0x7).astype(np.float64)
    normal = (1.0 + man / 8.0) * np.exp2(exp.astype(np.float64) - 7.0)
    subnormal = (man / 8.0) * 2.0**-6
    value = sign * np.where(exp == 0, subnormal, normal)
    value = np.where((exp == 15) & ((c & 7) == 7), np.nan, value)
    return value.astype(np.float32)


_POSITIVE_CODES = np.arange(0, 0x7F, dtype=np.uint8)  # 0x00..0x7E: every finite non-negative value, ascending
_POSITIVE_VALUES = fp8_e4m3_decode(_POSITIVE_CODES)


def fp8_e4m3_encode(x: np.ndarray) -> np.ndarray:
    """Round float32 values (already within ±448) to the nearest e4m3fn code."""
    mag = np.minimum(np.abs(x), FP8_MAX).astype(np.float32)
    hi = np.clip(np.searchsorted(_POSITIVE_VALUES, mag), 1, len(_POSITIVE_VALUES) - 1)
    lo = hi - 1
    pick = np.where(mag - _POSITIVE_VALUES[lo] <= _POSITIVE_VALUES[hi] - mag, lo, hi)
    codes = _POSITIVE_CODES[pick]
    return np.where(x < 0, codes | 0x80, codes).astype(np.uint8)


def fp8_block_quantize(w: np.ndarray, *, ue8m0: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float32 [out, in] → (e4m3 codes, float32 scale_inv [ceil(out/128), ceil(in/128)]), DeepSeek's
    recipe. `ue8m0`: scales rounded up to powers of two (V3.1+'s `scale_fmt: ue8m0`)."""
    rows, cols = w.shape
    br, bc = math.ceil(rows / BLOCK), math.ceil(cols / BLOCK)
    codes = np.empty(w.shape, dtype=np.uint8)
    scale = np.empty((br, bc), dtype=np.float32)
    for i in range(br):
        for j in range(bc):
            blk = w[i * BLOCK : (i + 1) * BLOCK, j * BLOCK : (j + 1) * BLOCK]
            s = np.float32(max(float(np.abs(blk).max()), 1e-12) / FP8_MAX)
            if ue8m0:
                s = np.float32(2.0 ** math.ceil(math.log2(s)))
            scale[i, j] = s
            codes[i * BLOCK : (i + 1) * BLOCK, j * BLOCK : (j + 1) * BLOCK] = fp8_e4m3_encode(blk / s)
    return codes, scale


def fp8_block_dequantize(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    full = np.repeat(np.repeat(scale, BLOCK, axis=0), BLOCK, axis=1)[: codes.shape[0], : codes.shape[1]]
    return fp8_e4m3_decode(codes) * full


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


# -- safetensors, written and read by hand ---------------------------------------------------------------
_DTYPES = {
    "F8_E4M3": np.uint8,
    "F8_E8M0": np.uint8,
    "I8": np.uint8,
    "I64": np.int64,
    "BF16": np.uint16,
    "F16": np.float16,
    "F32": np.float32,
}


@dataclass
class _Tensor:
    dtype: str
    array: np.ndarray  # raw storage: uint8 for F8_E4M3, uint16 bits for BF16


def write_safetensors(
    path: Path, tensors: dict[str, _Tensor], metadata: dict[str, str] | None = None
) -> None:
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, t in tensors.items():
        n = t.array.nbytes
        header[name] = {"dtype": t.dtype, "shape": list(t.array.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t.array).tobytes())


def read_safetensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + b : 8 + n + e], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = (info["dtype"], arr)
    return out


def e8m0_decode(b: np.ndarray) -> np.ndarray:
    return np.exp2(b.astype(np.float64) - 127.0).astype(np.float32)


def fp4_e2m1_decode(codes: np.ndarray) -> np.ndarray:
    """E2M1: 1 sign, 2 exponent bits (bias 1), 1 mantissa bit; exponent 0 is subnormal (0 or 0.5)."""
    c = codes.astype(np.int32)
    exp, man = (c >> 1) & 3, (c & 1).astype(np.float64)
    mag = np.where(exp == 0, man * 0.5, (1.0 + man / 2.0) * np.exp2(exp - 1.0))
    return np.where(c & 8, -mag, mag).astype(np.float32)


_FP4_VALUES = fp4_e2m1_decode(np.arange(8))  # 0, 0.5, 1, 1.5, 2, 3, 4, 6


def mxfp4_quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 [out, in] → (I8 packed E2M1 codes [out, in/2], E8M0 scales [out, in/32]): the OCP MX recipe
    (scale 2^(floor(log2 amax) − 2), values rounded to the nearest E2M1, clipped at ±6)."""
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // 32, 32)
    amax = np.maximum(np.abs(blocks).max(axis=2), 1e-30)
    e = np.clip(np.floor(np.log2(amax)) - 2 + 127, 0, 254).astype(np.uint8)
    x = np.clip(np.abs(blocks) / e8m0_decode(e)[:, :, None], 0, 6)
    codes = np.abs(x[..., None] - _FP4_VALUES).argmin(axis=-1).astype(np.uint8)
    codes |= np.where(blocks < 0, 8, 0).astype(np.uint8)
    codes = codes.reshape(rows, cols)
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8), e


def mxfp4_dequantize(packed: np.ndarray, scale: np.ndarray) -> np.ndarray:
    codes = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.uint8)
    codes[:, 0::2], codes[:, 1::2] = packed & 15, packed >> 4
    return fp4_e2m1_decode(codes) * np.repeat(e8m0_decode(scale), 32, axis=1)


def reference_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    """Every checkpoint tensor as the float32 value a conversion must reproduce (FP8 × block scale applied,
    MXFP4 decoded; the `weight_scale_inv` / `scale` tensors themselves are folded in and not returned)."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    raw: dict[str, tuple[str, np.ndarray]] = {}
    for f in files:
        raw.update(read_safetensors(model_dir / f))
    out = {}
    for name, (dtype, arr) in raw.items():
        if name.endswith((".weight_scale_inv", ".scale")):
            continue
        base = name[: -len("weight")]
        if dtype == "F8_E4M3" and base + "scale" in raw:  # V4: E8M0 block scales
            out[name] = fp8_block_dequantize(arr, e8m0_decode(raw[base + "scale"][1]))
        elif dtype == "F8_E4M3":
            out[name] = fp8_block_dequantize(arr, raw[base + "weight_scale_inv"][1])
        elif dtype == "I8":  # V4: MXFP4 experts
            out[name] = mxfp4_dequantize(arr, raw[base + "scale"][1])
        elif dtype == "BF16":
            out[name] = from_bf16_bits(arr)
        else:
            out[name] = arr.astype(np.float32)
    return out


# -- tokenizer files --------------------------------------------------------------------------------------
def write_tokenizer(model_dir: Path, pre: str, *, think_in_prompt: bool = True, bos: bool = True) -> None:
    vocab = build_vocab()
    specials = {vocab.tokens[i] for i, t in enumerate(vocab.token_types) if t != 1}
    control = {vocab.tokens[i] for i, t in enumerate(vocab.token_types) if t == 3}
    added = [
        {
            "id": vocab.id(tok),
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": tok in control,
        }
        for tok in vocab.tokens
        if tok in specials
    ]
    model_vocab = {tok: i for i, tok in enumerate(vocab.tokens)}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": BOS, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": BOS, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {BOS: {"id": BOS, "ids": [vocab.id(BOS)], "tokens": [BOS]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": model_vocab,
            "merges": vocab.merges,
        },
    }
    (model_dir / "tokenizer.json").write_text(
        json.dumps(tokenizer, ensure_ascii=False, indent=1), encoding="utf-8"
    )

    def tok(content: str) -> dict:
        return {
            "__type": "AddedToken",
            "content": content,
            "lstrip": False,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
        }

    config = {
        "add_bos_token": bos,
        "add_eos_token": False,
        "bos_token": tok(BOS),
        "eos_token": tok(EOS),
        "pad_token": tok(PAD),
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 16384,
        "sp_model_kwargs": {},
        "unk_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": R1_TEMPLATE_THINK if think_in_prompt else R1_TEMPLATE,
    }
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    generation = {
        "_from_model_config": True,
        "bos_token_id": vocab.id(BOS),
        "eos_token_id": vocab.id(EOS),
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.46.3",
    }
    (model_dir / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")


# -- checkpoints --------------------------------------------------------------------------------------------
@dataclass
class _Builder:
    """Collects tensors in order, then writes them as one or more shards with an index."""

    seed: int
    fp8: bool = False
    ue8m0: bool = False
    tensors: dict[str, _Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def linear(
        self, name: str, out_f: int, in_f: int, *, fp8: bool | None = None, std: float | None = None
    ) -> None:
        w = (self.rng.standard_normal((out_f, in_f)) * (std or 1.0 / math.sqrt(in_f))).astype(np.float32)
        if self.fp8 if fp8 is None else fp8:
            codes, scale = fp8_block_quantize(w, ue8m0=self.ue8m0)
            self.tensors[name] = _Tensor("F8_E4M3", codes)
            self.tensors[name[: -len("weight")] + "weight_scale_inv"] = _Tensor("F32", scale)
        else:
            self.tensors[name] = _Tensor("BF16", to_bf16_bits(w))

    def norm(self, name: str, n: int) -> None:
        w = (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32)
        self.tensors[name] = _Tensor("BF16", to_bf16_bits(w))

    def vector(self, name: str, n: int, *, std: float = 0.02, dtype: str = "BF16") -> None:
        v = (self.rng.standard_normal(n) * std).astype(np.float32)
        self.tensors[name] = _Tensor(dtype, to_bf16_bits(v) if dtype == "BF16" else v)

    def embedding(self, name: str, n_vocab: int, n_embd: int) -> None:
        w = self.rng.standard_normal((n_vocab, n_embd)).astype(np.float32)
        self.tensors[name] = _Tensor("BF16", to_bf16_bits(w))

    def write(self, model_dir: Path, n_shards: int) -> None:
        names = list(self.tensors)
        if n_shards <= 1:
            write_safetensors(model_dir / "model.safetensors", self.tensors)
            return
        per = math.ceil(len(names) / n_shards)
        weight_map, total = {}, 0
        for s in range(n_shards):
            part = {n: self.tensors[n] for n in names[s * per : (s + 1) * per]}
            fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
            write_safetensors(model_dir / fname, part)
            for n, t in part.items():
                weight_map[n] = fname
                total += t.array.nbytes
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


@dataclass(frozen=True)
class DeepseekDims:
    n_layer: int = 2
    hidden: int = 256
    n_head: int = 4
    q_lora_rank: int | None = 192  # ragged: one full and one half 128-block
    kv_lora_rank: int = 128
    qk_nope: int = 32
    qk_rope: int = 16
    v_head: int = 32
    intermediate: int = 384
    moe_intermediate: int = 192  # ragged
    n_routed: int = 4
    n_shared: int = 1
    n_used: int = 2
    first_dense: int = 1
    n_group: int = 2
    topk_group: int = 1
    vocab_size: int = 448  # padded beyond the tokenizer's 415 tokens, as the real 129280 is
    # V3.2's lightning indexer (0 heads: none); the real model has 64 heads of 128, top-k 2048
    index_n_heads: int = 0
    index_head_dim: int = 64
    index_topk: int = 8


V3_DIMS = DeepseekDims()
V32_DIMS = DeepseekDims(index_n_heads=4)
V2_LITE_DIMS = DeepseekDims(
    n_layer=27,
    hidden=128,
    n_head=2,
    q_lora_rank=None,
    kv_lora_rank=64,
    qk_nope=32,
    qk_rope=16,
    v_head=32,
    intermediate=256,
    moe_intermediate=64,
    n_routed=4,
    n_shared=2,
    n_used=2,
    first_dense=1,
    n_group=1,
    topk_group=1,
    vocab_size=448,
)


def _deepseek_layer(b: _Builder, p: str, d: DeepseekDims, layer: int, *, sigmoid_router: bool) -> None:
    b.norm(p + "input_layernorm.weight", d.hidden)
    qk_head = d.qk_nope + d.qk_rope
    if d.q_lora_rank:
        b.linear(p + "self_attn.q_a_proj.weight", d.q_lora_rank, d.hidden)
        b.norm(p + "self_attn.q_a_layernorm.weight", d.q_lora_rank)
        b.linear(p + "self_attn.q_b_proj.weight", d.n_head * qk_head, d.q_lora_rank)
    else:
        b.linear(p + "self_attn.q_proj.weight", d.n_head * qk_head, d.hidden)
    b.linear(p + "self_attn.kv_a_proj_with_mqa.weight", d.kv_lora_rank + d.qk_rope, d.hidden)
    b.norm(p + "self_attn.kv_a_layernorm.weight", d.kv_lora_rank)
    b.linear(p + "self_attn.kv_b_proj.weight", d.n_head * (d.qk_nope + d.v_head), d.kv_lora_rank)
    b.linear(p + "self_attn.o_proj.weight", d.hidden, d.n_head * d.v_head)
    if d.index_n_heads:  # V3.2: FP8 q/k projections, F32 LayerNorm with bias, BF16 head-weight projection
        b.linear(p + "self_attn.indexer.wq_b.weight", d.index_n_heads * d.index_head_dim, d.q_lora_rank)
        b.linear(p + "self_attn.indexer.wk.weight", d.index_head_dim, d.hidden)
        b.vector(p + "self_attn.indexer.k_norm.weight", d.index_head_dim, std=0.1, dtype="F32")
        b.tensors[p + "self_attn.indexer.k_norm.weight"].array += 1.0
        b.vector(p + "self_attn.indexer.k_norm.bias", d.index_head_dim, std=0.05, dtype="F32")
        b.linear(p + "self_attn.indexer.weights_proj.weight", d.index_n_heads, d.hidden, fp8=False)
    b.norm(p + "post_attention_layernorm.weight", d.hidden)
    if layer < d.first_dense:
        b.linear(p + "mlp.gate_proj.weight", d.intermediate, d.hidden)
        b.linear(p + "mlp.up_proj.weight", d.intermediate, d.hidden)
        b.linear(p + "mlp.down_proj.weight", d.hidden, d.intermediate)
        return
    b.linear(p + "mlp.gate.weight", d.n_routed, d.hidden, fp8=False)
    if sigmoid_router:
        b.vector(p + "mlp.gate.e_score_correction_bias", d.n_routed, std=0.05, dtype="F32")
    for e in range(d.n_routed):
        b.linear(p + f"mlp.experts.{e}.gate_proj.weight", d.moe_intermediate, d.hidden)
        b.linear(p + f"mlp.experts.{e}.up_proj.weight", d.moe_intermediate, d.hidden)
        b.linear(p + f"mlp.experts.{e}.down_proj.weight", d.hidden, d.moe_intermediate)
    shared = d.moe_intermediate * d.n_shared
    b.linear(p + "mlp.shared_experts.gate_proj.weight", shared, d.hidden)
    b.linear(p + "mlp.shared_experts.up_proj.weight", shared, d.hidden)
    b.linear(p + "mlp.shared_experts.down_proj.weight", d.hidden, shared)


def write_deepseek_v3(
    model_dir: Path,
    *,
    seed: int = 0,
    dims: DeepseekDims = V3_DIMS,
    mtp: bool = True,
    n_shards: int = 3,
    fp8: bool = True,
    ue8m0: bool = False,
) -> Path:
    """DeepSeek-V3/R1 layout: FP8 blocks, MLA + q-LoRA, MoE with sigmoid router, one MTP layer, sharded."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    d = dims
    b = _Builder(seed, fp8=fp8, ue8m0=ue8m0)
    b.embedding("model.embed_tokens.weight", d.vocab_size, d.hidden)
    for i in range(d.n_layer + (1 if mtp else 0)):
        p = f"model.layers.{i}."
        if i == d.n_layer:  # the MTP module: its own embedding/head plus a full (MoE) decoder layer
            b.embedding(p + "embed_tokens.weight", d.vocab_size, d.hidden)
            b.norm(p + "enorm.weight", d.hidden)
            b.norm(p + "hnorm.weight", d.hidden)
            b.linear(p + "eh_proj.weight", d.hidden, 2 * d.hidden)
            b.norm(p + "shared_head.norm.weight", d.hidden)
            b.linear(p + "shared_head.head.weight", d.vocab_size, d.hidden, fp8=False)
        _deepseek_layer(b, p, d, i, sigmoid_router=True)
    b.norm("model.norm.weight", d.hidden)
    b.linear("lm_head.weight", d.vocab_size, d.hidden, fp8=False)
    b.write(model_dir, n_shards)
    config = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": build_vocab().id(BOS),
        "eos_token_id": build_vocab().id(EOS),
        "ep_size": 1,
        "first_k_dense_replace": d.first_dense,
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "initializer_range": 0.02,
        "intermediate_size": d.intermediate,
        "kv_lora_rank": d.kv_lora_rank,
        "max_position_embeddings": 4096,
        "moe_intermediate_size": d.moe_intermediate,
        "moe_layer_freq": 1,
        "n_group": d.n_group,
        "n_routed_experts": d.n_routed,
        "n_shared_experts": d.n_shared,
        "norm_topk_prob": True,
        "num_attention_heads": d.n_head,
        "num_experts_per_tok": d.n_used,
        "num_hidden_layers": d.n_layer,
        "num_key_value_heads": d.n_head,
        "num_nextn_predict_layers": 1 if mtp else 0,
        "q_lora_rank": d.q_lora_rank,
        "qk_nope_head_dim": d.qk_nope,
        "qk_rope_head_dim": d.qk_rope,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 4,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 1024,
            "type": "yarn",
        },
        "rope_theta": 10000,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": d.topk_group,
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": True,
        "v_head_dim": d.v_head,
        "vocab_size": d.vocab_size,
    }
    if fp8:
        config["quantization_config"] = {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [BLOCK, BLOCK],
        }
        if ue8m0:
            config["quantization_config"]["scale_fmt"] = "ue8m0"
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(model_dir, "deepseek-v3")
    return model_dir


def write_deepseek_v32(
    model_dir: Path, *, seed: int = 5, dims: DeepseekDims = V32_DIMS, mtp: bool = True, n_shards: int = 3
) -> Path:
    """DeepSeek-V3.2(-Exp) layout (`DeepseekV32ForCausalLM`): V3's FP8 layout with power-of-two block scales
    (`scale_fmt: ue8m0`), plus the lightning indexer of its sparse attention in every layer, MTP layer
    included (`self_attn.indexer.{wq_b,wk}` FP8, `k_norm` LayerNorm weight+bias F32, `weights_proj` BF16) and
    config.json's `index_n_heads`, `index_head_dim`, `index_topk`."""
    model_dir = write_deepseek_v3(model_dir, seed=seed, dims=dims, mtp=mtp, n_shards=n_shards, ue8m0=True)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(
        {
            "architectures": ["DeepseekV32ForCausalLM"],
            "model_type": "deepseek_v32",
            "index_head_dim": dims.index_head_dim,
            "index_n_heads": dims.index_n_heads,
            "index_topk": dims.index_topk,
            "transformers_version": "4.44.2",
        }
    )
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    return model_dir


def write_deepseek_v2_lite(
    model_dir: Path, *, seed: int = 1, dims: DeepseekDims = V2_LITE_DIMS, n_shards: int = 2
) -> Path:
    """DeepSeek-V2-Lite layout: BF16, no q-LoRA, softmax router, 27 layers, YaRN."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    d = dims
    b = _Builder(seed)
    b.embedding("model.embed_tokens.weight", d.vocab_size, d.hidden)
    for i in range(d.n_layer):
        _deepseek_layer(b, f"model.layers.{i}.", d, i, sigmoid_router=False)
    b.norm("model.norm.weight", d.hidden)
    b.linear("lm_head.weight", d.vocab_size, d.hidden)
    b.write(model_dir, n_shards)
    config = {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": build_vocab().id(BOS),
        "eos_token_id": build_vocab().id(EOS),
        "first_k_dense_replace": d.first_dense,
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "initializer_range": 0.02,
        "intermediate_size": d.intermediate,
        "kv_lora_rank": d.kv_lora_rank,
        "max_position_embeddings": 4096,
        "moe_intermediate_size": d.moe_intermediate,
        "moe_layer_freq": 1,
        "n_group": d.n_group,
        "n_routed_experts": d.n_routed,
        "n_shared_experts": d.n_shared,
        "norm_topk_prob": False,
        "num_attention_heads": d.n_head,
        "num_experts_per_tok": d.n_used,
        "num_hidden_layers": d.n_layer,
        "num_key_value_heads": d.n_head,
        "q_lora_rank": None,
        "qk_nope_head_dim": d.qk_nope,
        "qk_rope_head_dim": d.qk_rope,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 4,
            "mscale": 0.707,
            "mscale_all_dim": 0.707,
            "original_max_position_embeddings": 1024,
            "type": "yarn",
        },
        "rope_theta": 10000,
        "routed_scaling_factor": 1.0,
        "scoring_func": "softmax",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": d.topk_group,
        "topk_method": "greedy",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": True,
        "v_head_dim": d.v_head,
        "vocab_size": d.vocab_size,
        "aux_loss_alpha": 0.001,
    }
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(model_dir, "deepseek-llm", think_in_prompt=False)
    return model_dir


@dataclass(frozen=True)
class V4Dims:
    """DeepSeek-V4(-Flash) shapes, small. The real Flash: 43 layers, hidden 4096, 64 heads of 512 (rope 64),
    q-LoRA 1024, 8 output groups of LoRA 1024, 256 experts of 2048 (6 used, 1 shared), 3 hash layers,
    compress ratios [0, 0, 4, 128, 4, 128, …, 4, 0] (the last one is the MTP layer's), sliding window 128,
    indexer 64 heads of 128 (top-k 512), 4 hyper-connection streams."""

    n_layer: int = 4
    hidden: int = 256
    n_head: int = 4
    head_dim: int = 128  # ≠ index_head_dim, as in the real model (llama.cpp treats equal sizes specially)
    qk_rope: int = 16
    q_lora_rank: int = 192  # ragged: one full and one half 128-block
    o_groups: int = 2
    o_lora_rank: int = 64
    moe_intermediate: int = 256
    n_routed: int = 4
    n_shared: int = 1
    n_used: int = 2
    n_hash_layers: int = 1
    compress_ratios: tuple[int, ...] = (0, 4, 128, 4, 0)  # per layer, then the MTP layer
    sliding_window: int = 8
    index_n_heads: int = 4
    index_head_dim: int = 64
    index_topk: int = 2
    hc_mult: int = 4
    vocab_size: int = 448


V4_DIMS = V4Dims()


@dataclass
class _V4Builder(_Builder):
    """V4's own tensor names and formats: FP8 with E8M0 `scale` (power-of-two 128×128 blocks), MXFP4 experts
    (I8 packed E2M1 pairs + E8M0 `scale` per 32 values), F32 hyper-connection mixers and sinks."""

    def e4m3(self, name: str, out_f: int, in_f: int) -> None:
        w = (self.rng.standard_normal((out_f, in_f)) / math.sqrt(in_f)).astype(np.float32)
        codes, scale = fp8_block_quantize(w, ue8m0=True)
        self.tensors[name + ".weight"] = _Tensor("F8_E4M3", codes)
        self.tensors[name + ".scale"] = _Tensor("F8_E8M0", (np.log2(scale) + 127).astype(np.uint8))

    def fp4(self, name: str, out_f: int, in_f: int) -> None:
        w = (self.rng.standard_normal((out_f, in_f)) / math.sqrt(in_f)).astype(np.float32)
        packed, scale = mxfp4_quantize(w)
        self.tensors[name + ".weight"] = _Tensor("I8", packed)
        self.tensors[name + ".scale"] = _Tensor("F8_E8M0", scale)

    def f32(self, name: str, *shape: int, std: float = 0.1, mean: float = 0.0) -> None:
        self.tensors[name] = _Tensor("F32", (mean + self.rng.standard_normal(shape) * std).astype(np.float32))

    def bf16(self, name: str, out_f: int, in_f: int) -> None:
        self.linear(name, out_f, in_f, fp8=False)


def _v4_layer(b: _V4Builder, p: str, d: V4Dims, ratio: int, *, hash_routed: bool, vocab: int) -> None:
    h, hc = d.hidden, d.hc_mult
    mix = (2 + hc) * hc
    b.norm(p + "attn_norm.weight", h)
    b.norm(p + "ffn_norm.weight", h)
    for part in ("attn", "ffn"):
        b.f32(p + f"hc_{part}_fn", mix, hc * h, std=0.02)
        b.f32(p + f"hc_{part}_base", mix, std=0.1)
        b.f32(p + f"hc_{part}_scale", 3, std=0.1, mean=1.0)
    a = p + "attn."
    b.f32(a + "attn_sink", d.n_head, std=0.5)
    b.e4m3(a + "wq_a", d.q_lora_rank, h)
    b.norm(a + "q_norm.weight", d.q_lora_rank)
    b.e4m3(a + "wq_b", d.n_head * d.head_dim, d.q_lora_rank)
    b.e4m3(a + "wkv", d.head_dim, h)
    b.norm(a + "kv_norm.weight", d.head_dim)
    b.e4m3(a + "wo_a", d.o_groups * d.o_lora_rank, d.n_head * d.head_dim // d.o_groups)
    b.e4m3(a + "wo_b", h, d.o_groups * d.o_lora_rank)
    if ratio:
        coff = 2 if ratio == 4 else 1
        b.f32(a + "compressor.ape", ratio, coff * d.head_dim, std=0.02)
        b.bf16(a + "compressor.wkv.weight", coff * d.head_dim, h)
        b.bf16(a + "compressor.wgate.weight", coff * d.head_dim, h)
        b.norm(a + "compressor.norm.weight", d.head_dim)
    if ratio == 4:  # the lightning indexer works on the 4× compressed cache
        b.e4m3(a + "indexer.wq_b", d.index_n_heads * d.index_head_dim, d.q_lora_rank)
        b.bf16(a + "indexer.weights_proj.weight", d.index_n_heads, h)
        b.f32(a + "indexer.compressor.ape", ratio, 2 * d.index_head_dim, std=0.02)
        b.bf16(a + "indexer.compressor.wkv.weight", 2 * d.index_head_dim, h)
        b.bf16(a + "indexer.compressor.wgate.weight", 2 * d.index_head_dim, h)
        b.norm(a + "indexer.compressor.norm.weight", d.index_head_dim)
    f = p + "ffn."
    b.bf16(f + "gate.weight", d.n_routed, h)
    b.f32(f + "gate.bias", d.n_routed, std=0.05)  # hash layers ship it too; it is unused there
    if hash_routed:  # token id → the experts it always uses
        table = np.stack([b.rng.permutation(d.n_routed)[: d.n_used] for _ in range(vocab)])
        b.tensors[f + "gate.tid2eid"] = _Tensor("I64", table.astype(np.int64))
    for e in range(d.n_routed):
        b.fp4(f + f"experts.{e}.w1", d.moe_intermediate, h)
        b.fp4(f + f"experts.{e}.w2", h, d.moe_intermediate)
        b.fp4(f + f"experts.{e}.w3", d.moe_intermediate, h)
    s = d.moe_intermediate * d.n_shared
    b.e4m3(f + "shared_experts.w1", s, h)
    b.e4m3(f + "shared_experts.w2", h, s)
    b.e4m3(f + "shared_experts.w3", s, h)


def write_deepseek_v4(
    model_dir: Path, *, seed: int = 6, dims: V4Dims = V4_DIMS, mtp: bool = True, n_shards: int = 3
) -> Path:
    """DeepSeek-V4(-Flash) layout (`DeepseekV4ForCausalLM`), with the checkpoint's own tensor names
    (`embed`, `layers.N.attn.wq_a`, `layers.N.ffn.experts.E.w1`, `mtp.0.…`, no `model.` prefix): FP8 weights
    with E8M0 block scales, MXFP4 routed experts, BF16 embeddings/head/router/compressors, F32 hyper-connection
    mixers, attention sinks and compressor position biases, a hash-routed first layer (I64 token → expert
    table), per-layer compressors (ratio 4 with an indexer, 128 without), and one MTP block (`mtp.0.*`: e/h
    projections, norms, its own hyper-connection head and a full layer). No chat template in
    tokenizer_config.json, as V4 ships."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    d = dims
    assert len(d.compress_ratios) == d.n_layer + 1
    b = _V4Builder(seed)
    h, hc = d.hidden, d.hc_mult
    b.embedding("embed.weight", d.vocab_size, h)
    for i in range(d.n_layer):
        _v4_layer(
            b, f"layers.{i}.", d, d.compress_ratios[i], hash_routed=i < d.n_hash_layers, vocab=d.vocab_size
        )
    if mtp:
        p = "mtp.0."
        b.e4m3(p + "e_proj", h, h)
        b.e4m3(p + "h_proj", h, h)
        b.norm(p + "enorm.weight", h)
        b.norm(p + "hnorm.weight", h)
        b.norm(p + "norm.weight", h)
        b.f32(p + "hc_head_fn", hc, hc * h, std=0.02)
        b.f32(p + "hc_head_base", hc, std=0.1)
        b.f32(p + "hc_head_scale", 1, std=0.1, mean=1.0)
        _v4_layer(b, p, d, d.compress_ratios[d.n_layer], hash_routed=False, vocab=d.vocab_size)
    b.norm("norm.weight", h)
    b.bf16("head.weight", d.vocab_size, h)
    b.f32("hc_head_fn", hc, hc * h, std=0.02)
    b.f32("hc_head_base", hc, std=0.1)
    b.f32("hc_head_scale", 1, std=0.1, mean=1.0)
    b.write(model_dir, n_shards)
    vocab = build_vocab()
    config = {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": vocab.id(BOS),
        "eos_token_id": vocab.id(EOS),
        "compress_ratios": list(d.compress_ratios),
        "compress_rope_theta": 160000,
        "expert_dtype": "fp4",
        "hc_eps": 1e-06,
        "hc_mult": hc,
        "hc_sinkhorn_iters": 20,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "hidden_size": h,
        "index_head_dim": d.index_head_dim,
        "index_n_heads": d.index_n_heads,
        "index_topk": d.index_topk,
        "initializer_range": 0.02,
        "max_position_embeddings": 4096,
        "moe_intermediate_size": d.moe_intermediate,
        "n_routed_experts": d.n_routed,
        "n_shared_experts": d.n_shared,
        "norm_topk_prob": True,
        "num_attention_heads": d.n_head,
        "num_experts_per_tok": d.n_used,
        "num_hash_layers": d.n_hash_layers,
        "num_hidden_layers": d.n_layer,
        "num_key_value_heads": 1,
        "num_nextn_predict_layers": 1 if mtp else 0,
        "o_groups": d.o_groups,
        "o_lora_rank": d.o_lora_rank,
        "q_lora_rank": d.q_lora_rank,
        "qk_rope_head_dim": d.qk_rope,
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "scale_fmt": "ue8m0",
            "weight_block_size": [BLOCK, BLOCK],
        },
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 16,
            "original_max_position_embeddings": 256,
            "type": "yarn",
        },
        "rope_theta": 10000,
        "routed_scaling_factor": 1.5,
        "scoring_func": "sqrtsoftplus",
        "sliding_window": d.sliding_window,
        "swiglu_limit": 10.0,
        "tie_word_embeddings": False,
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.1",
        "use_cache": True,
        "vocab_size": d.vocab_size,
    }
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(model_dir, "deepseek-v3")
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    del tok_config["chat_template"]  # V4 ships none: converters embed a default
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tok_config, ensure_ascii=False, indent=2))
    return model_dir


@dataclass(frozen=True)
class DenseDims:
    n_layer: int = 2
    hidden: int = 256
    n_head: int = 4
    n_head_kv: int = 2
    intermediate: int = 512
    vocab_size: int = 448


def _write_dense(model_dir: Path, arch: str, *, seed: int, dims: DenseDims, n_shards: int) -> Path:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    d = dims
    hd = d.hidden // d.n_head
    b = _Builder(seed)
    b.embedding("model.embed_tokens.weight", d.vocab_size, d.hidden)
    for i in range(d.n_layer):
        p = f"model.layers.{i}."
        b.norm(p + "input_layernorm.weight", d.hidden)
        b.linear(p + "self_attn.q_proj.weight", d.n_head * hd, d.hidden)
        b.linear(p + "self_attn.k_proj.weight", d.n_head_kv * hd, d.hidden)
        b.linear(p + "self_attn.v_proj.weight", d.n_head_kv * hd, d.hidden)
        if arch == "qwen2":
            b.vector(p + "self_attn.q_proj.bias", d.n_head * hd, std=0.1)
            b.vector(p + "self_attn.k_proj.bias", d.n_head_kv * hd, std=0.1)
            b.vector(p + "self_attn.v_proj.bias", d.n_head_kv * hd, std=0.1)
        if arch == "qwen3":
            b.norm(p + "self_attn.q_norm.weight", hd)
            b.norm(p + "self_attn.k_norm.weight", hd)
        b.linear(p + "self_attn.o_proj.weight", d.hidden, d.n_head * hd)
        b.norm(p + "post_attention_layernorm.weight", d.hidden)
        b.linear(p + "mlp.gate_proj.weight", d.intermediate, d.hidden)
        b.linear(p + "mlp.up_proj.weight", d.intermediate, d.hidden)
        b.linear(p + "mlp.down_proj.weight", d.hidden, d.intermediate)
    b.norm("model.norm.weight", d.hidden)
    b.linear("lm_head.weight", d.vocab_size, d.hidden)
    b.write(model_dir, n_shards)
    vocab = build_vocab()
    config: dict[str, object] = {
        "architectures": [
            {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]
        ],
        "model_type": arch,
        "attention_dropout": 0.0,
        "bos_token_id": vocab.id(BOS),
        "eos_token_id": vocab.id(EOS),
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "initializer_range": 0.02,
        "intermediate_size": d.intermediate,
        "max_position_embeddings": 4096,
        "num_attention_heads": d.n_head,
        "num_hidden_layers": d.n_layer,
        "num_key_value_heads": d.n_head_kv,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": True,
        "vocab_size": d.vocab_size,
    }
    if arch == "qwen2":
        config.update({"sliding_window": 4096, "use_sliding_window": False, "max_window_layers": d.n_layer})
        pre = "qwen2"
    elif arch == "llama":
        config.update(
            {
                "attention_bias": False,
                "mlp_bias": False,
                "pretraining_tp": 1,
                "rope_scaling": {
                    "factor": 8.0,
                    "high_freq_factor": 4.0,
                    "low_freq_factor": 1.0,
                    "original_max_position_embeddings": 512,
                    "rope_type": "llama3",
                },
            }
        )
        pre = "llama-bpe"
    else:
        config.update({"head_dim": hd, "attention_bias": False})
        pre = "qwen2"
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(model_dir, pre)
    return model_dir


def write_qwen2(model_dir: Path, *, seed: int = 2, dims: DenseDims = DenseDims(), n_shards: int = 2) -> Path:
    """R1-Distill-Qwen layout (Qwen2ForCausalLM, BF16, q/k/v biases)."""
    return _write_dense(model_dir, "qwen2", seed=seed, dims=dims, n_shards=n_shards)


def write_llama(
    model_dir: Path, *, seed: int = 3, dims: DenseDims = DenseDims(vocab_size=415), n_shards: int = 1
) -> Path:
    """R1-Distill-Llama layout (LlamaForCausalLM, BF16, llama3 RoPE scaling), single-file checkpoint."""
    return _write_dense(model_dir, "llama", seed=seed, dims=dims, n_shards=n_shards)


def write_qwen3(model_dir: Path, *, seed: int = 4, dims: DenseDims = DenseDims(), n_shards: int = 1) -> Path:
    """R1-0528-Qwen3 layout (Qwen3ForCausalLM, BF16, q/k norms)."""
    return _write_dense(model_dir, "qwen3", seed=seed, dims=dims, n_shards=n_shards)


WRITERS = {
    "deepseek_v3": write_deepseek_v3,
    "deepseek_v32": write_deepseek_v32,
    "deepseek_v4": write_deepseek_v4,
    "deepseek_v2_lite": write_deepseek_v2_lite,
    "qwen2": write_qwen2,
    "llama": write_llama,
    "qwen3": write_qwen3,
}
