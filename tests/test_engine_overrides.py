"""Tensor buffer overrides through the low-level bindings, accepted by real llama.cpp on tiny deepseek2 MoEs."""

from __future__ import annotations

from pathlib import Path

import pytest
from inventory import TINY_LITE, TINY_MOE, TINY_MTP, write_tiny_moe

from localseek.planning import hardware
from localseek.runtime.engine import Engine, captured_log
from localseek.runtime.options import LoadOptions, Sampling
from localseek.errors import EngineError
from localseek.planning.footprint import from_gguf
from localseek.models.gguf_info import read_gguf
from localseek.sizes import GiB
from localseek.planning.plan import Request, make_plan
from localseek.runtime.open import load_options

EXPERTS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_moe(tmp_path_factory.mktemp("moe") / "tiny-moe.gguf", TINY_MOE)


def greedy(engine: Engine, n: int = 8) -> str:
    return "".join(engine.stream(engine.tokenize("hello there"), Sampling(temperature=0, max_tokens=n)))


def test_cpu_expert_override_is_accepted_and_changes_nothing_numerically(tiny_moe: Path) -> None:
    plain = Engine.load(tiny_moe, LoadOptions(n_ctx=256, n_threads=1))
    try:
        reference = greedy(plain)
    finally:
        plain.close()
    pattern = rf"^blk\.(1|2){EXPERTS}"
    engine = Engine.load(tiny_moe, LoadOptions(n_ctx=256, n_threads=1, tensor_overrides=((pattern, "CPU"),)))
    try:
        moved = engine.overridden_tensors()
        assert sorted(moved) == sorted(
            (f"blk.{i}.ffn_{w}_exps.weight", "CPU") for i in (1, 2) for w in ("gate", "up", "down")
        )
        assert "buffer type overridden to CPU" in captured_log()  # llama.cpp's own words, shown by --verbose
        assert greedy(engine) == reference and reference
    finally:
        engine.close()


def test_plan_drives_the_engine(tiny_moe: Path) -> None:
    """A plan for a GPU machine keeps layers 1-2's experts in RAM; llama.cpp applies exactly those overrides."""
    fp = from_gguf(read_gguf(tiny_moe))
    gpu_box = hardware.simulated(ram=16 * GiB, vram=8 * GiB, cores=2)
    plan = make_plan(fp, gpu_box, Request(n_ctx=256, gpu_layers="all", n_cpu_moe=3, threads=1))
    assert plan.cpu_expert_layers == (1, 2) and plan.n_gpu_layers == 5
    engine = Engine.load(tiny_moe, load_options(plan))
    try:
        assert {name.split(".")[1] for name, _ in engine.overridden_tensors()} == {"1", "2"}
        assert len(engine.overridden_tensors()) == 6
        assert greedy(engine, 3)
    finally:
        engine.close()


@pytest.mark.parametrize("shape", [TINY_LITE, TINY_MTP], ids=lambda s: s.name)
def test_other_deepseek2_layouts_load_with_overrides(tmp_path: Path, shape) -> None:
    """V2-Lite's layout (27 layers, no q-LoRA) and a file carrying an MTP layer (skipped unless MTP is on)."""
    path = write_tiny_moe(tmp_path / f"{shape.name}.gguf", shape)
    fp = from_gguf(read_gguf(path))
    assert (fp.totals["mtp"] > 0) == bool(shape.nextn)
    engine = Engine.load(path, LoadOptions(n_ctx=128, n_threads=1, tensor_overrides=((EXPERTS, "CPU"),)))
    try:
        assert len(engine.overridden_tensors()) == 3 * len(fp.moe_layers)
        assert greedy(engine, 2)
    finally:
        engine.close()


@pytest.mark.parametrize(
    "override, message", [(("(unclosed", "CPU"), "not a valid regex"), ((EXPERTS, "CUDA7"), "Unknown buffer type")]
)
def test_bad_overrides_are_one_line_errors(tiny_moe: Path, override, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        Engine.load(tiny_moe, LoadOptions(n_ctx=128, n_threads=1, tensor_overrides=(override,)))


def test_plan_on_localseeks_own_conversion_with_mtp(tmp_path: Path) -> None:
    """`localseek quantize` keeps V3's MTP layer: the planner sees it as its own class, and the expert overrides
    name only trunk layers (the MTP layer is not loaded unless MTP decoding is on)."""
    import hf_factory

    from quantize import convert

    out = tmp_path / "v3-q8.gguf"
    convert(hf_factory.write_deepseek_v3(tmp_path / "v3"), out, qtype="Q8_0")
    fp = from_gguf(read_gguf(out))
    assert fp.n_layer_all == fp.n_layer + 1 and fp.totals["mtp"] > 0 and fp.mla
    box = hardware.simulated(ram=16 * GiB, vram=8 * GiB, cores=2)
    plan = make_plan(fp, box, Request(n_ctx=256, gpu_layers="all", n_cpu_moe=fp.n_layer, threads=1))
    assert plan.cpu_expert_layers == tuple(fp.moe_layers)
    engine = Engine.load(out, load_options(plan))
    try:
        assert {n.split(".")[1] for n, _ in engine.overridden_tensors()} == {str(i) for i in fp.moe_layers}
        assert greedy(engine, 2)
    finally:
        engine.close()
