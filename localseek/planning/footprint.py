"""How much memory a GGUF needs, from its header alone: weights by tensor class and layer, KV cache per token
(MLA-aware), compute buffers.

Tensor classes (what the planner moves between devices):
  attention       blk.N.attn_* (q/k/v/o, MLA's q_a/q_b/kv_a/k_b/v_b) and their norms
  dense_ffn       blk.N.ffn_{gate,up,down}.weight of dense layers (and of dense models)
  shared_experts  blk.N.ffn_*_shexp (DeepSeek's always-active shared expert)
  routed_experts  blk.N.ffn_*_exps (the 3-D tensors holding every routed expert; most of a MoE's bytes)
  router          blk.N.ffn_gate_inp, exp_probs_b (tiny)
  norms           other per-layer norms (ffn_norm, …)
  embeddings      token_embd (llama.cpp always keeps it in RAM)
  output          output.weight, output_norm (on the GPU as soon as one layer is offloaded)
  mtp             the multi-token-prediction layer(s) of deepseek2 (loaded only for MTP decoding)

Compute-buffer sizes are an estimate checked against llama.cpp's own dry runs (`no_alloc`) in the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from localseek.errors import ModelFileError
from localseek.models.catalog import ModelSpec
from localseek.models.gguf_info import GGUFInfo
from localseek.models.quants import normalize_quant
from localseek.text import printable

CLASSES = (
    "attention", "dense_ffn", "shared_experts", "routed_experts", "router", "norms", "embeddings", "output", "mtp",
    "other",
)
_LAYER_RE = re.compile(r"^blk\.([0-9]{1,6})\.")
EXPERT_RE = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")  # llama.cpp's LLM_FFN_EXPS_REGEX
KV_CELL_PAD = 256  # llama.cpp pads the context to a multiple of 256 cells
F16 = 2


def classify(name: str, n_layer: int) -> tuple[str, int | None]:
    """(class, layer index or None) for a tensor name; `n_layer` is the trunk's layer count (MTP layers follow)."""
    if name.startswith("token_embd"):
        return "embeddings", None
    if name.startswith("output"):
        return "output", None
    m = _LAYER_RE.match(name)
    if not m:
        return "other", None
    il = int(m[1])
    rest = name[m.end():]
    if il >= n_layer or rest.startswith("nextn."):
        return "mtp", il
    if EXPERT_RE.search("." + rest):
        return "routed_experts", il
    if "_shexp" in rest:
        return "shared_experts", il
    if rest.startswith(("ffn_gate_inp", "exp_probs_b")):
        return "router", il
    if rest.startswith(("ffn_gate.", "ffn_up.", "ffn_down.")):
        return "dense_ffn", il
    if rest.startswith("attn_"):
        return "attention", il
    return "norms", il


@dataclass
class Layer:
    index: int
    bytes: dict[str, int] = field(default_factory=dict)
    expert_tensors: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def experts(self) -> int:
        return self.bytes.get("routed_experts", 0)


