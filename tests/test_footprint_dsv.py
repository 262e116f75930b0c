"""Footprints of DeepSeek-V3.2 (`deepseek32`) and V4 (`deepseek4`) GGUFs, checked against llama.cpp's own numbers:
header-only files with the real V3.2 and V4-Flash inventories (tests/inventory_dsv.py), and tiny models converted
from the factory's V3.2 and V4 checkpoints by `quantize` — `no_alloc` loads give the KV caches (and V4's
compressor states) to the byte and the compute buffer llama.cpp would reserve."""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import pytest
from inventory import header_only_quant, llama_dry_run
from inventory_dsv import V4_FLASH, V32

from localseek.models.catalog import load_catalog
from localseek.models.gguf_info import read_gguf
from localseek.planning import hardware
from localseek.planning.footprint import EXPERT_RE, classify, from_catalog, from_gguf
from localseek.planning.plan import Request, make_plan
from localseek.sizes import GiB

MiB = 1024**2
GB = 1e9
# the same settings and tolerances as tests/test_footprint.py (context, micro-batch, flash attention)
SETTINGS = [(4096, 512, True), (4096, 512, False), (16384, 128, True), (16384, 128, False), (2048, 2048, True)]
# llama.cpp prints each buffer in MiB with 2 decimals: a few KiB of rounding per cache line
LOG_ROUNDING = 0.03 * MiB


@pytest.fixture(scope="module")
def dsv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Header-only V3.2 and V4-Flash GGUFs, plus tiny ones converted by `quantize` from tests/hf_factory.py."""
    import hf_factory as hf

    from quantize import convert

    d = tmp_path_factory.mktemp("dsv")
    q = gguf.LlamaFileType
    made = {
        "V3.2-Q4_K_M": header_only_quant(d, V32, q.MOSTLY_Q4_K_M)[0],
        "V4-Flash-Q4_K_M": header_only_quant(d, V4_FLASH, q.MOSTLY_Q4_K_M)[0],
        "V4-Flash-MXFP4": header_only_quant(d, V4_FLASH, q.MOSTLY_MXFP4_MOE)[0],
    }
    made["tiny-v32"] = d / "tiny-v32-Q8_0.gguf"
    convert(hf.write_deepseek_v32(d / "hf-v32"), made["tiny-v32"], qtype="Q8_0")
    made["tiny-v4"] = d / "tiny-v4-MXFP4_MOE.gguf"
    convert(hf.write_deepseek_v4(d / "hf-v4"), made["tiny-v4"], qtype="MXFP4_MOE")
    return made


def test_header_only_files_are_what_the_hub_publishes(dsv: dict[str, Path]) -> None:
    """V4-Flash with MXFP4 experts and Q8_0 elsewhere (MXFP4_MOE) is within 5 % of unsloth's "lossless" 8-bit
    upload (162 GB, unsloth.ai/docs/models/deepseek-v4); V3.2 at Q4_K_M is R1's Q4_K_M plus what V3.2 adds."""
    assert dsv["V4-Flash-MXFP4"].stat().st_size / GB == pytest.approx(162, rel=0.05)
    # R1's Q4_K_M (404.4 GB, unsloth) + the MTP layer llama.cpp's converter keeps (7.5 GB) + the indexers
    assert dsv["V3.2-Q4_K_M"].stat().st_size / GB == pytest.approx(404.4 + 7.5 + 0.5, rel=0.01)


def test_v32_inventory_by_class(dsv: dict[str, Path]) -> None:
    info = read_gguf(dsv["V3.2-Q4_K_M"])
    fp = from_gguf(info)
    assert fp.arch == "deepseek32" and fp.mla and fp.indexer_dim == 128 and fp.indexer_heads == 64
    assert (fp.n_layer, fp.n_layer_all, fp.indexer_top_k) == (61, 62, 2048)
    assert fp.n_params == pytest.approx(685e9, rel=0.01)  # the model card's 685B: 671B + the 14B MTP layer
    assert sum(fp.totals.values()) == sum(t.n_bytes for t in info.tensors)
    assert fp.moe_layers == list(range(3, 61))  # the MTP layer's experts are not the trunk's
    assert fp.totals["indexer"] > 0 and fp.totals["mtp"] > 5 * GB
    assert all(fp.layers[i].bytes["indexer"] > 0 for i in range(61))
    assert fp.totals["routed_experts"] / fp.weights() > 0.95


