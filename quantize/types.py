"""Quantization types as data, and the per-tensor type rules of llama.cpp's mixtures (Q4_K_M, Q3_K_M, …).

`--type` names a llama.cpp file type ("ftype"): F32/F16/BF16/Q8_0/Q4_0/… quantize every weight matrix the
same way; the K- and IQ- mixtures pick a type per tensor with the rules of `llama-quantize`
(`llama_tensor_get_type` in llama.cpp's src/llama-quant.cpp), reproduced here so that a conversion straight
from FP8/BF16 gives the same file a two-step convert + quantize would. `tests/test_quantize_types.py`
checks them against llama.cpp's own implementation.

MoE extra: `experts` overrides the type of the routed experts (`ffn_{gate,up,down}_exps`), the trick behind
the small dynamic DeepSeek quants (attention, shared experts and embeddings stay at higher precision).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as F
from gguf.constants import GGML_QUANT_SIZES

from quantize.errors import UnsupportedType

# --type name → (llama ftype, default tensor type)
FTYPES: dict[str, tuple[F, T]] = {
    "F32": (F.ALL_F32, T.F32),
    "F16": (F.MOSTLY_F16, T.F16),
    "BF16": (F.MOSTLY_BF16, T.BF16),
    "Q8_0": (F.MOSTLY_Q8_0, T.Q8_0),
    "Q5_1": (F.MOSTLY_Q5_1, T.Q5_1),
    "Q5_0": (F.MOSTLY_Q5_0, T.Q5_0),
    "Q4_1": (F.MOSTLY_Q4_1, T.Q4_1),
    "Q4_0": (F.MOSTLY_Q4_0, T.Q4_0),
    "Q6_K": (F.MOSTLY_Q6_K, T.Q6_K),
    "Q5_K_M": (F.MOSTLY_Q5_K_M, T.Q5_K),
    "Q5_K_S": (F.MOSTLY_Q5_K_S, T.Q5_K),
    "Q4_K_M": (F.MOSTLY_Q4_K_M, T.Q4_K),
    "Q4_K_S": (F.MOSTLY_Q4_K_S, T.Q4_K),
    "Q3_K_L": (F.MOSTLY_Q3_K_L, T.Q3_K),
    "Q3_K_M": (F.MOSTLY_Q3_K_M, T.Q3_K),
    "Q3_K_S": (F.MOSTLY_Q3_K_S, T.Q3_K),
    "Q2_K": (F.MOSTLY_Q2_K, T.Q2_K),
    "Q2_K_S": (F.MOSTLY_Q2_K_S, T.Q2_K),
    "IQ4_XS": (F.MOSTLY_IQ4_XS, T.IQ4_XS),
    "IQ4_NL": (F.MOSTLY_IQ4_NL, T.IQ4_NL),
    "IQ3_M": (F.MOSTLY_IQ3_M, T.IQ3_S),
    "IQ3_S": (F.MOSTLY_IQ3_S, T.IQ3_S),
    "IQ3_XS": (F.MOSTLY_IQ3_XS, T.IQ3_S),
    "IQ3_XXS": (F.MOSTLY_IQ3_XXS, T.IQ3_XXS),
    "IQ2_M": (F.MOSTLY_IQ2_M, T.IQ2_S),
    "IQ2_S": (F.MOSTLY_IQ2_S, T.IQ2_XS),
    "IQ2_XS": (F.MOSTLY_IQ2_XS, T.IQ2_XS),
    "IQ2_XXS": (F.MOSTLY_IQ2_XXS, T.IQ2_XXS),
    "IQ1_M": (F.MOSTLY_IQ1_M, T.IQ1_M),
    "IQ1_S": (F.MOSTLY_IQ1_S, T.IQ1_S),
    # llama-quantize's MoE type: routed experts MXFP4, every other matrix Q8_0 (DeepSeek-V4 ships MXFP4 experts)
    "MXFP4_MOE": (F.MOSTLY_MXFP4_MOE, T.Q8_0),
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "FP16": "F16", "FP32": "F32"}

# Types `--experts` (and per-tensor overrides) may name.
TENSOR_TYPES: dict[str, T] = {
    t.name: t
    for t in (
        T.F32,
        T.F16,
        T.BF16,
        T.Q8_0,
        T.Q5_1,
        T.Q5_0,
        T.Q4_1,
        T.Q4_0,
        T.Q6_K,
        T.Q5_K,
        T.Q4_K,
        T.Q3_K,
        T.Q2_K,
        T.IQ4_XS,
        T.IQ4_NL,
        T.IQ3_S,
        T.IQ3_XXS,
        T.IQ2_S,
        T.IQ2_XS,
        T.IQ2_XXS,
        T.IQ1_M,
        T.IQ1_S,
        T.TQ1_0,
        T.TQ2_0,
        T.MXFP4,
    )
}
# ggml refuses to quantize these without an importance matrix (ggml_quantize_requires_imatrix)
NEEDS_IMATRIX = {T.IQ2_XXS, T.IQ2_XS, T.IQ1_S, T.IQ1_M}
FLOAT_TYPES = {T.F32, T.F16, T.BF16}
EXPERTS_PATTERN = re.compile(r"ffn_(gate|up|down|gate_up)_exps\.weight$")


def parse_ftype(name: str) -> tuple[str, F, T]:
    key = name.strip().upper().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in FTYPES:
        raise UnsupportedType(f"Unknown quantization type {name!r}; choose one of {', '.join(FTYPES)}.")
    ftype, default = FTYPES[key]
    return key, ftype, default


def parse_tensor_type(name: str) -> T:
    key = name.strip().upper()
    if key not in TENSOR_TYPES:
        raise UnsupportedType(f"Unknown tensor type {name!r}; choose one of {', '.join(TENSOR_TYPES)}.")
    return TENSOR_TYPES[key]


def block_size(t: T) -> int:
    return GGML_QUANT_SIZES[t][0]


def nbytes(t: T, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of numpy shape `shape` (last axis = row) stored as `t`."""
    blck, size = GGML_QUANT_SIZES[t]
    n = 1
    for s in shape:
        n *= s
    return n // blck * size


