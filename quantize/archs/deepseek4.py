"""DeepSeek-V4 (`DeepseekV4ForCausalLM`) → GGUF `deepseek4`, as llama.cpp's loader (src/models/deepseek4.cpp) reads it.

V4 ships with its own tensor names (`embed`, `layers.N.attn.wq_a`, `layers.N.ffn.experts.E.w1`, no `model.`
prefix), and gguf-py 0.19 knows neither the architecture nor most of its tensor kinds, so the whole name table
is data here (the same mapping as llama.cpp's converter, `DeepseekV4Model._map_dsv4_tensor_name`).

- Attention: q-LoRA (`wq_a`, `q_norm`, `wq_b`), one shared KV head (`wkv`, `kv_norm`), grouped low-rank output
  (`wo_a` [groups·rank, heads·dim/groups], `wo_b`), per-head attention sinks; layers with compress ratio 4 or 128
  have a KV compressor (`compressor.{wkv,wgate,ape,norm}`), ratio-4 layers a lightning indexer with its own
  compressor (`indexer.{wq_b,weights_proj,compressor.*}`).
- Hyper-connections: `hc_{attn,ffn}_{fn,base,scale}` per layer, `hc_head_*` before the output norm. The
  checkpoint keeps them (and the sinks and compressor position biases) in F32: they stay F32 at every type,
  as llama.cpp's converter keeps them.
- MoE: sqrt-softplus router with `gate.bias` (`exp_probs_b`); the first `num_hash_layers` layers route by a
  token → experts table (`gate.tid2eid`, I64 → I32; their unused `gate.bias` is dropped, as llama.cpp does).
  Routed experts are MXFP4 in the checkpoint: written as MXFP4 byte for byte (repacked into ggml's block
  layout) unless `--experts` names another type, then decoded a chunk of rows at a time and quantized to it.
- Metadata: SwiGLU clamps per layer, compress ratios, output groups / LoRA rank, hyper-connection count,
  Sinkhorn iterations and epsilon, hash layer count, `embedding_length_out` = hidden × streams.
- Chat template: V4 ships none in tokenizer_config.json; llama.cpp's converter embeds its own default (the
  `-0731` one for folders so named). The same files are in quantize/templates/ (from llama.cpp, MIT).
- MTP: the `mtp.0.*` block has its own hyper-connection head, and a deepseek4 model file has no slot for it
  (llama.cpp's MTP graph takes the file's `output_hc_*`). So, as llama.cpp's converter does, the model file
  drops it, and `mtp_only` writes it as a draft model of its own (llama.cpp's `--mtp`): the MTP layer as block
  `num_hidden_layers` (`e_proj`|`h_proj` concatenated into `nextn.eh_proj`, `enorm`, `hnorm`,
  `norm` → `nextn.shared_head_norm`), its `hc_head_*` as the file's `output_hc_*`, plus the embeddings, the
  output norm and head; `nextn_predict_layers` set. llama.cpp loads it with `load_mtp` (no trunk tensors).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

from quantize.archs.base import Arch, Context, OutTensor, plain
from quantize.archs.common import text_metadata
from quantize.errors import SourceError
from quantize.reader import rows_for

T = gguf.GGMLQuantizationType
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# checkpoint name → (kind, GGUF name); kinds are the GGUF base names (gguf-py 0.19 has no enum for most)
ROOT = {
    "embed.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "head.weight": "output.weight",
    "hc_head_fn": "output_hc_fn.weight",
    "hc_head_base": "output_hc_base.weight",
    "hc_head_scale": "output_hc_scale.weight",
}
LAYER = {
    "attn_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "hc_attn_fn": "hc_attn_fn.weight",
    "hc_attn_base": "hc_attn_base.weight",
    "hc_attn_scale": "hc_attn_scale.weight",
    "hc_ffn_fn": "hc_ffn_fn.weight",
    "hc_ffn_base": "hc_ffn_base.weight",
    "hc_ffn_scale": "hc_ffn_scale.weight",
    "attn.attn_sink": "attn_sinks.weight",
    "attn.wq_a.weight": "attn_q_a.weight",
    "attn.q_norm.weight": "attn_q_a_norm.weight",
    "attn.wq_b.weight": "attn_q_b.weight",
    "attn.wkv.weight": "attn_kv.weight",
    "attn.kv_norm.weight": "attn_kv_a_norm.weight",
    "attn.wo_a.weight": "attn_output_a.weight",
    "attn.wo_b.weight": "attn_output_b.weight",
    "attn.compressor.ape": "attn_compressor_ape.weight",
    "attn.compressor.wkv.weight": "attn_compressor_kv.weight",
    "attn.compressor.wgate.weight": "attn_compressor_gate.weight",
    "attn.compressor.norm.weight": "attn_compressor_norm.weight",
    "attn.indexer.wq_b.weight": "indexer.attn_q_b.weight",
    "attn.indexer.weights_proj.weight": "indexer.proj.weight",
    "attn.indexer.compressor.ape": "indexer_compressor_ape.weight",
    "attn.indexer.compressor.wkv.weight": "indexer_compressor_kv.weight",
    "attn.indexer.compressor.wgate.weight": "indexer_compressor_gate.weight",
    "attn.indexer.compressor.norm.weight": "indexer_compressor_norm.weight",
    "ffn.gate.weight": "ffn_gate_inp.weight",
    "ffn.gate.bias": "exp_probs_b.bias",
    "ffn.gate.bias_vl": "exp_probs_b_vl.bias",  # vision variant: routing bias of image tokens
    "ffn.gate.tid2eid": "ffn_gate_tid2eid.weight",
    "ffn.shared_experts.w1.weight": "ffn_gate_shexp.weight",
    "ffn.shared_experts.w2.weight": "ffn_down_shexp.weight",
    "ffn.shared_experts.w3.weight": "ffn_up_shexp.weight",
}
EXPERTS = {
    "ffn.experts.w1": "ffn_gate_exps",
    "ffn.experts.w2": "ffn_down_exps",
    "ffn.experts.w3": "ffn_up_exps",
}
SKIP_PREFIXES = ("aligner.", "image_", "vision.")
NEXTN = {  # the MTP block's own tensors (mtp.N.<name>) besides a full layer
    "enorm.weight": "nextn.enorm.weight",
    "hnorm.weight": "nextn.hnorm.weight",
    "norm.weight": "nextn.shared_head_norm.weight",
}
MTP_ROOTS = ("embed.weight", "norm.weight", "head.weight")  # what an MTP-only file takes from the model

# keys gguf-py 0.19 has no writer method for (llama.cpp's gguf-py constants.py)
K_OUTPUT_GROUPS = "{arch}.attention.output_group_count"
K_OUTPUT_LORA = "{arch}.attention.output_lora_rank"
K_COMPRESS_RATIOS = "{arch}.attention.compress_ratios"
K_COMPRESS_ROPE_BASE = "{arch}.attention.compress_rope_freq_base"
K_HC_COUNT = "{arch}.hyper_connection.count"
K_HC_SINKHORN = "{arch}.hyper_connection.sinkhorn_iterations"
K_HC_EPS = "{arch}.hyper_connection.epsilon"
K_HASH_LAYERS = "{arch}.hash_layer_count"

_LAYER_NAME = re.compile(r"^layers\.(\d+)\.(.+)$")


class DeepseekV4(Arch):
    hf_architectures = ("DeepseekV4ForCausalLM",)
    gguf_arch = "deepseek4"
    tokenizer_pre = "deepseek-v3"
    mtp_in_file = False
    mtp_only_supported = True

    def _model_arch(self):  # the name table is ours (ROOT, LAYER, EXPERTS): no gguf-py table needed
        return None

    def n_mtp(self) -> int:
        return int(self.config.get("num_nextn_predict_layers") or 0)

    def has_mtp(self, ckpt) -> bool:
        return any(n.startswith("mtp.0.") for n in ckpt.tensors)

    def ratio(self, layer: int) -> int:
        ratios = self.config.get("compress_ratios") or []
        return int(ratios[layer]) if layer < len(ratios) else 0

    def skip(self, hf_name: str, ctx: Context) -> bool:
        if hf_name.endswith(".scale") or hf_name.startswith(SKIP_PREFIXES):
            return True  # FP8/MXFP4 scales are read with their weights
        if hf_name.startswith("mtp."):  # e/h projections: one eh_proj (`extra`)
            return not ctx.mtp_only or hf_name.split(".", 2)[2] in ("e_proj.weight", "h_proj.weight")
        if ctx.mtp_only:
            return hf_name not in MTP_ROOTS
        m = _LAYER_NAME.match(hf_name)  # hash layers route by tid2eid: their gate.bias is unused
        return bool(
            m and m[2] == "ffn.gate.bias" and int(m[1]) < int(self.config.get("num_hash_layers") or 0)
        )

    def name_map(self, n_blocks: int) -> dict[str, tuple[str, str]]:
        out = {k: (v.removesuffix(".weight"), v) for k, v in ROOT.items()}
        for bid in range(n_blocks):
            for k, v in LAYER.items():
                kind = v.rsplit(".", 1)[0]
                out[f"layers.{bid}.{k}"] = (kind, f"blk.{bid}.{v}")
            for k, v in EXPERTS.items():
                out[f"layers.{bid}.{k}"] = (v, f"blk.{bid}.{v}")
        for i in range(self.n_mtp()):  # the MTP block(s), after the model's layers
            bid, p = self.n_layer() + i, f"mtp.{i}."
            for k, v in {**LAYER, **NEXTN}.items():
                out[p + k] = (v.rsplit(".", 1)[0], f"blk.{bid}.{v}")
            for k, v in EXPERTS.items():
                out[p + k] = (v, f"blk.{bid}.{v}")
            for k in ("hc_head_fn", "hc_head_base", "hc_head_scale"):  # the draft file's own output head
                out[p + k] = (ROOT[k].removesuffix(".weight"), ROOT[k])
        return out  # type: ignore[return-value]

    def extra(self, ctx: Context) -> list[OutTensor]:
        """The MTP-only file's `nextn.eh_proj`: [e_proj | h_proj] side by side, as llama.cpp concatenates them."""
        if not ctx.mtp_only:
            return []
        out = []
        for i in range(self.n_mtp()):
            e, h = ctx.source(f"mtp.{i}.e_proj.weight"), ctx.source(f"mtp.{i}.h_proj.weight")
            if e.shape != h.shape or len(e.shape) != 2:
                raise SourceError(f"mtp.{i}.e_proj and h_proj have shapes {list(e.shape)}, {list(h.shape)}.")

            def chunks(e=e, h=h) -> Iterator[np.ndarray]:
                step = rows_for(2 * e.cols)
                for r0 in range(0, e.rows, step):
                    r1 = min(e.rows, r0 + step)
                    yield np.concatenate([e.read(r0, r1), h.read(r0, r1)], axis=1)
                e.release()
                h.release()

            name = f"blk.{self.n_layer() + i}.nextn.eh_proj.weight"
            out.append(OutTensor(name, (e.rows, 2 * e.cols), chunks, [e.name, h.name]))
        return out

    def expected_shapes(self) -> dict:
        c = self.config
        h, nh, hd = int(c["hidden_size"]), int(c["num_attention_heads"]), int(c["head_dim"])
        q, groups, o_rank = int(c["q_lora_rank"]), int(c["o_groups"]), int(c["o_lora_rank"])
        hc, vocab = int(c["hc_mult"]), int(c["vocab_size"])
        ne, moe = int(c["n_routed_experts"]), int(c["moe_intermediate_size"])
        shexp = moe * int(c.get("n_shared_experts") or 0)
        ih, idim = int(c["index_n_heads"]), int(c["index_head_dim"])
        mix = (2 + hc) * hc
        return {
            "token_embd": (vocab, h),
            "output": (vocab, h),
            "output_norm": (h,),
            "output_hc_fn": (hc, hc * h),
            "output_hc_base": (hc,),
            "output_hc_scale": (1,),
            "attn_norm": (h,),
            "ffn_norm": (h,),
            "hc_attn_fn": (mix, hc * h),
            "hc_ffn_fn": (mix, hc * h),
            "hc_attn_base": (mix,),
            "hc_ffn_base": (mix,),
            "hc_attn_scale": (3,),
            "hc_ffn_scale": (3,),
            "attn_sinks": (nh,),
            "attn_q_a": (q, h),
            "attn_q_a_norm": (q,),
            "attn_q_b": (nh * hd, q),
            "attn_kv": (hd, h),
            "attn_kv_a_norm": (hd,),
            "attn_output_a": (groups * o_rank, nh * hd // groups),
            "attn_output_b": (h, groups * o_rank),
            "attn_compressor_norm": (hd,),
            "indexer.attn_q_b": (ih * idim, q),
            "indexer.proj": (ih, h),
            "indexer_compressor_kv": (2 * idim, h),
            "indexer_compressor_gate": (2 * idim, h),
            "indexer_compressor_ape": (4, 2 * idim),
            "indexer_compressor_norm": (idim,),
            "ffn_gate_inp": (ne, h),
            "exp_probs_b": (ne,),
            "exp_probs_b_vl": (ne,),
            "ffn_gate_tid2eid": (vocab, int(c["num_experts_per_tok"])),
            "ffn_gate_exps": (moe, h),
            "ffn_up_exps": (moe, h),
            "ffn_down_exps": (h, moe),
            "ffn_gate_shexp": (shexp, h),
            "ffn_up_shexp": (shexp, h),
            "ffn_down_shexp": (h, shexp),
            "nextn.enorm": (h,),
            "nextn.hnorm": (h,),
            "nextn.shared_head_norm": (h,),
        }

    def transform(self, hf_name: str, gguf_name: str, kind, ctx: Context) -> list[OutTensor] | None:
        if kind in ("attn_compressor_kv", "attn_compressor_gate", "attn_compressor_ape"):
            layer = int(gguf_name.split(".")[1])
            ratio = self.ratio(layer)
            width = (2 if ratio == 4 else 1) * int(self.config["head_dim"])
            want = (
                (ratio, width) if kind == "attn_compressor_ape" else (width, int(self.config["hidden_size"]))
            )
            got = tuple(ctx.ckpt.info(hf_name).shape)
            if got != want:
                raise SourceError(
                    f"{hf_name} has shape {list(got)} but config.json (compress ratio {ratio} of layer {layer}) "
                    f"implies {list(want)}; the checkpoint and its config.json do not match."
                )
        if kind == "ffn_gate_tid2eid":
            return [_int_table(ctx, hf_name, gguf_name)]
        t = plain(ctx, hf_name, gguf_name)
        t.keep_f32 = ctx.ckpt.info(hf_name).dtype == "F32"
        return [t]

    def metadata(self, w: gguf.GGUFWriter, keep_mtp: bool) -> None:
        c, arch = self.config, self.gguf_arch
        n = self.block_count(keep_mtp)
        text_metadata(w, c, n)
        w.add_rope_dimension_count(int(c["qk_rope_head_dim"]))
        w.add_q_lora_rank(int(c["q_lora_rank"]))
        w.add_sliding_window(int(c["sliding_window"]))
        w.add_expert_feed_forward_length(int(c["moe_intermediate_size"]))
        w.add_expert_shared_count(int(c["n_shared_experts"]))
        w.add_expert_weights_scale(float(c["routed_scaling_factor"]))
        w.add_expert_weights_norm(bool(c["norm_topk_prob"]))
        w.add_swiglu_clamp_exp([float(c["swiglu_limit"])] * n)
        w.add_swiglu_clamp_shexp([float(c["swiglu_limit"])] * n)
        w.add_indexer_head_count(int(c["index_n_heads"]))
        w.add_indexer_key_length(int(c["index_head_dim"]))
        w.add_indexer_top_k(int(c["index_topk"]))
        w.add_uint32(K_OUTPUT_GROUPS.format(arch=arch), int(c["o_groups"]))
        w.add_uint32(K_OUTPUT_LORA.format(arch=arch), int(c["o_lora_rank"]))
        w.add_array(K_COMPRESS_RATIOS.format(arch=arch), [int(r) for r in c["compress_ratios"]])
        w.add_float32(K_COMPRESS_ROPE_BASE.format(arch=arch), float(c["compress_rope_theta"]))
        w.add_uint32(K_HC_COUNT.format(arch=arch), int(c["hc_mult"]))
        w.add_uint32(K_HC_SINKHORN.format(arch=arch), int(c["hc_sinkhorn_iters"]))
        w.add_float32(K_HC_EPS.format(arch=arch), float(c["hc_eps"]))
        w.add_uint32(K_HASH_LAYERS.format(arch=arch), int(c.get("num_hash_layers") or 0))
        w.add_embedding_length_out(int(c["hidden_size"]) * int(c["hc_mult"]))
        if keep_mtp and self.n_mtp():  # only in an MTP-only file
            w.add_nextn_predict_layers(self.n_mtp())

    def default_chat_template(self, source: Path) -> str | None:
        name = (
            "deepseek-ai-DeepSeek-V4-Flash-0731.jinja"
            if "0731" in source.name
            else "deepseek-ai-DeepSeek-V4.jinja"
        )
        return (TEMPLATES / name).read_text(encoding="utf-8")


def _int_table(ctx: Context, hf_name: str, gguf_name: str) -> OutTensor:
    """An integer table (tid2eid: token id → the experts it uses), written as I32 as it is."""
    src = ctx.source(hf_name)

    def raw() -> Iterator[np.ndarray]:
        yield src.ints()
        src.release()

    def floats() -> Iterator[np.ndarray]:
        raise SourceError(f"{hf_name} is an integer table; it cannot be converted to another type.")
        yield  # pragma: no cover

    return OutTensor(gguf_name, tuple(src.shape), floats, [hf_name], native=T.I32, raw_chunks=raw)


ARCHS = {"DeepseekV4ForCausalLM": DeepseekV4}
