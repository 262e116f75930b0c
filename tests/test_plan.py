"""Plans for real model inventories (header-only GGUFs) on simulated machines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from localseek.planning import hardware
from localseek.errors import InsufficientMemoryError
from localseek.planning.footprint import EXPERT_RE, Footprint, from_gguf
from localseek.models.gguf_info import read_gguf
from localseek.sizes import GiB
from localseek.runtime.open import load_options, plan_for
from localseek.planning.plan import MIN_CTX, Request, make_plan

DESKTOP = hardware.simulated(ram=192 * GiB, vram=24 * GiB, cores=16)
LAPTOP = hardware.simulated(ram=8 * GiB, cores=4)
MAC16 = hardware.simulated(ram=16 * GiB, vram=int(10.67 * GiB), unified=True, cores=8)  # Metal's working-set limit
PI5 = hardware.simulated(ram=int(7.8 * GiB), cores=4, board="Raspberry Pi 5 Model B Rev 1.0", arch="aarch64")
SERVER = hardware.simulated(ram=64 * GiB, cores=32)


@pytest.fixture(scope="module")
def fp(inventories):
    cache: dict[str, Footprint] = {}

    def get(name: str) -> Footprint:
        if name not in cache:
            cache[name] = from_gguf(read_gguf(inventories[name]))
        return cache[name]

    return get


def names_matched(fp: Footprint, patterns: tuple[str, ...], names: list[str]) -> set[str]:
    # llama.cpp applies std::regex_search; these patterns mean the same to Python's re
    return {n for n in names if any(re.search(p, n) for p in patterns)}


def tensor_names(path: Path) -> list[str]:
    return [t.name for t in read_gguf(path).tensors]


def test_desktop_runs_r1_iq1s_with_experts_in_ram(fp, inventories) -> None:
    r1 = fp("DeepSeek-R1-IQ1_S")
    plan = make_plan(r1, DESKTOP, Request(n_ctx=8192))
    assert plan.fits and plan.n_ctx == 8192
    assert plan.n_gpu_layers == r1.n_layer_all + 1  # every layer (and the output head) on the GPU …
    n = len(plan.cpu_expert_layers)
    assert 0 < n < len(r1.moe_layers)  # … some layers' experts fit there too, the first N stay in RAM
    assert plan.cpu_expert_layers == tuple(range(3, 3 + n))
    assert plan.gpu is not None and plan.gpu.fits and plan.ram.fits
    matched = names_matched(r1, plan.overrides, tensor_names(inventories["DeepSeek-R1-IQ1_S"]))
    expected = {name for i in plan.cpu_expert_layers for name, _ in r1.layers[i].expert_tensors}
    assert matched == expected and len(expected) == 3 * n
    assert plan.ram.weights == pytest.approx(
        sum(r1.layers[i].experts for i in plan.cpu_expert_layers) + r1.totals["embeddings"], rel=1e-9
    )
    opts = load_options(plan)
    assert opts.tensor_overrides == tuple((p, "CPU") for p in plan.overrides)
    assert opts.n_gpu_layers == plan.n_gpu_layers and opts.n_ctx == 8192
    why = {r.setting: r for r in plan.reasons}
    assert "in RAM by override" in why["experts in RAM"].why and why["context"].value == "8192"


def test_desktop_refuses_r1_q4km_with_numbers_and_ways_out(fp, inventories) -> None:
    plan = make_plan(fp("DeepSeek-R1-Q4_K_M"), DESKTOP, Request(n_ctx=8192))
    assert not plan.fits
    assert "192.0 GiB of available RAM + 24.0 GiB of free VRAM" in plan.problem
    assert re.search(r"needs about 3\d\d\.\d GiB", plan.problem)
    assert "smaller quant (IQ2_XXS" in plan.problem and "--force" in plan.problem
    with pytest.raises(InsufficientMemoryError, match="Ways out"):
        plan_for(read_gguf(inventories["DeepSeek-R1-Q4_K_M"]), Request(n_ctx=8192), DESKTOP)
    forced = plan_for(read_gguf(inventories["DeepSeek-R1-Q4_K_M"]), Request(n_ctx=8192, force=True), DESKTOP)
    assert forced.forced and not forced.fits


def test_desktop_v2_lite_fits_entirely_on_gpu(fp) -> None:
    lite = fp("DeepSeek-V2-Lite-Q4_K_M")
    plan = make_plan(lite, DESKTOP)
    assert plan.fits and plan.n_gpu_layers == 28 and not plan.overrides and not plan.cpu_expert_layers
    assert plan.ram.weights == lite.totals["embeddings"]  # llama.cpp keeps the input embeddings in RAM
    assert plan.gpu is not None and plan.gpu.kv_cache == lite.kv_bytes(4096)


def test_desktop_llama_70b_splits_layers(fp) -> None:
    big = fp("R1-Distill-Llama-70B-Q4_K_M")
    plan = make_plan(big, DESKTOP)
    assert plan.fits and 1 < plan.n_gpu_layers < 81
    assert plan.gpu_layers == tuple(range(81 - plan.n_gpu_layers, 80))
    assert plan.gpu is not None and plan.gpu.total <= plan.gpu.budget
    one_more = make_plan(big, DESKTOP, Request(gpu_layers=plan.n_gpu_layers + 1))
    assert not one_more.fits and "does not fit the GPU as asked" in one_more.problem


def test_laptop_8gib(fp) -> None:
    small = make_plan(fp("R1-Distill-Qwen-7B-Q4_K_M"), LAPTOP)
    assert small.fits and small.n_gpu_layers == 0 and small.gpu is None
    assert small.threads == 4 and small.n_ubatch == 256
    too_big = make_plan(fp("R1-Distill-Qwen-14B-Q4_K_M"), LAPTOP)
    assert not too_big.fits and "smaller quant" in too_big.problem
    r1 = make_plan(fp("DeepSeek-R1-IQ1_S"), LAPTOP)
    assert not r1.fits and "a smaller model" in r1.problem


def test_mac_unified_memory_counts_gpu_share_against_ram(fp) -> None:
    plan = make_plan(fp("R1-Distill-Qwen-7B-Q4_K_M"), MAC16)
    assert plan.fits and plan.unified_memory and plan.n_gpu_layers == 29
    assert plan.gpu is not None
    assert plan.ram.total + plan.gpu.total <= 16 * GiB
    assert plan.ram.budget <= 16 * GiB - plan.gpu.total  # the GPU's share comes out of RAM
    lite = make_plan(fp("DeepSeek-V2-Lite-Q4_K_M"), MAC16)
    assert lite.fits and lite.gpu is not None and lite.gpu.fits
    assert not make_plan(fp("DeepSeek-R1-IQ1_S"), MAC16).fits


def test_raspberry_pi_5_profile(fp) -> None:
    plan = make_plan(fp("R1-Distill-Qwen-7B-Q4_0"), PI5)
    assert plan.fits and plan.threads == 4 and plan.n_ctx == 2048 and plan.n_gpu_layers == 0
    why = {r.setting: r for r in plan.reasons}
    assert why["quant"].value == "Q4_0" and "repacked" in why["quant"].why
    rec = why["recommended model"].value
    from localseek.models.catalog import load_catalog

    resolved = load_catalog().resolve(rec.split()[0])  # the advice names a model `run` can pull
    assert resolved and resolved.spec.reasoning and "tok/s" in why["recommended model"].why
    k_quant = make_plan(fp("R1-Distill-Qwen-7B-Q4_K_M"), PI5)  # Q4_K is repacked too (8x4 blocks)
    assert "repacked" in {r.setting: r for r in k_quant.reasons}["quant"].why
    assert not make_plan(fp("R1-Distill-Qwen-14B-Q4_0"), PI5).fits
    tight = make_plan(fp("R1-Distill-Qwen-7B-Q4_0"), PI5, Request(n_ctx=45056))
    assert tight.fits and any("close to swapping" in w for w in tight.warnings)


def test_cpu_only_server(fp) -> None:
    plan = make_plan(fp("DeepSeek-V2-Lite-Q4_K_M"), SERVER)
    assert plan.fits and plan.n_gpu_layers == 0 and not plan.overrides and plan.threads == 32
    assert {r.setting: r.value for r in plan.reasons}["experts in RAM"] == "all"
    assert plan.ram.weights == fp("DeepSeek-V2-Lite-Q4_K_M").weights()


def test_context_is_reduced_with_a_warning(fp) -> None:
    r1 = fp("DeepSeek-R1-IQ1_S")
    box = hardware.simulated(ram=136 * GiB, cores=32)
    plan = make_plan(r1, box, Request(n_ctx=163840))
    assert plan.fits and MIN_CTX <= plan.n_ctx < 163840 and plan.n_ctx % 256 == 0
    assert any("context reduced from 163840" in w for w in plan.warnings)
    assert make_plan(r1, box, Request(n_ctx=plan.n_ctx + 256)).n_ctx == plan.n_ctx  # the largest that fits
    # MLA makes long contexts cheap: 68.6 KiB per token for the 671B model
    assert r1.kv_bytes_per_token() == 70272


def test_explicit_offload_flags(fp, inventories) -> None:
    r1 = fp("DeepSeek-R1-IQ1_S")
    names = tensor_names(inventories["DeepSeek-R1-IQ1_S"])
    few = make_plan(r1, DESKTOP, Request(gpu_layers=5))
    assert few.fits and few.n_gpu_layers == 5 and few.gpu_layers == (57, 58, 59, 60) and not few.overrides
    all_moe = make_plan(r1, DESKTOP, Request(gpu_layers="all", cpu_moe=True))
    assert all_moe.fits and all_moe.overrides == (r"\.ffn_(up|down|gate|gate_up)_(ch|)exps",)
    assert names_matched(r1, all_moe.overrides, names) == {n for n in names if EXPERT_RE.search(n)}
    first5 = make_plan(r1, DESKTOP, Request(gpu_layers="all", n_cpu_moe=5))
    assert first5.cpu_expert_layers == (3, 4)  # layers 0-2 are dense: llama.cpp's --n-cpu-moe counts from layer 0
    assert {n.split(".")[1] for n in names_matched(r1, first5.overrides, names)} == {"3", "4"}
    auto_moe = make_plan(r1, DESKTOP, Request(cpu_moe=True))
    assert auto_moe.n_gpu_layers == 62 and len(auto_moe.cpu_expert_layers) == 58


def test_offload_flags_on_a_cpu_only_machine_warn(fp) -> None:
    plan = make_plan(fp("DeepSeek-V2-Lite-Q4_K_M"), SERVER, Request(gpu_layers=10, cpu_moe=True))
    assert plan.n_gpu_layers == 0 and not plan.overrides
    assert any("no usable GPU" in w for w in plan.warnings)
    dense = make_plan(fp("R1-Distill-Qwen-7B-Q4_K_M"), DESKTOP, Request(cpu_moe=True))
    assert any("no routed experts" in w for w in dense.warnings)


def test_mtp_layer_loads_only_when_asked(fp) -> None:
    r1 = fp("DeepSeek-R1+MTP-Q4_K_M")
    box = hardware.simulated(ram=512 * GiB, cores=64)
    without, with_mtp = make_plan(r1, box), make_plan(r1, box, Request(load_mtp=True))
    assert with_mtp.ram.weights - without.ram.weights == r1.totals["mtp"]


def test_plan_is_json(fp) -> None:
    plan = make_plan(fp("DeepSeek-R1-IQ1_S"), DESKTOP, Request(n_ctx=8192))
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["fits"] and data["gpu"]["fits"] and data["reasons"][0]["setting"] == "gpu layers"
    assert data["overrides"] == list(plan.overrides)


def test_tiny_model_on_this_machine(tiny_gguf: Path) -> None:
    plan = plan_for(read_gguf(tiny_gguf), Request())
    assert plan.fits and plan.n_ctx == 2048  # the tiny model's trained context is below the default
    assert plan.threads >= 1 and plan.ram.weights == read_gguf(tiny_gguf).total_bytes - _header_bytes(tiny_gguf)


def _header_bytes(path: Path) -> int:
    from localseek.models import gguf_header as ggufheader

    return ggufheader.parse(path).data_offset


def test_draft_model_is_planned_in_what_the_main_model_leaves(inventories) -> None:
    """`--draft`: the 1.5B distill is planned beside the 14B one — on the GPU while VRAM is left, in RAM when the main
    model took the GPU, refused (one line, what to do) when even RAM is short."""
    from localseek.runtime.open import plan_beside, remaining

    main_info = read_gguf(inventories["R1-Distill-Qwen-14B-Q4_K_M"])
    draft_info = read_gguf(inventories["R1-Distill-Qwen-1.5B-Q4_K_M"])
    main = plan_for(main_info, Request(n_ctx=8192), DESKTOP)
    assert main.gpu is not None and main.n_gpu_layers == 49  # the whole 14B on the 24 GiB GPU …
    left = remaining(DESKTOP, main)
    assert left.vram_free == DESKTOP.vram_free - main.gpu.total
    assert left.memory.available == DESKTOP.memory.available - main.ram.total
    draft = plan_beside(main, draft_info, DESKTOP)
    assert draft.fits and draft.n_gpu_layers == 29 and draft.n_ctx == 8192  # … and the 1.5B beside it, all on the GPU
    assert draft.gpu.total + main.gpu.total <= DESKTOP.vram_free

    squeezed = hardware.simulated(ram=64 * GiB, vram=main.gpu.total + 1 * GiB, cores=16)
    main = plan_for(main_info, Request(n_ctx=8192), squeezed)
    draft = plan_beside(main, draft_info, squeezed)
    assert draft.fits and draft.n_gpu_layers < 29  # the GPU is nearly full: the draft model's layers go to RAM
    assert draft.ram.total + main.ram.total <= squeezed.memory.available

    need = plan_for(main_info, Request(n_ctx=8192), hardware.simulated(ram=64 * GiB, cores=8)).ram.total
    small = hardware.simulated(ram=need + 1 * GiB, cores=8)  # CPU only: room for the 14B, not for both
    main = plan_for(main_info, Request(n_ctx=8192), small)
    assert main.fits and main.gpu is None
    with pytest.raises(InsufficientMemoryError, match=r"does not fit beside .*drop --draft"):
        plan_beside(main, draft_info, small)
