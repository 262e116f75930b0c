"""Expert offload on DeepSeek-V3.2 (`deepseek32`) and V4 (`deepseek4`): the planner's and `--cpu-moe`'s override
patterns name exactly the routed experts, and real llama.cpp places exactly those in RAM and still generates the
same tokens. Tiny models converted by `quantize` from tests/hf_factory.py (V4's experts stay MXFP4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from localseek.models.gguf_info import read_gguf
from localseek.planning import hardware
from localseek.planning.footprint import Footprint, from_gguf
from localseek.planning.plan import Request, make_plan
from localseek.runtime.engine import Engine
from localseek.runtime.open import load_options
from localseek.runtime.options import LoadOptions, Sampling
from localseek.sizes import GiB

N_CTX = 64  # llama.cpp's deepseek32 graph costs grow with the context; 64 cells keep a decode step fast
GPU_BOX = hardware.simulated(ram=16 * GiB, vram=8 * GiB, cores=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import hf_factory as hf

    from quantize import convert

    d = tmp_path_factory.mktemp("dsv-moe")
    made = {"v32": d / "v32-Q8_0.gguf", "v4": d / "v4-MXFP4_MOE.gguf"}
    convert(hf.write_deepseek_v32(d / "hf-v32"), made["v32"], qtype="Q8_0")
    convert(hf.write_deepseek_v4(d / "hf-v4"), made["v4"], qtype="MXFP4_MOE")
    return made


def experts_of(layers: tuple[int, ...] | list[int]) -> list[str]:
    return sorted(f"blk.{i}.ffn_{w}_exps.weight" for i in layers for w in ("gate", "up", "down"))


def greedy(engine: Engine, n: int = 3) -> str:
    return "".join(engine.stream(engine.tokenize("hello there"), Sampling(temperature=0, max_tokens=n)))


@pytest.mark.parametrize("name", ["v32", "v4"])
def test_cpu_moe_pattern_names_only_routed_experts(models: dict[str, Path], name: str) -> None:
    info = read_gguf(models[name])
    fp = from_gguf(info)
    plan = make_plan(fp, GPU_BOX, Request(n_ctx=N_CTX, gpu_layers="all", cpu_moe=True, threads=1))
    assert plan.cpu_expert_layers == tuple(fp.moe_layers) and len(plan.overrides) == 1
    matched = {t.name for t in info.tensors if re.search(plan.overrides[0], t.name)}
    routed = {n for layer in fp.layers for n, _ in layer.expert_tensors}
    mtp_experts = {t.name for t in info.tensors if t.name.startswith(f"blk.{fp.n_layer}.") and "_exps." in t.name}
    # indexer, compressors, hyper-connections, hash tables, shared experts, routers: never matched; V3.2's MTP
    # layer's experts are (llama.cpp's --cpu-moe pattern), and go to RAM too when MTP decoding loads them
    assert matched == routed | mtp_experts and len(mtp_experts) == (3 if name == "v32" else 0)
    assert fp.moe_layers == ([1] if name == "v32" else [0, 1, 2, 3])


@pytest.mark.parametrize("name, n_cpu_moe", [("v32", 2), ("v4", 2), ("v4", 4)])
def test_plan_drives_the_engine(models: dict[str, Path], name: str, n_cpu_moe: int) -> None:
    """A plan for a GPU machine keeping the first layers' experts in RAM (`--n-cpu-moe N`): llama.cpp applies
    exactly those overrides (its own log says so), and greedy decoding is unchanged."""
    path = models[name]
    fp: Footprint = from_gguf(read_gguf(path))
    plain = Engine.load(path, LoadOptions(n_ctx=N_CTX, n_threads=1))
    try:
        reference = greedy(plain)
    finally:
        plain.close()
    plan = make_plan(fp, GPU_BOX, Request(n_ctx=N_CTX, gpu_layers="all", n_cpu_moe=n_cpu_moe, threads=1))
    wanted = tuple(i for i in fp.moe_layers if i < n_cpu_moe)
    assert plan.cpu_expert_layers == wanted and plan.n_gpu_layers == fp.n_layer_all + 1
    assert plan.gpu is not None and plan.ram.weights >= sum(fp.layers[i].experts for i in wanted)
    engine = Engine.load(path, load_options(plan))
    try:
        moved = engine.overridden_tensors()
        assert sorted(n for n, _ in moved) == experts_of(wanted)
        # host memory: llama.cpp picks its CPU_REPACK buffer for MXFP4 (V4's experts), plain CPU for Q8_0
        assert {buft for _, buft in moved} == ({"CPU_REPACK"} if name == "v4" else {"CPU"})
        assert greedy(engine) == reference and reference
    finally:
        engine.close()