@dataclass
class Footprint:
    """The memory facts of one model file (all sizes in bytes)."""

    name: str
    arch: str
    file_type: str
    file_bytes: int
    n_params: int
    n_layer: int  # trunk layers (the KV cache and the forward pass use these)
    n_layer_all: int  # block_count: trunk + MTP layers; llama.cpp's layer slots for -ngl
    n_vocab: int
    n_embd: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    mla: bool
    legacy_mla: bool  # deepseek2 converted before the MLA split: llama.cpp caches full K and V per head
    kv_lora: int  # deepseek2: rank of the compressed KV latent (0 elsewhere)
    rope_dim: int
    n_expert: int
    n_expert_used: int
    n_ff: int
    n_ff_exp: int
    context_train: int
    layers: list[Layer]
    totals: dict[str, int]

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0 and any(layer.experts for layer in self.layers)

    @property
    def moe_layers(self) -> list[int]:
        return [layer.index for layer in self.layers if layer.experts and layer.index < self.n_layer]

    def weights(self, *, load_mtp: bool = False) -> int:
        """Bytes llama.cpp allocates for weights (MTP tensors are skipped unless MTP decoding is on)."""
        return sum(v for k, v in self.totals.items() if k != "mtp" or load_mtp)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weights(load_mtp=True) / self.n_params if self.n_params else 0.0

    # -- KV cache ------------------------------------------------------------------------------------------------
    def kv_bytes_per_token_layer(self, type_size: float = F16) -> float:
        """KV bytes per token per layer. MLA stores only the compressed latent + RoPE key (K, no V)."""
        if self.mla:
            return self.key_length * self.n_head_kv * type_size
        return (self.key_length + self.value_length) * self.n_head_kv * type_size

    def kv_bytes_per_token(self, type_size: float = F16) -> float:
        return self.kv_bytes_per_token_layer(type_size) * self.n_layer

    def kv_bytes(self, n_ctx: int, layers: int | None = None, type_size: float = F16) -> int:
        cells = padded_ctx(n_ctx)
        return int(self.kv_bytes_per_token_layer(type_size) * cells * (self.n_layer if layers is None else layers))

    # -- compute buffers -----------------------------------------------------------------------------------------
    def compute_bytes(self, n_ctx: int, n_ubatch: int, flash_attn: bool = True, n_outputs: int | None = None) -> int:
        """Estimated scratch memory of one forward pass of `n_ubatch` tokens (llama.cpp's "compute buffer").

        The largest of three phases, each a few live f32 tensors per token of the micro-batch: the output head
        (logits), attention (the KQ mask; without flash attention the full KQ score matrix, n_head × n_ctx per
        token), and the feed-forward block. The constants were fitted to llama.cpp's own dry runs of the DeepSeek
        family (tests/test_footprint.py keeps them honest).

        `n_outputs` (default: every token) is how many rows of logits are computed. llama.cpp reserves the buffer
        for a full micro-batch of logits, but a chat only asks for the last token's, and untouched pages of a CPU
        buffer take no RAM: `n_outputs=1` estimates what is resident in RAM.
        """
        cells = padded_ctx(n_ctx)
        ub = max(1, min(n_ubatch, cells))
        deepseek = self.arch.startswith("deepseek")
        rows = ub if n_outputs is None else max(1, min(n_outputs, ub))
        logits = rows * 4 * self.n_vocab + ub * 4 * (10 if deepseek else 2) * self.n_embd
        if self.mla:
            width = self.n_head * (2 * self.key_length + self.value_length)
        else:
            width = int(5.5 * self.n_embd)
        mask = cells * ub * (F16 if flash_attn else 4)
        attention = ub * 4 * width + mask
        if not flash_attn:
            attention += self.n_head * cells * ub * 4
            if self.mla:  # V is a view of the latent cache and is made contiguous for the matmul
                attention += cells * self.value_length * F16
        if self.is_moe:
            ffn_width = max(2 * self.n_expert_used * self.n_ff_exp, 2 * self.n_ff if self.n_ff else 0)
        else:
            ffn_width = 2 * self.n_ff
        ffn = ub * 4 * (ffn_width + 2 * self.n_embd)
        if self.mla:  # deepseek2's graph keeps the mask alive across the whole layer
            logits += mask
        return max(logits, attention, ffn)

    def expert_copy_bytes(self, cpu_expert_layers: list[int]) -> int:
        """GPU scratch for llama.cpp's op offload: for micro-batches of 32+ tokens the scheduler runs the expert
        matmuls of RAM-resident experts on the GPU and copies the layer's expert tensors into its compute
        buffer (only the used experts are transferred, but the buffer is sized for whole tensors)."""
        sizes = [self.layers[i].experts for i in cpu_expert_layers if i < len(self.layers)]
        return max(sizes, default=0)