# -- the rules --------------------------------------------------------------------------------------------
@dataclass
class ModelFacts:
    """What the rules need to know about the model (llama.cpp reads the same from the GGUF)."""

    arch: str
    n_layer_all: int  # block_count, MTP layers included
    n_expert: int = 0
    n_head: int = 1
    n_head_kv: int = 1
    is_70b: bool = False

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 1


@dataclass
class TypePlanner:
    """Stateful like llama.cpp's quantize_state: feed tensors in file order."""

    facts: ModelFacts
    ftype: F
    default: T
    has_imatrix: bool = False
    pure: bool = False
    experts: T | None = None
    has_output: bool = True
    n_attention_wv: int = 0
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0
    fallbacks: list[str] = field(default_factory=list)

    def prepare(self, names: list[str]) -> None:
        self.n_attention_wv = sum(1 for n in names if _category(n) in ("attn_v", "attn_qkv", "attn_kv_b"))
        self.has_output = "output.weight" in names

    def choose(self, name: str, shape: tuple[int, ...], native: T | None = None, keep_f32: bool = False) -> T:
        """Type of one tensor (numpy shape, last axis = row), or F32 for those that are never quantized.

        `native`: the source's own GGML type, if it has one. Integer tables keep it; MXFP4 routed experts keep
        it unless `experts` names another type (requantizing them would only lose precision, at more bits
        for the 4-bit types). `keep_f32`: the source keeps it F32 on purpose (V4's mixers, sinks)."""
        if native is not None and native not in (T.MXFP4,):
            return native
        expert = EXPERTS_PATTERN.search(name) is not None
        if native == T.MXFP4 and expert and self.experts in (None, T.MXFP4):
            return T.MXFP4
        if (
            keep_f32
            or len(shape) < 2
            or name.endswith("_norm.weight")
            or not name.endswith("weight")
            or "ffn_gate_inp.weight" in name
            or "indexer.proj.weight" in name  # DSA indexer head weights: F32, as llama.cpp's converter writes
        ):
            return T.F32
        new = self.default
        if new in FLOAT_TYPES:
            return new
        category = _category(name)
        if self.experts is not None and expert:
            new = self.experts
        elif self.ftype == F.MOSTLY_MXFP4_MOE:  # llama-quantize: experts MXFP4, every other matrix Q8_0
            new = T.MXFP4 if expert else T.Q8_0
        elif not self.pure:
            new = self._impl(new, name, shape[-1], category)
        return self._fallback(name, shape[-1], new)

    def _fallback(self, name: str, ncols: int, t: T) -> T:
        if t in FLOAT_TYPES or ncols % block_size(t) == 0:
            return t
        to = {
            T.IQ1_S: T.IQ4_NL,
            T.IQ1_M: T.IQ4_NL,
            T.IQ2_XXS: T.IQ4_NL,
            T.IQ2_XS: T.IQ4_NL,
            T.IQ2_S: T.IQ4_NL,
            T.IQ3_XXS: T.IQ4_NL,
            T.IQ3_S: T.IQ4_NL,
            T.IQ4_XS: T.IQ4_NL,
            T.Q2_K: T.Q4_0,
            T.Q3_K: T.Q4_0,
            T.TQ1_0: T.Q4_0,
            T.TQ2_0: T.Q4_0,
            T.Q4_K: T.Q5_0,
            T.Q5_K: T.Q5_1,
            T.Q6_K: T.Q8_0,
        }.get(t, t)
        if ncols % block_size(to) != 0:
            to = T.F16
        self.fallbacks.append(f"{name}: {t.name} → {to.name} (rows of {ncols})")
        return to

    def _impl(self, new: T, name: str, nx: int, category: str) -> T:
        f, facts = self.ftype, self.facts
        n_expert = max(1, facts.n_expert)

        def more_bits(i: int, n: int) -> bool:
            return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2

        def layer(counter: int) -> tuple[int, int]:
            n = facts.n_layer_all
            if n_expert > 1:
                m = re.match(r"blk\.(\d+)\.", name)
                if not m:
                    raise UnsupportedType(f"cannot tell the layer of tensor {name}")
                return int(m.group(1)), n
            return counter, n

        iq_low = {
            F.MOSTLY_IQ2_XXS,
            F.MOSTLY_IQ2_XS,
            F.MOSTLY_IQ1_S,
            F.MOSTLY_IQ2_S,
            F.MOSTLY_IQ2_M,
            F.MOSTLY_IQ1_M,
        }
        if category == "output" or (not self.has_output and category == "token_embd"):
            if nx % block_size(new) != 0:
                new = T.Q8_0
            elif f in {
                F.MOSTLY_IQ2_XXS,
                F.MOSTLY_IQ2_XS,
                F.MOSTLY_IQ3_XXS,
                F.MOSTLY_IQ1_S,
                F.MOSTLY_IQ2_S,
                F.MOSTLY_IQ2_M,
                F.MOSTLY_IQ1_M,
            }:
                new = T.Q5_K
            elif new != T.Q8_0:
                new = T.Q6_K
        elif category == "token_embd":
            if f in {F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M}:
                new = T.Q2_K
            elif f in {F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ3_XXS}:
                new = T.IQ3_S
            elif f in {F.MOSTLY_TQ1_0, F.MOSTLY_TQ2_0}:
                new = T.Q4_K
        elif f in iq_low:
            if category in ("attn_v", "attn_qkv", "attn_kv_b"):
                if facts.n_gqa >= 4 or facts.n_expert >= 4:
                    new = T.Q4_K
                else:
                    new = T.IQ3_S if f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M) else T.Q2_K
                self.i_attention_wv += 1
            elif facts.n_expert == 8 and category == "attn_k":
                new = T.Q4_K
            elif category == "ffn_down":
                if self.i_ffn_down < facts.n_layer_all // 8:
                    new = T.IQ3_S if f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M) else T.Q2_K
                self.i_ffn_down += 1
            elif category == "attn_output":
                if facts.n_expert == 8:
                    new = T.Q5_K
                elif f in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                    new = T.IQ2_XXS
                elif f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M):
                    new = T.IQ3_S
        elif category in ("attn_v", "attn_qkv", "attn_kv_b"):
            gqa4 = facts.n_gqa >= 4
            if f == F.MOSTLY_Q2_K:
                new = T.Q4_K if gqa4 else T.Q3_K
            elif f == F.MOSTLY_Q2_K_S and gqa4:
                new = T.Q4_K
            elif f == F.MOSTLY_IQ3_XXS:
                new = T.Q4_K if gqa4 else (T.IQ3_S if not self.has_imatrix else T.IQ3_XXS)
            elif f in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and gqa4 or f == F.MOSTLY_IQ3_M:
                new = T.Q4_K
            elif f == F.MOSTLY_Q3_K_M:
                new = T.Q5_K if self.i_attention_wv < 2 else T.Q4_K
            elif f == F.MOSTLY_Q3_K_L or f in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and gqa4:
                new = T.Q5_K
            elif f in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and more_bits(
                self.i_attention_wv, self.n_attention_wv
            ):
                new = T.Q6_K
            elif f == F.MOSTLY_Q4_K_S and self.i_attention_wv < 4:
                new = T.Q5_K
            if facts.is_70b and new in (T.Q3_K, T.Q4_K):
                new = T.Q5_K
            if facts.n_expert == 8:
                new = T.Q8_0
            self.i_attention_wv += 1
        elif category == "attn_k":
            if facts.n_expert == 8:
                new = T.Q8_0
            elif f == F.MOSTLY_IQ3_XS:
                new = T.IQ3_XXS
            elif f == F.MOSTLY_IQ3_XXS:
                new = T.IQ2_S
        elif category == "attn_q":
            if f == F.MOSTLY_IQ3_XS:
                new = T.IQ3_XXS
            elif f == F.MOSTLY_IQ3_XXS:
                new = T.IQ2_S
        elif category == "ffn_down":
            i, n = layer(self.i_ffn_down)
            if f == F.MOSTLY_Q2_K:
                new = T.Q3_K
            elif f == F.MOSTLY_Q2_K_S:
                if i < n // 8:
                    new = T.Q4_K
            elif f == F.MOSTLY_IQ3_XXS and not self.has_imatrix:
                new = T.Q4_K if i < n // 8 else T.Q3_K
            elif f == F.MOSTLY_Q3_K_M:
                new = T.Q5_K if i < n // 16 else T.Q4_K
            elif f == F.MOSTLY_IQ3_M and (i < n // 8 or (facts.n_expert == 8 and more_bits(i, n))):
                new = T.Q4_K
            elif f == F.MOSTLY_Q3_K_L:
                new = T.Q5_K
            elif f == F.MOSTLY_Q4_K_M:
                if more_bits(i, n):
                    new = T.Q6_K
            elif i < n // 8 and f in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and not self.has_imatrix:
                new = T.Q5_K
            elif f == F.MOSTLY_Q5_K_M and more_bits(i, n):
                new = T.Q6_K
            elif f == F.MOSTLY_Q4_K_S and i < n // 8:
                new = T.Q5_K
            elif f in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and self.has_imatrix and i < n // 8:
                new = T.Q4_1 if f == F.MOSTLY_Q4_0 else T.Q5_1
            self.i_ffn_down += 1
        elif category == "attn_output":
            if facts.n_expert == 8:
                if f in (
                    F.MOSTLY_Q2_K,
                    F.MOSTLY_IQ3_XS,
                    F.MOSTLY_IQ3_XXS,
                    F.MOSTLY_Q3_K_S,
                    F.MOSTLY_Q3_K_M,
                    F.MOSTLY_IQ4_NL,
                    F.MOSTLY_Q4_K_S,
                    F.MOSTLY_Q4_K_M,
                    F.MOSTLY_IQ3_S,
                    F.MOSTLY_IQ3_M,
                    F.MOSTLY_IQ4_XS,
                ):
                    new = T.Q5_K
            else:
                new = {
                    F.MOSTLY_Q2_K: T.Q3_K,
                    F.MOSTLY_IQ3_XXS: T.IQ3_S,
                    F.MOSTLY_Q3_K_M: T.Q4_K,
                    F.MOSTLY_Q3_K_L: T.Q5_K,
                    F.MOSTLY_IQ3_M: T.Q4_K,
                }.get(f, new)
        elif category in ("ffn_gate", "ffn_up"):
            counter = self.i_ffn_gate if category == "ffn_gate" else self.i_ffn_up
            i, n = layer(counter)
            if f == F.MOSTLY_IQ3_XS and n // 8 <= i < 7 * n // 8:
                new = T.IQ3_XXS
            if category == "ffn_gate":
                self.i_ffn_gate += 1
            else:
                self.i_ffn_up += 1
        return new


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (
        ("attn_qkv.weight", "attn_qkv"),
        ("attn_kv_b.weight", "attn_kv_b"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
    ):
        if key in name:
            return cat
    for key in ("ffn_up", "ffn_gate", "ffn_down"):
        if key in name:
            return key
    return "other"
