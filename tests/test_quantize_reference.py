"""llama.cpp logits on converted tiny checkpoints vs an independent forward pass: Hugging Face transformers
on CPU; and the same files as llama.cpp's own converter (from the pinned llama-cpp-python sdist, fetched once
into a cache: tests/llama_cpp_sdist.py).

Optional group: needs `pip install -e '.[reference]'` (torch + transformers). Skipped cleanly without them,
unless LOCALSEEK_REQUIRE_REFERENCE=1 (CI sets it), which turns the skip into a failure.
Prints cosine similarity and top-1 agreement per model (run with -s to see them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import hf_factory as hf
import numpy as np
import pytest
import reference_converter

from quantize import convert


def _require(module: str):
    if os.environ.get("LOCALSEEK_REQUIRE_REFERENCE") == "1":
        return __import__(module)
    return pytest.importorskip(module, reason=f"{module} missing: pip install -e '.[reference]'")


torch = _require("torch")
transformers = _require("transformers")

pytestmark = pytest.mark.slow

TOKENS = [408, 17, 301, 95, 280, 5, 411, 200, 33, 250, 120, 44, 410, 7, 390, 66, 301, 12, 99, 3]


def _hf_logits(model_dir: Path, ids: list[int], work: Path) -> np.ndarray:
    """transformers' own model class, loaded with transformers' own loader from a float32 copy of the
    checkpoint
    (FP8 × block scale done by the factory's decoder; transformers' FP8 path needs a GPU)."""
    config = json.loads((model_dir / "config.json").read_text())
    config.pop("quantization_config", None)
    n_layer = config["num_hidden_layers"]
    work.mkdir()
    tensors = {
        k: hf._Tensor("F32", v)
        for k, v in hf.reference_tensors(model_dir).items()
        if not k.startswith(f"model.layers.{n_layer}.")
    }  # transformers has no MTP module
    hf.write_safetensors(work / "model.safetensors", tensors)
    (work / "config.json").write_text(json.dumps(config))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        work, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


@pytest.mark.parametrize(
    "layout,qtype,min_cos",
    [
        ("deepseek_v3", "F32", 0.9999),
        ("deepseek_v3", "Q8_0", 0.995),
        ("deepseek_v2_lite", "F32", 0.9999),
        ("qwen2", "F32", 0.9999),
        ("qwen2", "Q8_0", 0.995),
        ("llama", "F32", 0.9999),
        ("qwen3", "F32", 0.9999),
    ],
)
def test_logits_match_transformers(layout, qtype, min_cos, tmp_path) -> None:
    src = hf.WRITERS[layout](tmp_path / layout)
    out = convert(src, tmp_path / f"{layout}.gguf", qtype=qtype).paths[0]
    ref = _hf_logits(src, TOKENS, tmp_path / "f32")
    got = _llama_logits(out, TOKENS)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
    print(
        f"\n{layout} {qtype}: cosine min {cos.min():.6f} mean {cos.mean():.6f}, top-1 agreement {top1:.0%} "
        f"over {len(TOKENS)} positions"
    )
    assert cos.min() >= min_cos
    assert top1 >= (0.95 if qtype == "F32" else 0.85)


@pytest.mark.parametrize(
    "layout,pre,keep_mtp",
    [
        ("deepseek_v3", "deepseek-v3", False),
        ("deepseek_v2_lite", "deepseek-llm", False),
        ("deepseek_v32", "deepseek-v3", True),
    ],
)
def test_same_file_as_llama_cpp_converter(layout, pre, keep_mtp, tmp_path) -> None:
    """Q8_0 from localseek == Q8_0 from llama.cpp's own convert_hf_to_gguf.py (torch), run from the pinned
    llama-cpp-python sdist: tensor for tensor, byte for byte, and the same metadata. llama.cpp drops the MTP
    block of V3 (compare with keep_mtp=False) and keeps V3.2's (compare with it: indexer, MTP block and
    `nextn_predict_layers` included)."""
    src_tree = reference_converter.converter()
    src = hf.WRITERS[layout](tmp_path / layout)
    ours = convert(src, tmp_path / "ours.gguf", qtype="Q8_0", keep_mtp=keep_mtp).paths[0]
    theirs = tmp_path / "theirs.gguf"
    reference_converter.run_converter(src_tree, src, theirs, pre=pre)
    c = reference_converter.compare(ours, theirs)
    print(
        f"\n{layout}: {len(c.identical)} tensors byte-identical to llama.cpp's converter; metadata differs only in "
        f"{c.keys_differ or 'nothing'} (besides general.name)"
    )
    assert not (c.only_ours or c.only_theirs), (c.only_ours, c.only_theirs)
    assert not c.other_type and not c.different, (c.other_type, c.different)
    assert c.identical and not c.keys_differ


def test_v4_same_tensors_as_llama_cpp_converter(tmp_path) -> None:
    """DeepSeek-V4 (MXFP4 experts, FP8 with E8M0 scales, BF16 and F32 tensors): llama.cpp's converter writes
    a mixture of its own (FP8 → Q8_0, BF16 → BF16, F32 → F32, experts MXFP4 as shipped, tid2eid I32).
    localseek's MXFP4_MOE file has the same metadata (chat template included) and, where it writes the same
    type, the same bytes; its BF16 file covers the BF16 ones. The router and the indexer's head weights, which
    localseek keeps in F32 at every type, hold exactly the BF16 values widened. So every tensor is accounted
    for bit for bit."""
    src_tree = reference_converter.converter()
    src = hf.write_deepseek_v4(tmp_path / "deepseek_v4")
    theirs = tmp_path / "theirs.gguf"
    reference_converter.run_converter(src_tree, src, theirs, pre="deepseek-v3")
    moe = convert(src, tmp_path / "moe.gguf", qtype="MXFP4_MOE").paths[0]
    bf16 = convert(src, tmp_path / "bf16.gguf", qtype="BF16").paths[0]
    a = reference_converter.compare(moe, theirs)
    b = reference_converter.compare(bf16, theirs)
    assert not (a.only_ours or a.only_theirs or a.different or b.different), (a, b)
    assert not a.keys_differ, a.keys_differ
    assert b.keys_differ == ["general.file_type"]
    widened = {n for n, (ours, them) in a.other_type.items() if (ours, them) == ("F32", "BF16")}
    assert widened == {n for n in a.other_type if n.endswith(("ffn_gate_inp.weight", "indexer.proj.weight"))}
    ra = {t.name: t for t in gguf.GGUFReader(moe).tensors}
    rt = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    for name in widened:
        bits = np.asarray(rt[name].data).view(np.uint16).astype(np.uint32) << 16
        assert np.array_equal(np.asarray(ra[name].data).view(np.uint32).reshape(-1), bits.reshape(-1)), name
    uncovered = set(rt) - set(a.identical) - set(b.identical) - widened
    types = {
        k: sum(1 for n in a.identical if rt[n].tensor_type.name == k) for k in ("MXFP4", "Q8_0", "F32", "I32")
    }
    print(
        f"\ndeepseek_v4: {len(a.identical)} of {len(rt)} tensors byte-identical in the MXFP4_MOE file ({types}), "
        f"{len(set(b.identical) - set(a.identical))} more in the BF16 file, {len(widened)} kept F32 (= BF16 "
        "widened); metadata identical (besides general.name)"
    )
    assert not uncovered, uncovered
    assert types["MXFP4"] and types["I32"]
    # and llama.cpp computes nearly the same logits from both files (they differ only in Q8_0 vs BF16 copies
    # of the BF16 tensors). A random tiny MoE with top-k expert, indexer and hash routing has near-ties: a
    # rounding difference can flip one selection at one position, so the median is the measure and the
    # minimum only a sanity floor.
    ref, got = _llama_logits(theirs, TOKENS), _llama_logits(moe, TOKENS)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
    print(
        f"deepseek_v4 logits vs llama.cpp's file: cosine median {np.median(cos):.6f}, min {cos.min():.6f}, "
        f"top-1 agreement {top1:.0%}"
    )
    assert np.median(cos) >= 0.999 and cos.min() >= 0.9 and top1 >= 0.9


def test_v4_mtp_only_file_as_llama_cpp_converter(tmp_path) -> None:
    """V4's MTP block as a draft model of its own: localseek's `mtp_only` MXFP4_MOE file vs llama.cpp's
    `convert_hf_to_gguf.py --mtp`: same metadata, the same bytes wherever both write the same type (all but
    the BF16 embeddings/head, which localseek writes Q8_0, and the router, which it keeps F32)."""
    src_tree = reference_converter.converter()
    src = hf.write_deepseek_v4(tmp_path / "deepseek_v4")
    theirs = tmp_path / "theirs-mtp.gguf"
    reference_converter.run_converter(src_tree, src, theirs, pre="deepseek-v3", args=("--mtp",))
    ours = convert(src, tmp_path / "ours-mtp.gguf", qtype="MXFP4_MOE", mtp_only=True).paths[0]
    c = reference_converter.compare(ours, theirs)
    print(f"\ndeepseek_v4 MTP-only: {len(c.identical)} tensors byte-identical, other types: {c.other_type}")
    assert not (c.only_ours or c.only_theirs or c.different or c.keys_differ), c
    assert set(c.other_type) == {
        "token_embd.weight",
        "output.weight",
        f"blk.{hf.V4_DIMS.n_layer}.ffn_gate_inp.weight",
    }
    assert f"blk.{hf.V4_DIMS.n_layer}.nextn.eh_proj.weight" in c.identical
