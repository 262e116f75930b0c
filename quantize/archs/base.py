"""What every architecture module shares: the name map, the tensor plan, and shape checks.

An architecture is data plus a few hooks:
- which GGUF architecture it becomes (by name, so names the installed gguf-py lacks can be added later),
- extra GGUF tensor kinds beyond gguf-py's table for that arch (e.g. `nextn.*` for DeepSeek's MTP layer),
- expected Hugging Face shapes per tensor kind (checked before any work starts),
- metadata keys from config.json,
- `transform` hooks for the few tensors that are not plain copies (MLA's kv_b split, Llama's q/k permute).
Everything else is mapped through gguf-py's `TensorNameMap` tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from quantize.errors import SourceError, UnsupportedArchitecture
from quantize.reader import RowSource, rows_for
from quantize.safetensors import Checkpoint

Chunks = Callable[[], Iterator[np.ndarray]]
_EXPERT = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<xid>\d+)\.(?P<w>\w+)\.weight$")
_SKIP_SUFFIXES = (".weight_scale_inv", ".rotary_emb.inv_freq", ".attention.masked_bias")


@dataclass
class OutTensor:
    """One GGUF tensor to write: its name, numpy shape (last axis = row), and where its rows come from.

    `native`: the GGML type the source already is (MXFP4 experts, I32 tables), with `raw_chunks` yielding
    its bytes in that type; used as they are when the planned type is the same. `keep_f32`: the source
    stores it in F32 on purpose (V4's hyper-connection mixers, sinks, …) and it stays F32 at every type."""

    name: str
    shape: tuple[int, ...]
    chunks: Chunks  # yields float32 [rows, shape[-1]] chunks, in output row order
    sources: list[str] = field(default_factory=list)
    rows_per_expert: int = 0  # > 0 for stacked experts: the importance matrix has one slice per expert
    native: gguf.GGMLQuantizationType | None = None
    raw_chunks: Chunks | None = None
    keep_f32: bool = False

    @property
    def n_rows(self) -> int:
        n = 1
        for s in self.shape[:-1]:
            n *= s
        return n


@dataclass
class Context:
    config: dict
    ckpt: Checkpoint
    keep_mtp: bool
    block: tuple[int, int] = (128, 128)
    mtp_only: bool = False  # only the MTP block (+ embeddings and head), as a draft model of its own

    def source(self, name: str) -> RowSource:
        return RowSource(self.ckpt, name, self.block)


class Arch:
    """Base class. Subclasses set the class attributes and override the hooks they need."""

    hf_architectures: tuple[str, ...] = ()
    gguf_arch: str = ""
    # gguf-py architecture whose name tables to use when the installed gguf-py does not know `gguf_arch`
    # (gguf 0.19 has no deepseek32: its tensors are deepseek2's plus the `extra_tensors`)
    table_arch: str = ""
    extra_tensors: tuple[gguf.MODEL_TENSOR, ...] = ()
    tokenizer_pre: str = "default"  # fallback when the tokenizer does not tell
    mtp_in_file: bool = True  # the MTP block can be kept in the model's file (`blk.<n_layer>.nextn.*`)
    mtp_only_supported: bool = False  # `mtp_only` can write it as a file of its own

    def __init__(self, config: dict) -> None:
        self.config = config
        self.model_arch = self._model_arch()

    # -- identity -------------------------------------------------------------------------------------
    def _model_arch(self) -> gguf.MODEL_ARCH:
        by_name = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
        for name in (self.gguf_arch, self.table_arch):
            if name and name in by_name:
                return by_name[name]
        raise UnsupportedArchitecture(
            f"The installed gguf package does not know the GGUF architecture {self.gguf_arch!r}; "
            "upgrade it (pip install -U gguf)."
        )

    # -- hooks ------------------------------------------------------------------------------------------
    def n_layer(self) -> int:
        return int(self.config["num_hidden_layers"])

    def n_mtp(self) -> int:
        return 0

    def has_mtp(self, ckpt: Checkpoint) -> bool:
        """The checkpoint ships the MTP block the config announces."""
        return any(n.startswith(f"model.layers.{self.n_layer()}.") for n in ckpt.tensors)

    def block_count(self, keep_mtp: bool) -> int:
        return self.n_layer() + (self.n_mtp() if keep_mtp else 0)

    def skip(self, hf_name: str, ctx: Context) -> bool:
        if hf_name.endswith(_SKIP_SUFFIXES):
            return True
        if self.config.get("tie_word_embeddings") and hf_name == "lm_head.weight":
            return True
        m = re.match(r"model\.layers\.(\d+)\.", hf_name)
        return bool(m and int(m.group(1)) >= self.n_layer() and not ctx.keep_mtp)

    def normalize(self, hf_name: str) -> str:
        """Rename quirks before lookup (e.g. DeepSeek's `e_score_correction_bias`)."""
        return hf_name

    def expected_shapes(self) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        """HF-orientation shapes ([out, in] for weights) per tensor kind; experts: one expert's shape."""
        return {}

    def transform(
        self, hf_name: str, gguf_name: str, kind: gguf.MODEL_TENSOR, ctx: Context
    ) -> list[OutTensor] | None:
        """Return tensors for a source that is not a plain copy, or None for the default."""
        return None

    def extra(self, ctx: Context) -> list[OutTensor]:
        """Generated tensors (e.g. Llama-3's rope_freqs)."""
        return []

    def metadata(self, w: gguf.GGUFWriter, keep_mtp: bool) -> None:
        raise NotImplementedError

    def default_chat_template(self, source: Path) -> str | None:
        """The template to embed when the tokenizer files bring none (llama.cpp's converter does for V4)."""
        return None

    def facts(self, keep_mtp: bool):
        from quantize.types import ModelFacts

        c = self.config
        return ModelFacts(
            arch=self.gguf_arch,
            n_layer_all=self.block_count(keep_mtp),
            n_expert=int(c.get("n_routed_experts") or c.get("num_experts") or 0),
            n_head=int(c["num_attention_heads"]),
            n_head_kv=int(c.get("num_key_value_heads") or c["num_attention_heads"]),
        )

    # -- the plan ---------------------------------------------------------------------------------------
    def name_map(self, n_blocks: int) -> dict[str, tuple[gguf.MODEL_TENSOR, str]]:
        """HF base name → (tensor kind, GGUF base name), from gguf-py's tables plus `extra_tensors`."""
        allowed = set(gguf.MODEL_TENSORS.get(self.model_arch, ())) | set(self.extra_tensors)
        out: dict[str, tuple[gguf.MODEL_TENSOR, str]] = {}
        for kind, keys in gguf.TensorNameMap.mappings_cfg.items():
            if kind in allowed:
                for key in keys:
                    out[key] = (kind, gguf.TENSOR_NAMES[kind])
        block_cfg = dict(gguf.TensorNameMap.block_mappings_cfg)
        block_cfg.update(gguf.TensorNameMap.arch_block_mappings_cfg.get(self.model_arch, {}))
        for bid in range(n_blocks):
            for kind, keys in block_cfg.items():
                if kind in allowed:
                    gname = gguf.TENSOR_NAMES[kind].format(bid=bid)
                    for key in keys:
                        out[key.format(bid=bid)] = (kind, gname)
        return out

    def plan(self, ctx: Context) -> list[OutTensor]:
        """Every GGUF tensor with its row source. Fails before any work on unmapped tensors, missing experts
        or unexpected shapes."""
        names = self.name_map(self.block_count(ctx.keep_mtp))
        shapes = self.expected_shapes()
        plan: list[OutTensor] = list(self.extra(ctx))
        unmapped: list[str] = []
        experts: dict[str, dict[int, str]] = {}
        expert_kind: dict[str, tuple[gguf.MODEL_TENSOR, str]] = {}
        for hf_name in ctx.ckpt.tensors:
            if self.skip(hf_name, ctx):
                continue
            m = _EXPERT.match(hf_name)
            if m:
                merged = f"{m['prefix']}.{m['w']}"
                hit = names.get(merged)
                if hit is None:
                    unmapped.append(hf_name)
                    continue
                experts.setdefault(merged, {})[int(m["xid"])] = hf_name
                expert_kind[merged] = hit
                continue
            key = self.normalize(hf_name)
            hit = names.get(key)  # a table of whole names (V4's), or of base names without .weight/.bias
            if hit is not None:
                kind, gname = hit
                _check_shape(ctx, hf_name, shapes.get(kind))
            else:
                base, suffix = _split_suffix(key)
                hit = names.get(base)
                if hit is None:
                    unmapped.append(hf_name)
                    continue
                kind, gbase = hit
                gname = gbase + suffix
                _check_shape(ctx, hf_name, shapes.get(kind) if suffix == ".weight" else None)
            special = self.transform(hf_name, gname, kind, ctx)
            if special is not None:
                plan.extend(special)
            else:
                plan.append(plain(ctx, hf_name, gname))
        if unmapped:
            raise UnsupportedArchitecture(
                f"{len(unmapped)} tensor(s) of this {self.hf_architectures[0]} checkpoint have no GGUF name "
                f"(first: {unmapped[0]}); this variant is not supported yet."
            )
        n_expert = int(self.config.get("n_routed_experts") or self.config.get("num_experts") or 0)
        for merged, by_id in experts.items():
            kind, gbase = expert_kind[merged]
            missing = sorted(set(range(n_expert)) - set(by_id))
            extra = sorted(set(by_id) - set(range(n_expert)))
            if missing or extra:
                raise SourceError(
                    f"{merged}: expected experts 0…{n_expert - 1}, "
                    f"{'missing ' + str(missing[:5]) if missing else 'unexpected ' + str(extra[:5])}; "
                    "the checkpoint is incomplete."
                )
            srcs = [by_id[i] for i in range(n_expert)]
            for s in srcs:
                _check_shape(ctx, s, shapes.get(kind))
            plan.append(_stacked(ctx, srcs, gbase + ".weight"))
        return _order(plan)


def _split_suffix(name: str) -> tuple[str, str]:
    for suffix in (".weight", ".bias"):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _check_shape(ctx: Context, hf_name: str, expected: tuple[int, ...] | None) -> None:
    info = ctx.ckpt.info(hf_name)
    got = tuple(info.shape)
    if info.dtype in ("I8", "U8") and len(got) == 2:  # packed FP4: two values a byte
        got = (got[0], 2 * got[1])
    if expected is not None and got != tuple(expected):
        raise SourceError(
            f"{hf_name} has shape {list(got)} but config.json implies {list(expected)}; "
            "the checkpoint and its config.json do not match."
        )


def plain(ctx: Context, hf_name: str, gname: str) -> OutTensor:
    """A tensor copied as it is (rows streamed in chunks), whatever the target type."""
    src = ctx.source(hf_name)
    shape = tuple(src.shape) if len(src.shape) >= 1 else (1,)

    def chunks() -> Iterator[np.ndarray]:
        yield from src.chunks(rows_for(src.cols))
        src.release()

    return OutTensor(gname, shape, chunks, [hf_name])


def _stacked(ctx: Context, hf_names: list[str], gname: str) -> OutTensor:
    """Experts [out, in] each → one [n_expert, out, in] tensor, streamed expert by expert. MXFP4 experts can
    also stream as ggml `block_mxfp4` bytes (`raw_chunks`), unchanged."""
    srcs = [ctx.source(n) for n in hf_names]
    first = srcs[0].shape
    for s in srcs[1:]:
        if s.shape != first or s.is_mxfp4 != srcs[0].is_mxfp4:
            raise SourceError(
                f"{s.name} has shape {list(s.shape)} but {srcs[0].name} has {list(first)}; "
                "experts of one layer must match."
            )

    def chunks() -> Iterator[np.ndarray]:
        for s in srcs:
            yield from s.chunks(rows_for(s.cols))
            s.release()

    def raw_chunks() -> Iterator[np.ndarray]:
        for s in srcs:
            step = rows_for(s.cols)
            for r0 in range(0, s.rows, step):
                yield s.raw(r0, min(s.rows, r0 + step))
            s.release()

    mx = srcs[0].is_mxfp4
    return OutTensor(
        gname,
        (len(srcs), *first),
        chunks,
        list(hf_names),
        rows_per_expert=first[0],
        native=gguf.GGMLQuantizationType.MXFP4 if mx else None,
        raw_chunks=raw_chunks if mx else None,
    )


def per_group(
    src: RowSource, group_rows: int, fn: Callable[[np.ndarray, int], np.ndarray]
) -> Iterator[np.ndarray]:
    """Read `group_rows` rows at a time (whole heads), transform each group with `fn(rows, group_index)`."""
    per = max(1, rows_for(src.cols, 1) // group_rows)
    g = 0
    n_groups = src.rows // group_rows
    while g < n_groups:
        g1 = min(n_groups, g + per)
        block = src.read(g * group_rows, g1 * group_rows)
        yield np.concatenate(
            [fn(block[(i - g) * group_rows : (i - g + 1) * group_rows], i) for i in range(g, g1)]
        )
        g = g1
    src.release()


def _order(plan: list[OutTensor]) -> list[OutTensor]:
    """File order: token_embd, rope_freqs, blocks by layer, output_norm, output (as llama.cpp writes)."""

    def key(t: OutTensor) -> tuple[int, int, str]:
        m = re.match(r"blk\.(\d+)\.", t.name)
        if m:
            return (1, int(m.group(1)), "")
        head = {"token_embd": 0, "rope_freqs": 0}.get(t.name.split(".")[0])
        return (0, 0, t.name) if head is not None else (2, 0, t.name)

    return sorted(plan, key=key)