def test_v4_inventory_by_class(dsv: dict[str, Path]) -> None:
    info = read_gguf(dsv["V4-Flash-Q4_K_M"])
    fp = from_gguf(info)
    assert fp.arch == "deepseek4" and not fp.mla and fp.n_layer == fp.n_layer_all == 43
    assert fp.compress_ratios == V4_FLASH.compress_ratios[:43] and fp.n_swa == 128 and fp.n_embd_out == 4 * 4096
    assert fp.n_params == pytest.approx(284e9, rel=0.02)  # the model card's 284B (its MTP block is a file of its own)
    assert sum(fp.totals.values()) == sum(t.n_bytes for t in info.tensors)
    assert fp.moe_layers == list(range(43))  # every V4 layer is MoE
    by_layer = {cls: [i for i in range(43) if fp.layers[i].bytes.get(cls)] for cls in fp.totals}
    assert by_layer["indexer"] == [i for i, r in enumerate(V4_FLASH.compress_ratios[:43]) if r == 4]
    assert by_layer["hyper_connections"] == list(range(43)) and by_layer["router"] == list(range(43))
    assert fp.totals["output"] > fp.totals["embeddings"]  # output head + output_hc_*
    # the routed experts are exactly the tensors --cpu-moe and the planner's overrides name, and only those
    experts = {t.name for t in info.tensors if EXPERT_RE.search(t.name)}
    assert experts == {f"blk.{i}.ffn_{w}_exps.weight" for i in range(43) for w in ("gate", "up", "down")}
    assert {n for n, _ in (t for layer in fp.layers for t in layer.expert_tensors)} == experts


@pytest.mark.parametrize(
    "name, cls, layer",
    [
        ("blk.5.indexer.attn_q_b.weight", "indexer", 5),
        ("blk.5.indexer.k_norm.bias", "indexer", 5),
        ("blk.5.indexer_compressor_kv.weight", "indexer", 5),
        ("blk.5.attn_compressor_ape.weight", "attention", 5),
        ("blk.5.attn_sinks.weight", "attention", 5),
        ("blk.5.attn_output_a.weight", "attention", 5),
        ("blk.5.hc_attn_fn.weight", "hyper_connections", 5),
        ("blk.1.ffn_gate_tid2eid.weight", "router", 1),
        ("blk.5.ffn_gate_exps.weight", "routed_experts", 5),
        ("output_hc_fn.weight", "output", None),
        ("blk.61.indexer.proj.weight", "mtp", 61),
    ],
)
def test_classify_v32_v4_tensors(name: str, cls: str, layer: int | None) -> None:
    assert classify(name, 61) == (cls, layer)


def test_kv_per_token(dsv: dict[str, Path]) -> None:
    v32 = from_gguf(read_gguf(dsv["V3.2-Q4_K_M"]))
    assert v32.kv_bytes_per_token() == 61 * (512 + 64 + 128) * 2  # MLA latent + RoPE key + the indexer's key
    v4 = from_gguf(read_gguf(dsv["V4-Flash-Q4_K_M"]))
    # raw K of all 43 layers (full-size window cache), + 21 CSA layers' K and indexer key per 4 tokens,
    # + 20 HCA layers' K per 128 tokens
    assert v4.kv_bytes_per_token() == 43 * 512 * 2 + 21 * (512 + 128) * 2 / 4 + 20 * 512 * 2 / 128
    assert v4.kv_bytes_per_token(swa_full=False) == 21 * (512 + 128) * 2 / 4 + 20 * 512 * 2 / 128
    # 1M tokens of V4-Flash: 49.7 GiB as llama-cpp-python runs it, 6.8 GiB with a window-sized raw cache (V3.2:
    # 84 GiB; the model card: V4 needs about a tenth of V3.2's KV cache at 1M)
    assert v4.kv_bytes(1 << 20) / GiB == pytest.approx(49.7, abs=0.05)
    assert v4.kv_bytes(1 << 20, swa_full=False) / GiB == pytest.approx(6.76, abs=0.01)