def padded_ctx(n_ctx: int) -> int:
    return -(-n_ctx // KV_CELL_PAD) * KV_CELL_PAD


def from_gguf(info: GGUFInfo) -> Footprint:
    """Build the footprint from a parsed header (no weights are read). Raises ModelFileError for counts of the
    wrong type or beyond any real model (`gguf_info.LIMITS`), before anything is sized by them."""
    n_layer_all = info.int_value("block_count")
    nextn = info.int_value("nextn_predict_layers")
    if nextn > n_layer_all:
        raise ModelFileError(
            f"{printable(info.path.name)} has {nextn} MTP layers but only {n_layer_all} layers in all; the file is "
            "damaged — download or convert it again."
        )
    n_layer = n_layer_all - nextn
    n_embd = info.int_value("embedding_length")
    n_head = info.int_value("attention.head_count", 1, per_layer=True) or 1
    n_head_kv = info.int_value("attention.head_count_kv", n_head, per_layer=True) or n_head
    head_dim = n_embd // n_head
    key_length = info.int_value("attention.key_length", head_dim) or head_dim
    value_length = info.int_value("attention.value_length", head_dim) or head_dim
    mla = bool(info.int_value("attention.key_length_mla")) and bool(info.int_value("attention.value_length_mla"))
    kv_lora = info.int_value("attention.kv_lora_rank")
    legacy = info.arch.startswith("deepseek2") and kv_lora > 0 and not mla

    layers = [Layer(i) for i in range(n_layer_all)]
    totals = dict.fromkeys(CLASSES, 0)
    n_params = 0
    n_vocab = 0
    for t in info.tensors:
        cls, il = classify(t.name, n_layer)
        totals[cls] += t.n_bytes
        numel = 1
        for d in t.shape:
            numel *= d
        n_params += numel
        if t.name.startswith("token_embd"):
            n_vocab = max(t.shape, default=0)  # gguf-py reports ggml order (n_embd, n_vocab)
        if il is not None and il < n_layer_all:
            layer = layers[il]
            layer.bytes[cls] = layer.bytes.get(cls, 0) + t.n_bytes
            if cls == "routed_experts":
                layer.expert_tensors.append((t.name, t.n_bytes))
    if not n_vocab:
        tokens = info.metadata.get("tokenizer.ggml.tokens")
        n_vocab = info.int_value("vocab_size") or (len(tokens) if isinstance(tokens, list) else 0)
    return Footprint(
        name=info.path.name,
        arch=info.arch,
        file_type=_file_type(info),
        file_bytes=info.total_bytes,
        n_params=n_params,
        n_layer=n_layer,
        n_layer_all=n_layer_all,
        n_vocab=n_vocab,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        key_length=key_length,
        value_length=value_length,
        mla=mla,
        legacy_mla=legacy,
        kv_lora=kv_lora,
        rope_dim=info.int_value("rope.dimension_count", 0),
        n_expert=info.int_value("expert_count"),
        n_expert_used=info.int_value("expert_used_count"),
        n_ff=info.int_value("feed_forward_length", per_layer=True),
        n_ff_exp=info.int_value("expert_feed_forward_length"),
        context_train=info.int_value("context_length", 4096) or 4096,
        layers=layers,
        totals=totals,
    )


def from_catalog(spec: ModelSpec, quant: str | None = None) -> Footprint | None:
    """A coarse footprint from the catalog alone (before any header is read): the listed GGUF size spread evenly
    over the layers, routed experts as the share of parameters that is not active per token, the KV cache from the
    entry's `kv` shape. Widths the catalog does not give are estimated (d_model from params ≈ 12·layers·d²), which
    only touches the compute buffer, a small part of the total. None when the catalog lists no size or shape."""
    size = spec.size_of(quant)
    if size is None or spec.kv is None:
        return None
    kv = spec.kv
    n_layer = kv.layers
    n_embd = max(64, int((spec.active / (12 * n_layer)) ** 0.5))
    embeddings = min(size // 10, int(size * 129280 * n_embd / max(spec.params, 1)))
    per_layer = (size - embeddings) // n_layer
    expert_share = 1 - spec.active / spec.params if spec.is_moe else 0.0
    layers = []
    for i in range(n_layer):
        experts = int(per_layer * expert_share)
        layers.append(Layer(i, {"attention": per_layer - experts, "routed_experts": experts} if experts
                            else {"attention": per_layer}))
    totals = dict.fromkeys(CLASSES, 0)
    totals["embeddings"] = embeddings
    for layer in layers:
        for cls, n in layer.bytes.items():
            totals[cls] += n
    mla = kv.kv_lora_rank is not None
    return Footprint(
        name=spec.id, arch=spec.gguf_arch, file_type=normalize_quant(quant or spec.default_quant or "?"),
        file_bytes=size, n_params=spec.params, n_layer=n_layer, n_layer_all=n_layer, n_vocab=129280, n_embd=n_embd,
        n_head=max(1, n_embd // 128), n_head_kv=1 if mla else (kv.kv_heads or 1),
        key_length=(kv.kv_lora_rank or 0) + (kv.rope_dim or 0) if mla else (kv.head_dim or 128),
        value_length=kv.kv_lora_rank or 0 if mla else (kv.head_dim or 128),
        mla=mla, legacy_mla=False, kv_lora=kv.kv_lora_rank or 0, rope_dim=kv.rope_dim or 0,
        n_expert=256 if spec.is_moe else 0, n_expert_used=8 if spec.is_moe else 0, n_ff=4 * n_embd,
        n_ff_exp=n_embd // 2, context_train=spec.context, layers=layers, totals=totals,
    )


def _file_type(info: GGUFInfo) -> str:
    import gguf

    value = info.metadata.get("general.file_type")
    try:
        return gguf.LlamaFileType(value if type(value) is int else -1).name.removeprefix("MOSTLY_").removeprefix(
            "ALL_")
    except ValueError:
        counts: dict[str, int] = {}
        for t in info.tensors:
            counts[t.type_name] = counts.get(t.type_name, 0) + t.n_bytes
        return max(counts, key=counts.__getitem__) if counts else "unknown"


__all__ = ["CLASSES", "EXPERT_RE", "Footprint", "Layer", "classify", "from_catalog", "from_gguf", "padded_ctx"]
