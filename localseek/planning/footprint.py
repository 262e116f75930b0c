"""How much memory a GGUF needs, from its header alone: weights by tensor class and layer, KV cache per token
(MLA-, DSA- and DeepSeek-V4-aware), compute buffers.

Tensor classes (what the planner moves between devices):
  attention          blk.N.attn_* (q/k/v/o, MLA's q_a/q_b/kv_a/k_b/v_b; V4's attn_kv, grouped output, sinks and
                     KV compressors attn_compressor_*) and their norms
  indexer            blk.N.indexer.* and V4's indexer_compressor_*: the lightning indexer of DeepSeek Sparse
                     Attention (V3.2 `deepseek32`, V4 `deepseek4`)
  hyper_connections  blk.N.hc_{attn,ffn}_* (V4's stream mixers)
  dense_ffn          blk.N.ffn_{gate,up,down}.weight of dense layers (and of dense models)
  shared_experts     blk.N.ffn_*_shexp (DeepSeek's always-active shared expert)
  routed_experts     blk.N.ffn_*_exps (the 3-D tensors holding every routed expert; most of a MoE's bytes; the
                     class `--cpu-moe` and the planner keep in RAM)
  router             blk.N.ffn_gate_inp, exp_probs_b, V4's hash table ffn_gate_tid2eid (small)
  norms              other per-layer norms (ffn_norm, …)
  embeddings         token_embd (llama.cpp always keeps it in RAM)
  output             output.weight, output_norm, V4's output_hc_* (on the GPU as soon as one layer is offloaded)
  mtp                the multi-token-prediction layer(s) of deepseek2/deepseek32 (loaded only for MTP decoding)

Every tensor of a layer except its routed experts moves with the layer; those stay the one overridable class.

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
    "attention", "indexer", "hyper_connections", "dense_ffn", "shared_experts", "routed_experts", "router", "norms",
    "embeddings", "output", "mtp", "other",
)
_LAYER_RE = re.compile(r"^blk\.([0-9]{1,6})\.")
EXPERT_RE = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")  # llama.cpp's LLM_FFN_EXPS_REGEX
KV_CELL_PAD = 256  # llama.cpp pads the context to a multiple of 256 cells
F16 = 2
F32 = 4
DSV4_CSA, DSV4_HCA = 4, 128  # V4's compression ratios (llama-kv-cache-dsv4.cpp): compressed sparse / heavily compr.


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
    if rest.startswith(("ffn_gate_inp", "exp_probs_b", "ffn_gate_tid2eid")):
        return "router", il
    if rest.startswith(("ffn_gate.", "ffn_up.", "ffn_down.")):
        return "dense_ffn", il
    if rest.startswith("attn_"):
        return "attention", il
    if rest.startswith(("indexer.", "indexer_")):
        return "indexer", il
    if rest.startswith("hc_"):
        return "hyper_connections", il
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
    # DeepSeek Sparse Attention's lightning indexer (deepseek32, deepseek4): one cached key per token and layer
    indexer_heads: int = 0
    indexer_dim: int = 0
    indexer_top_k: int = 0
    # deepseek4: per trunk layer 0 (sliding window only), 4 (CSA: 4× compressed + indexer) or 128 (HCA)
    compress_ratios: tuple[int, ...] = ()
    n_swa: int = 0
    n_embd_out: int = 0  # deepseek4: hyper-connection streams × n_embd (the residual's width)

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
    @property
    def dsv4(self) -> bool:
        """DeepSeek-V4's cache: raw K in a sliding-window cache, 4×/128× compressed K, indexer keys, F32 states."""
        return self.arch == "deepseek4"

    @property
    def kv_kind(self) -> str:
        if self.dsv4:
            return "V4 compressed K cache"
        if self.indexer_dim and self.mla:
            return "MLA latent + indexer keys"
        if self.mla:
            return "MLA latent cache"
        return "full K/V per head (pre-MLA conversion)" if self.legacy_mla else "K/V cache"

    def kv_bytes_per_token_layer(self, type_size: float = F16) -> float:
        """KV bytes per token of one trunk layer (deepseek4: the average over its layers). MLA stores only the
        compressed latent + RoPE key (K, no V); DSA adds the indexer's key."""
        if self.dsv4:
            return self.kv_bytes_per_token(type_size) / max(self.n_layer, 1)
        if self.mla:
            return (self.key_length * self.n_head_kv + self.indexer_dim) * type_size
        return (self.key_length + self.value_length) * self.n_head_kv * type_size

    def kv_bytes_per_token(self, type_size: float = F16, *, swa_full: bool = True) -> float:
        """What one more token of context costs over all trunk layers. deepseek4: the raw K of every layer (only
        while llama.cpp keeps a full-size window cache, `swa_full`, llama-cpp-python's default), plus per 4 tokens
        the CSA layers' compressed K and indexer key, per 128 tokens the HCA layers' compressed K."""
        if self.dsv4:
            per = (self.key_length * self.n_layer if swa_full else 0) + sum(
                (self.key_length + self.indexer_dim) / DSV4_CSA if r == DSV4_CSA else
                self.key_length / DSV4_HCA if r == DSV4_HCA else 0 for r in self._ratios())
            return per * type_size
        return self.kv_bytes_per_token_layer(type_size) * self.n_layer

    def kv_layer_bytes(self, il: int, n_ctx: int, n_ubatch: int = 512, *, swa_full: bool = True,
                       type_size: float = F16) -> int:
        """llama.cpp's KV allocation for layer `il` (its caches live with the layer). Trunk layers of deepseek32
        add the indexer's key cache to MLA's latent; an MTP layer (il ≥ n_layer) has its own plain cache in the MTP
        context. deepseek4 (llama-kv-cache-dsv4.cpp): the raw K of the window cache (n_ctx cells when `swa_full`,
        else window + micro-batch padded to 256), CSA layers the 4× compressed K and the indexer keys in
        ceil(n_ctx/4) cells padded to 256, HCA layers the 128× compressed K likewise, and F32 compressor states
        (kv + score) of a fixed size."""
        cells = padded_ctx(n_ctx)
        if self.dsv4:
            raw = cells if swa_full else min(cells, padded_ctx(self.n_swa + n_ubatch))
            size = raw * self.key_length * type_size
            ratio = self._ratios()[il] if il < self.n_layer else 0
            if ratio == DSV4_CSA:
                comp = padded_ctx(-(-cells // DSV4_CSA))
                size += comp * (self.key_length + self.indexer_dim) * type_size
                # states: 2 tensors (kv, score) of [2·dim, 2·ratio] F32, for the attention and the indexer
                size += 2 * F32 * 2 * DSV4_CSA * 2 * (self.key_length + self.indexer_dim)
            elif ratio == DSV4_HCA:
                comp = padded_ctx(-(-cells // DSV4_HCA))
                size += comp * self.key_length * type_size + 2 * F32 * DSV4_HCA * self.key_length
            return int(size)
        per_token = self.kv_bytes_per_token_layer(type_size)
        if il >= self.n_layer and self.mla:  # the MTP context's own cache: the latent only, no indexer
            per_token -= self.indexer_dim * type_size
        return int(cells * per_token)

    def kv_bytes(self, n_ctx: int, layers: int | None = None, type_size: float = F16, n_ubatch: int = 512, *,
                 swa_full: bool = True) -> int:
        """The KV cache of the first `layers` trunk layers (all of them by default)."""
        count = self.n_layer if layers is None else min(layers, self.n_layer)
        return sum(self.kv_layer_bytes(il, n_ctx, n_ubatch, swa_full=swa_full, type_size=type_size)
                   for il in range(count))

    def _ratios(self) -> tuple[int, ...]:
        return (self.compress_ratios + (0,) * self.n_layer)[: self.n_layer]

    # -- compute buffers -----------------------------------------------------------------------------------------
    def compute_bytes(self, n_ctx: int, n_ubatch: int, flash_attn: bool = True, n_outputs: int | None = None, *,
                      swa_full: bool = True) -> int:
        """Estimated scratch memory of one forward pass of `n_ubatch` tokens (llama.cpp's "compute buffer").

        The largest of three phases, each a few live f32 tensors per token of the micro-batch: the output head
        (logits), attention (the KQ mask; without flash attention the full KQ score matrix, n_head × n_ctx per
        token), and the feed-forward block. DSA (deepseek32) adds the indexer's mask and scores: n_idx_head f32
        per selected key (top-k) and a few bytes per cached token. The constants were fitted to llama.cpp's
        own dry runs of the DeepSeek family (tests/test_footprint.py, tests/test_footprint_dsv.py keep them honest).

        `n_outputs` (default: every token) is how many rows of logits are computed. llama.cpp reserves the buffer
        for a full micro-batch of logits, but a chat only asks for the last token's, and untouched pages of a CPU
        buffer take no RAM: `n_outputs=1` estimates what is resident in RAM.
        """
        cells = padded_ctx(n_ctx)
        ub = max(1, min(n_ubatch, cells))
        rows = ub if n_outputs is None else max(1, min(n_outputs, ub))
        if self.dsv4:
            return self._dsv4_compute(cells, ub, rows, flash_attn, swa_full)
        deepseek = self.arch.startswith("deepseek")
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
        dsa = 0
        if self.indexer_dim:  # DSA: the indexer's mask (a graph input, alive throughout) and its scores (per head of
            # the selected keys, and per cached token), measured on top of whichever phase is largest
            dsa = cells * ub * (F16 if flash_attn else 4) + ub * 4 * (
                self.indexer_heads * min(cells, self.indexer_top_k or cells) + cells * (1 if flash_attn else 1.5))
        if self.is_moe:
            ffn_width = max(2 * self.n_expert_used * self.n_ff_exp, 2 * self.n_ff if self.n_ff else 0)
        else:
            ffn_width = 2 * self.n_ff
        ffn = ub * 4 * (ffn_width + 2 * self.n_embd)
        if self.mla:  # deepseek2's graph keeps the mask alive across the whole layer
            logits += mask
        return max(logits, attention, ffn) + dsa

    def _dsv4_compute(self, cells: int, ub: int, rows: int, flash_attn: bool, swa_full: bool) -> int:
        """deepseek4 (src/models/deepseek4.cpp): attention runs over the raw window cache concatenated with the
        compressed one (a contiguous F16 copy of both per layer) under a mask per token over both; CSA layers
        build that mask from the indexer's top-k over the compressed rows; the residual is `n_embd_out` wide
        (hyper-connection streams). Fitted to llama.cpp's dry runs of V4-Flash's shapes and of a tiny V4."""
        raw = cells if swa_full else min(cells, padded_ctx(self.n_swa + ub))
        ratios = set(self._ratios())
        comp = padded_ctx(-(-cells // DSV4_CSA)) if DSV4_CSA in ratios else \
            padded_ctx(-(-cells // DSV4_HCA)) if DSV4_HCA in ratios else 0
        n_all = raw + comp
        per_token = 12 * self.n_head * self.key_length + 4 * (self.n_embd_out + self.indexer_heads * self.indexer_dim)
        per_token += 4 * n_all + 8 * comp
        if not flash_attn:  # the KQ scores of every head, and an F32 mask
            per_token += 4 * (self.n_head + 1) * n_all
        attention = ub * per_token + n_all * self.key_length * F16
        logits = rows * 4 * self.n_vocab + ub * 4 * (2 * self.n_embd + self.n_embd_out)
        ffn = ub * 4 * (2 * self.n_expert_used * self.n_ff_exp + 2 * self.n_embd + self.n_embd_out)
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
    ratios = _compress_ratios(info, n_layer) if info.arch == "deepseek4" else ()
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
        indexer_heads=info.int_value("attention.indexer.head_count"),
        indexer_dim=info.int_value("attention.indexer.key_length"),
        indexer_top_k=info.int_value("attention.indexer.top_k"),
        compress_ratios=ratios,
        n_swa=info.int_value("attention.sliding_window"),
        n_embd_out=info.int_value("embedding_length_out"),
    )


def _compress_ratios(info: GGUFInfo, n_layer: int) -> tuple[int, ...]:
    """deepseek4's per-layer compression ratios, checked: llama.cpp loads only 0, 4 and 128, one per layer."""
    value = info.get("attention.compress_ratios")
    if (not isinstance(value, list) or len(value) < n_layer or len(value) > n_layer + 64
            or any(type(r) is not int or r not in (0, DSV4_CSA, DSV4_HCA) for r in value)):
        raise ModelFileError(
            f"{printable(info.path.name)}: attention.compress_ratios is not one ratio of 0, 4 or 128 per layer; the "
            "file is damaged or not a DeepSeek-V4 model llama.cpp can load — download or convert it again."
        )
    return tuple(value[:n_layer])


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
    ratios: tuple[int, ...] = ()
    if kv.compressed:  # DeepSeek-V4: window-only layers first, then CSA and HCA layers alternating
        csa, hca = kv.csa_layers or 0, kv.hca_layers or 0
        mixed: list[int] = []
        while csa or hca:
            mixed += [DSV4_CSA] * min(csa, 1) + [DSV4_HCA] * min(hca, 1)
            csa, hca = max(csa - 1, 0), max(hca - 1, 0)
        ratios = (0,) * (n_layer - len(mixed)) + tuple(mixed)
    return Footprint(
        name=spec.id, arch=spec.gguf_arch, file_type=normalize_quant(quant or spec.default_quant or "?"),
        file_bytes=size, n_params=spec.params, n_layer=n_layer, n_layer_all=n_layer, n_vocab=129280, n_embd=n_embd,
        n_head=max(1, n_embd // 128), n_head_kv=1 if mla or kv.compressed else (kv.kv_heads or 1),
        key_length=(kv.kv_lora_rank or 0) + (kv.rope_dim or 0) if mla else (kv.head_dim or 128),
        value_length=kv.kv_lora_rank or 0 if mla else (kv.head_dim or 128),
        mla=mla, legacy_mla=False, kv_lora=kv.kv_lora_rank or 0, rope_dim=kv.rope_dim or 0,
        n_expert=256 if spec.is_moe else 0, n_expert_used=8 if spec.is_moe else 0, n_ff=4 * n_embd,
        n_ff_exp=n_embd // 2, context_train=spec.context, layers=layers, totals=totals,
        indexer_dim=kv.indexer_dim or 0, indexer_heads=64 if kv.indexer_dim else 0,
        indexer_top_k=(512 if kv.compressed else 2048) if kv.indexer_dim else 0, compress_ratios=ratios,
        n_embd_out=4 * n_embd if kv.compressed else 0,
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