@pytest.mark.parametrize("name", ["V3.2-Q4_K_M", "V4-Flash-Q4_K_M", "tiny-v32", "tiny-v4"])
def test_kv_and_compute_match_llama_cpp_dry_run(dsv: dict[str, Path], name: str) -> None:
    """The KV caches (V4: raw, CSA, HCA and indexer caches and the compressor states) to llama.cpp's rounding;
    the compute buffer within −10 %…+30 % of llama.cpp's reservation, as for every other architecture."""
    fp = from_gguf(read_gguf(dsv[name]))
    for n_ctx, n_ubatch, fa in SETTINGS:
        run = llama_dry_run(dsv[name], n_ctx, n_ubatch, fa)
        assert abs(run.kv_bytes + run.state_bytes - fp.kv_bytes(n_ctx, n_ubatch=n_ubatch)) < LOG_ROUNDING, n_ctx
        estimate = fp.compute_bytes(n_ctx, n_ubatch, fa)
        assert 0.9 * run.compute_bytes <= estimate <= 1.3 * run.compute_bytes, (n_ctx, n_ubatch, fa,
                                                                                run.compute_bytes, estimate)


@pytest.mark.parametrize("name", ["V4-Flash-Q4_K_M", "tiny-v4"])
def test_v4_window_sized_cache(dsv: dict[str, Path], name: str) -> None:
    """With `swa_full` off (llama.cpp's own tools' default) the raw cache holds window + micro-batch cells."""
    fp = from_gguf(read_gguf(dsv[name]))
    for n_ctx, n_ubatch in [(4096, 512), (16384, 128), (200, 64)]:
        run = llama_dry_run(dsv[name], n_ctx, n_ubatch, True, swa_full=False)
        assert abs(run.kv_bytes + run.state_bytes - fp.kv_bytes(n_ctx, n_ubatch=n_ubatch, swa_full=False)) \
            < LOG_ROUNDING
        estimate = fp.compute_bytes(n_ctx, n_ubatch, True, swa_full=False)
        assert 0.9 * run.compute_bytes <= estimate <= 1.3 * run.compute_bytes, (n_ctx, n_ubatch)


@pytest.mark.parametrize("name", ["V3.2-Q4_K_M", "tiny-v32"])
def test_v32_mtp_layer_has_a_latent_cache_of_its_own(dsv: dict[str, Path], name: str) -> None:
    """With MTP on, llama.cpp's MTP context caches the MTP layer's latent (dense MLA, no indexer)."""
    fp = from_gguf(read_gguf(dsv[name]))
    assert fp.n_layer_all == fp.n_layer + 1 and fp.totals["mtp"] > 0
    assert fp.kv_layer_bytes(fp.n_layer, 4096) == 4096 * (fp.kv_lora + fp.rope_dim) * 2
    assert fp.kv_layer_bytes(0, 4096) == 4096 * (fp.kv_lora + fp.rope_dim + fp.indexer_dim) * 2
    run = llama_dry_run(dsv[name], 4096, 512, True, mtp_context=True)
    assert abs(run.kv_bytes - fp.kv_layer_bytes(fp.n_layer, 4096)) < LOG_ROUNDING


