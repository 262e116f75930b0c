"""Save and load localseek-nano exactly the way DeepSeek ships V3/R1.

- Linear weights of the decoder layers (attention projections, dense MLP, shared and routed experts, the MTP
  layer's too) are FP8 e4m3 with a float32 `<name>_scale_inv` of shape [ceil(out/128), ceil(in/128)]: the real
  value is fp8 × scale_inv of its 128×128 block (edge blocks are partial).
- Embeddings, norms, the router weight, `eh_proj`, the heads are BF16; `e_score_correction_bias` is F32.
- Routed experts are stored one by one (`mlp.experts.<e>.{gate,up,down}_proj.weight`), the layout the Hub
  checkpoint has (transformers fuses them into `gate_up_proj` on load).
- The MTP module is layer `num_hidden_layers`, with its own copies of the embedding and the output head.
- Two shards plus `model.safetensors.index.json`; `config.json` carries `quantization_config`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from localseek_train.model import NanoModel

BLOCK = 128
FP8_MAX = 448.0
QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [BLOCK, BLOCK],
}
_FP8_NAME = re.compile(
    r"^model\.layers\.\d+\.(self_attn\.(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.shared_experts\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj))\.weight$"
)


def is_fp8_weight(name: str) -> bool:
    return bool(_FP8_NAME.match(name))


def _block_amax(w: torch.Tensor) -> torch.Tensor:
    out, inp = w.shape
    rows, cols = math.ceil(out / BLOCK), math.ceil(inp / BLOCK)
    padded = torch.zeros(rows * BLOCK, cols * BLOCK, dtype=torch.float32)
    padded[:out, :inp] = w.float().abs()
    return padded.view(rows, BLOCK, cols, BLOCK).amax(dim=(1, 3))


def _expand(scale: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return scale.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[: shape[0], : shape[1]]


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D float weight → (float8_e4m3fn weight, float32 scale_inv per 128×128 block)."""
    amax = _block_amax(w)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (w.float() / _expand(scale, w.shape)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_fp8(q: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    return q.float() * _expand(scale_inv.float(), q.shape)


def fp8_roundtrip(w: torch.Tensor) -> torch.Tensor:
    """What a weight becomes after quantize_fp8 → dequantize_fp8; a 3-D stack is done matrix by matrix.

    Vectorised (used on every step of FP8-aware training); equal to the 2-D path (a test checks this).
    """
    squeeze = w.dim() == 2
    x = w.float().unsqueeze(0) if squeeze else w.float()
    e, out, inp = x.shape
    rows, cols = math.ceil(out / BLOCK), math.ceil(inp / BLOCK)
    padded = torch.zeros(e, rows * BLOCK, cols * BLOCK, dtype=torch.float32)
    padded[:, :out, :inp] = x
    blocks = padded.view(e, rows, BLOCK, cols, BLOCK)
    amax = blocks.abs().amax(dim=(2, 4), keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (blocks / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale
    res = q.view(e, rows * BLOCK, cols * BLOCK)[:, :out, :inp]
    return (res[0] if squeeze else res).to(w.dtype)


# ---------------------------------------------------------------- name mapping


def v3_state_dict(model: NanoModel) -> dict[str, torch.Tensor]:
    """Full-precision tensors under DeepSeek-V3 checkpoint names (experts unfused, MTP as layer n)."""
    n = model.config.num_hidden_layers
    inter = model.config.moe_intermediate_size
    out: dict[str, torch.Tensor] = {}

    def put_layer(prefix: str, sd: dict[str, torch.Tensor]) -> None:
        for k, v in sd.items():
            if k.endswith("mlp.experts.gate_up_proj"):
                base = k[: -len("gate_up_proj")]
                for e in range(v.shape[0]):
                    out[f"{prefix}{base}{e}.gate_proj.weight"] = v[e, :inter]
                    out[f"{prefix}{base}{e}.up_proj.weight"] = v[e, inter:]
            elif k.endswith("mlp.experts.down_proj"):
                base = k[: -len("down_proj")]
                for e in range(v.shape[0]):
                    out[f"{prefix}{base}{e}.down_proj.weight"] = v[e]
            else:
                out[prefix + k] = v

    lm_sd = {k: v.detach() for k, v in model.lm.state_dict().items()}
    put_layer("", lm_sd)
    mtp = model.mtp
    put_layer(f"model.layers.{n}.", {k: v.detach() for k, v in mtp.layer.state_dict().items()})
    out[f"model.layers.{n}.embed_tokens.weight"] = lm_sd["model.embed_tokens.weight"]
    out[f"model.layers.{n}.enorm.weight"] = mtp.enorm.weight.detach()
    out[f"model.layers.{n}.hnorm.weight"] = mtp.hnorm.weight.detach()
    out[f"model.layers.{n}.eh_proj.weight"] = mtp.eh_proj.weight.detach()
    out[f"model.layers.{n}.shared_head.norm.weight"] = mtp.shared_head_norm.weight.detach()
    out[f"model.layers.{n}.shared_head.head.weight"] = lm_sd["lm_head.weight"]
    return out


def load_v3_state_dict(model: NanoModel, sd: dict[str, torch.Tensor]) -> None:
    """Inverse of v3_state_dict (weights already dequantized to float)."""
    n = model.config.num_hidden_layers
    sd = dict(sd)
    mtp_prefix = f"model.layers.{n}."
    mtp_extra = {
        "embed_tokens.weight", "enorm.weight", "hnorm.weight", "eh_proj.weight",
        "shared_head.norm.weight", "shared_head.head.weight",
    }
    mtp_sd = {k[len(mtp_prefix):]: sd.pop(k) for k in list(sd) if k.startswith(mtp_prefix)}

    def fuse(layer_sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        res, experts = {}, {}
        for k, v in layer_sd.items():
            m = re.match(rf"^({re.escape(prefix)}.*mlp\.experts\.)(\d+)\.(gate|up|down)_proj\.weight$", k)
            if m:
                experts.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = v
            else:
                res[k] = v
        for base, parts in experts.items():
            count = 1 + max(e for e, _ in parts)
            res[base + "gate_up_proj"] = torch.stack(
                [torch.cat([parts[(e, "gate")], parts[(e, "up")]], 0) for e in range(count)]
            )
            res[base + "down_proj"] = torch.stack([parts[(e, "down")] for e in range(count)])
        return res

    model.lm.load_state_dict(fuse(sd, ""), strict=True)
    layer_sd = fuse({k: v for k, v in mtp_sd.items() if k not in mtp_extra}, "")
    model.mtp.layer.load_state_dict(layer_sd, strict=True)
    model.mtp.enorm.weight.data.copy_(mtp_sd["enorm.weight"])
    model.mtp.hnorm.weight.data.copy_(mtp_sd["hnorm.weight"])
    model.mtp.eh_proj.weight.data.copy_(mtp_sd["eh_proj.weight"])
    model.mtp.shared_head_norm.weight.data.copy_(mtp_sd["shared_head.norm.weight"])
    for name, own in (("embed_tokens.weight", model.lm.model.embed_tokens.weight),
                      ("shared_head.head.weight", model.lm.lm_head.weight)):
        if not torch.equal(mtp_sd[name].float(), own.detach().float()):
            raise ValueError(f"model.layers.{n}.{name} differs from the trunk's copy; nano ties them")


# ---------------------------------------------------------------- files


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def save_checkpoint(model: NanoModel, out: Path, extra_files: dict[str, str | dict]) -> None:
    """Write config.json, two FP8 shards + index, and `extra_files` (name → text or JSON) into `out`,
    atomically: everything goes to a sibling temp dir that replaces `out` at the end."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    n = model.config.num_hidden_layers
    shards: list[dict[str, torch.Tensor]] = [{}, {}]
    for name, w in v3_state_dict(model).items():
        shard = shards[1 if name.startswith(f"model.layers.{n}.") else 0]
        if is_fp8_weight(name):
            q, s = quantize_fp8(w)
            shard[name], shard[name + "_scale_inv"] = q.contiguous(), s.contiguous()
        elif name.endswith("e_score_correction_bias"):
            shard[name] = w.float().contiguous()
        else:
            shard[name] = w.to(torch.bfloat16).contiguous()
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(tmp / fname), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    _atomic_json(tmp / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    config = dict(model.cfg)
    config["quantization_config"] = dict(QUANTIZATION_CONFIG)
    _atomic_json(tmp / "config.json", config)
    for fname, content in extra_files.items():
        if isinstance(content, dict):
            _atomic_json(tmp / fname, content)
        else:
            (tmp / fname).write_text(content, encoding="utf-8")
    tmp.chmod(0o755)
    for f in tmp.iterdir():
        f.chmod(0o644)
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            _rmtree(old)
        os.replace(out, old)
        os.replace(tmp, out)
        _rmtree(old)
    else:
        os.replace(tmp, out)


def _rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, dequantized float32 tensors by V3 name) from a checkpoint directory."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    index = json.loads((path / "model.safetensors.index.json").read_text(encoding="utf-8"))
    raw: dict[str, torch.Tensor] = {}
    for fname in sorted(set(index["weight_map"].values())):
        raw.update(load_file(str(path / fname)))
    sd = {}
    for name, t in raw.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            sd[name] = dequantize_fp8(t, raw[name + "_scale_inv"])
        else:
            sd[name] = t.float()
    return config, sd


def load_checkpoint(path: Path) -> NanoModel:
    config, sd = read_checkpoint(path)
    cfg = {k: v for k, v in config.items() if k != "quantization_config"}
    model = NanoModel(cfg)
    load_v3_state_dict(model, sd)
    return model.eval()
