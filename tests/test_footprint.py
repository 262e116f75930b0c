"""Footprints of header-only GGUFs with the real tensor inventories, checked against published file sizes and
against llama.cpp's own numbers (quantizer dry run for the per-tensor types, `no_alloc` loads for the KV cache
and compute buffers)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import gguf
import pytest
from inventory import (
    R1_LEGACY,
    V2_LITE,
    llama_dry_run,
    write_header_only,
)

from localseek.planning.footprint import classify, from_gguf
from localseek.models.gguf_info import read_gguf

Q = gguf.LlamaFileType
GB = 1e9
MiB = 1024**2


def test_header_only_files_take_no_disk(inventories) -> None:
    path = inventories["DeepSeek-R1-Q4_K_M"]
    assert path.stat().st_size > 400 * GB
    used = int(subprocess.run(["du", "-k", str(path)], check=False, capture_output=True, text=True).stdout.split()[0]) * 1024
    assert used < 50 * MiB


@pytest.mark.parametrize(
    "name, published_gb",
    [
        # file sizes of the published GGUFs these inventories reproduce (unsloth/DeepSeek-R1-GGUF, ollama)
        ("DeepSeek-R1-Q4_K_M", 404.4),
        ("DeepSeek-R1-Q8_0", 713.3),
        ("DeepSeek-R1-Q2_K", 244.0),
    ],
)
def test_sizes_match_published_quants(inventories, name: str, published_gb: float) -> None:
    size = inventories[name].stat().st_size / GB
    assert size == pytest.approx(published_gb, rel=0.01)


def test_r1_inventory_by_class(inventories) -> None:
    fp = from_gguf(read_gguf(inventories["DeepSeek-R1-Q4_K_M"]))
    assert fp.arch == "deepseek2" and fp.mla and not fp.legacy_mla
    assert fp.n_params == pytest.approx(671e9, rel=0.005)
    assert fp.n_layer == fp.n_layer_all == 61
    assert fp.moe_layers == list(range(3, 61))
    weights = fp.weights()
    assert fp.totals["routed_experts"] / weights > 0.97
    assert fp.totals["mtp"] == 0 and fp.totals["dense_ffn"] > 0 and fp.totals["shared_experts"] > 0
    # every tensor is accounted for exactly once
    assert sum(fp.totals.values()) == sum(t.n_bytes for t in read_gguf(inventories["DeepSeek-R1-Q4_K_M"]).tensors)
    dense, moe = fp.layers[0], fp.layers[3]
    assert dense.experts == 0 and dense.bytes["dense_ffn"] > 0
    assert len(moe.expert_tensors) == 3 and moe.experts > 50 * dense.bytes["attention"]


def test_mtp_layer_is_its_own_class(inventories) -> None:
    fp = from_gguf(read_gguf(inventories["DeepSeek-R1+MTP-Q4_K_M"]))
    assert fp.n_layer == 61 and fp.n_layer_all == 62
    assert fp.totals["mtp"] > 5 * GB  # a full MoE decoder layer + eh_proj
    assert fp.weights(load_mtp=True) - fp.weights() == fp.totals["mtp"]
    assert fp.kv_bytes(4096) == from_gguf(read_gguf(inventories["DeepSeek-R1-Q4_K_M"])).kv_bytes(4096)


@pytest.mark.parametrize(
    "name, per_token",
    [
        ("DeepSeek-R1-Q4_K_M", 61 * (512 + 64) * 2),  # MLA: compressed latent + RoPE key, K only
        ("DeepSeek-V2-Lite-Q4_K_M", 27 * (512 + 64) * 2),
        ("R1-Distill-Qwen-7B-Q4_K_M", 28 * 2 * 4 * 128 * 2),  # GQA: K and V for 4 KV heads
        ("R1-Distill-Llama-70B-Q4_K_M", 80 * 2 * 8 * 128 * 2),
        ("R1-0528-Qwen3-8B-Q4_K_M", 36 * 2 * 8 * 128 * 2),
    ],
)
def test_kv_bytes_per_token(inventories, name: str, per_token: int) -> None:
    assert from_gguf(read_gguf(inventories[name])).kv_bytes_per_token() == per_token


def test_legacy_deepseek2_caches_full_heads(tmp_path: Path) -> None:
    """A deepseek2 GGUF converted before the MLA split caches K and V of all 128 heads: llama.cpp agrees."""
    path = write_header_only(tmp_path / "r1-legacy.gguf", R1_LEGACY)[0]
    fp = from_gguf(read_gguf(path))
    assert fp.legacy_mla and not fp.mla
    assert fp.kv_bytes_per_token() == 61 * 128 * (192 + 128) * 2
    assert fp.kv_bytes_per_token() / (61 * 576 * 2) == pytest.approx(71.1, rel=0.01)
    run = llama_dry_run(path, 1024, 128)
    assert abs(run.kv_bytes - fp.kv_bytes(1024)) < 0.02 * MiB


NAMES = [
    "DeepSeek-R1-Q4_K_M", "DeepSeek-V2-Lite-Q4_K_M", "R1-Distill-Qwen-1.5B-Q4_K_M", "R1-Distill-Qwen-7B-Q4_K_M",
    "R1-Distill-Llama-8B-Q4_K_M", "R1-Distill-Llama-70B-Q4_K_M", "R1-0528-Qwen3-8B-Q4_K_M",
]


@pytest.mark.parametrize("name", NAMES)
def test_kv_and_compute_match_llama_cpp_dry_run(inventories, name: str) -> None:
    """llama.cpp accepts every inventory (it checks each tensor's shape) and reports the memory it would use."""
    path = inventories[name]
    fp = from_gguf(read_gguf(path))
    for n_ctx, n_ubatch, fa in [(4096, 512, True), (4096, 512, False), (16384, 128, True), (16384, 128, False),
                                (2048, 2048, True)]:
        run = llama_dry_run(path, n_ctx, n_ubatch, fa)
        assert abs(run.kv_bytes - fp.kv_bytes(n_ctx)) < 0.01 * MiB * 2, (n_ctx, run.kv_bytes)
        estimate = fp.compute_bytes(n_ctx, n_ubatch, fa)
        assert 0.9 * run.compute_bytes <= estimate <= 1.3 * run.compute_bytes, (n_ctx, n_ubatch, fa, run.compute_bytes)


def test_types_come_from_llama_cpps_quantizer(inventories) -> None:
    info = read_gguf(inventories["DeepSeek-R1-Q4_K_M"])
    types = {t.name: t.type_name for t in info.tensors}
    assert types["blk.3.ffn_gate_exps.weight"] == "Q4_K"
    assert types["blk.0.attn_k_b.weight"] == "Q5_0"  # 128 columns: Q4_K's 256-blocks do not fit, llama.cpp falls back
    assert types["output.weight"] == "Q6_K" and types["blk.3.ffn_gate_inp.weight"] == "F32"


def test_split_model_is_summed_over_parts(tmp_path: Path) -> None:
    parts = write_header_only(tmp_path / "V2-Lite-BF16.gguf", V2_LITE, split_max_size=8 * 10**9)
    assert len(parts) == 4 and all(re.search(r"-0000\d-of-00004\.gguf$", p.name) for p in parts)
    whole = from_gguf(read_gguf(write_header_only(tmp_path / "whole.gguf", V2_LITE)[0]))
    split = from_gguf(read_gguf(parts[2]))
    assert split.totals == whole.totals and split.file_bytes > whole.weights()


@pytest.mark.parametrize(
    "name, cls, layer",
    [
        ("token_embd.weight", "embeddings", None),
        ("output.weight", "output", None),
        ("blk.5.attn_kv_a_mqa.weight", "attention", 5),
        ("blk.5.ffn_up_exps.weight", "routed_experts", 5),
        ("blk.5.ffn_gate_up_exps.weight", "routed_experts", 5),
        ("blk.5.ffn_down_shexp.weight", "shared_experts", 5),
        ("blk.5.exp_probs_b.bias", "router", 5),
        ("blk.0.ffn_gate.weight", "dense_ffn", 0),
        ("blk.5.ffn_norm.weight", "norms", 5),
        ("blk.61.attn_q_a.weight", "mtp", 61),
        ("blk.61.nextn.eh_proj.weight", "mtp", 61),
    ],
)
def test_classify(name: str, cls: str, layer: int | None) -> None:
    assert classify(name, 61) == (cls, layer)