def test_plan_places_v4_caches_with_their_layers(dsv: dict[str, Path]) -> None:
    """A 24 GiB GPU beside 256 GiB of RAM: all layers on the GPU with the first layers' experts in RAM; every
    layer's KV (V4's differ: CSA, HCA, window-only) is counted on the device of its layer."""
    fp = from_gguf(read_gguf(dsv["V4-Flash-Q4_K_M"]))
    box = hardware.simulated(ram=256 * GiB, vram=24 * GiB, cores=16)
    plan = make_plan(fp, box, Request(n_ctx=32768))
    assert plan.fits and plan.n_gpu_layers == fp.n_layer_all + 1
    assert plan.cpu_expert_layers == tuple(range(len(plan.cpu_expert_layers))) and 0 < len(plan.cpu_expert_layers) < 43
    assert plan.overrides and all(re.search(plan.overrides[0], f"blk.{i}.ffn_up_exps.weight")
                                  for i in plan.cpu_expert_layers)
    assert plan.gpu is not None and plan.gpu.kv_cache + plan.ram.kv_cache == fp.kv_bytes(32768)
    assert plan.gpu.kv_cache == fp.kv_bytes(32768)  # all layers on the GPU: all of the cache too
    assert any("V4 compressed K cache" in r.why for r in plan.reasons)
    cpu = make_plan(fp, hardware.simulated(ram=256 * GiB, cores=16), Request(n_ctx=32768))
    assert cpu.ram.kv_cache == fp.kv_bytes(32768) and cpu.fits


@pytest.mark.parametrize("model_id, name", [("v3.2", "V3.2-Q4_K_M"), ("v4-flash", "V4-Flash-Q4_K_M")])
def test_catalog_kv_shape_agrees_with_the_header(dsv: dict[str, Path], model_id: str, name: str) -> None:
    """`models` plans from the catalog before any download: its KV shape gives the header's bytes per token."""
    spec = load_catalog().get(model_id)
    assert spec is not None and spec.kv is not None
    fp = from_gguf(read_gguf(dsv[name]))
    assert spec.kv.bytes_per_token() == fp.kv_bytes_per_token()
    coarse = from_catalog(spec)
    if spec.size_of() is None:  # V3.2: no ready-made GGUF in the catalog, so nothing to plan before a download
        assert coarse is None
        return
    assert coarse is not None and coarse.kv_bytes_per_token() == fp.kv_bytes_per_token()
    assert coarse.kv_bytes(4096) == fp.kv_bytes(4096)  # same layer kinds, so the same padded caches and states
    plan = make_plan(coarse, hardware.simulated(ram=256 * GiB, cores=16), Request())
    assert plan.fits and plan.ram.kv_cache == fp.kv_bytes(4096)


@pytest.mark.parametrize("name", ["V3.2-Q4_K_M", "V4-Flash-Q4_K_M", "tiny-v4"])
def test_plan_command_shows_the_new_classes(dsv: dict[str, Path], name: str) -> None:
    import json
    import subprocess
    import sys

    def plan(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "localseek", "plan", str(dsv[name]), "--ram", "768GiB",
                               "--vram", "24GiB", *extra], capture_output=True, text=True, timeout=120, check=False)

    text, as_json = plan(), plan("--json")
    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    assert "sparse-attention indexer" in text.stdout
    data = json.loads(as_json.stdout)
    v4 = name != "V3.2-Q4_K_M"
    assert data["model"]["kv_kind"] == ("V4 compressed K cache" if v4 else "MLA latent + indexer keys")
    assert data["model"]["bytes_by_class"]["indexer"] > 0
    assert ("hyper_connections" in data["model"]["bytes_by_class"]) == v4
    assert (data["model"]["kv_kind"] in text.stdout) and ("hyper-connections" in text.stdout) == v4


@pytest.mark.parametrize("ratios", [(0,) * 43 + (7,), (0,) * 41])
def test_damaged_compress_ratios_are_one_error(tmp_path: Path, ratios: tuple[int, ...]) -> None:
    """A ratio llama.cpp cannot load, or fewer ratios than layers: a ModelFileError before anything is sized."""
    from dataclasses import replace

    from inventory import write_header_only

    from localseek.errors import ModelFileError

    path = write_header_only(tmp_path / "bad.gguf", replace(V4_FLASH, n_layer=42, compress_ratios=ratios))[0]
    with pytest.raises(ModelFileError, match="compress_ratios"):
        from_gguf(read_gguf(path))
