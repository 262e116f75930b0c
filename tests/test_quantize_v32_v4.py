"""quantize/ on DeepSeek-V3.2 (`deepseek32`) and V4 (`deepseek4`) layouts from tests/hf_factory.py, checked number
by number against the factory's own decoders and run in the real llama.cpp (llama-cpp-python 0.3.36).

The byte-for-byte comparison with llama.cpp's own converter is in test_quantize_reference.py (it needs torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import hf_factory as hf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from test_quantize import _check_tensor, _generate, _hf_value, _mtp_logits

from quantize import convert


@pytest.fixture(scope="module")
def v32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.write_deepseek_v32(tmp_path_factory.mktemp("hf") / "deepseek_v32")


_converted: dict[tuple, Path] = {}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    out_dir = tmp_path_factory.mktemp("gguf")

    def get(src: Path, qtype: str, **kw) -> Path:
        key = (str(src), qtype, tuple(sorted(kw.items())))
        if key not in _converted:
            out = out_dir / f"{src.name}-{qtype}-{len(_converted)}.gguf"
            convert(src, out, qtype=qtype, **kw)
            _converted[key] = out
        return _converted[key]

    return get


# -- V3.2 ------------------------------------------------------------------------------------------------
INDEXER = {
    "indexer.attn_q_b.weight": "self_attn.indexer.wq_b.weight",
    "indexer.attn_k.weight": "self_attn.indexer.wk.weight",
    "indexer.k_norm.weight": "self_attn.indexer.k_norm.weight",
    "indexer.k_norm.bias": "self_attn.indexer.k_norm.bias",
    "indexer.proj.weight": "self_attn.indexer.weights_proj.weight",
}


def _v32_value(name: str, ref: dict[str, np.ndarray], config: dict) -> np.ndarray:
    parts = name.split(".", 2)
    if parts[0] == "blk" and parts[2] in INDEXER:
        return ref[f"model.layers.{parts[1]}.{INDEXER[parts[2]]}"]
    return _hf_value("deepseek_v32", name, ref, config)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M", "BF16"])
def test_v32_every_tensor_within_error_bound(qtype, v32, converted) -> None:
    path = converted(v32, qtype)
    config = json.loads((v32 / "config.json").read_text())
    ref = hf.reference_tensors(v32)
    reader = gguf.GGUFReader(path)
    types: dict[str, str] = {}
    for t in reader.tensors:
        _check_tensor(t.name, t, _v32_value(t.name, ref, config))
        types[t.name] = T(t.tensor_type).name
    # every source value exactly once: indexer and MTP block included
    assert sum(int(np.prod(t.shape)) for t in reader.tensors) == sum(v.size for v in ref.values())
    assert types["blk.1.indexer.proj.weight"] == "F32"  # as llama.cpp's converter keeps it
    assert types["blk.2.indexer.attn_q_b.weight"] != "F32"  # the MTP layer's indexer is converted too


def test_v32_metadata(v32, converted) -> None:
    f = gguf.GGUFReader(converted(v32, "Q8_0")).fields
    c = json.loads((v32 / "config.json").read_text())
    assert f["general.architecture"].contents() == "deepseek32"
    assert f["deepseek32.block_count"].contents() == c["num_hidden_layers"] + 1
    assert f["deepseek32.nextn_predict_layers"].contents() == 1
    assert f["deepseek32.attention.indexer.head_count"].contents() == c["index_n_heads"]
    assert f["deepseek32.attention.indexer.key_length"].contents() == c["index_head_dim"]
    assert f["deepseek32.attention.indexer.top_k"].contents() == c["index_topk"]
    assert f["deepseek32.attention.q_lora_rank"].contents() == c["q_lora_rank"]
    assert f["tokenizer.ggml.pre"].contents() == "deepseek-v3"


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M"])
def test_v32_llama_cpp_loads_and_generates(qtype, v32, converted) -> None:
    """Deterministic greedy text from llama.cpp's deepseek32 graph; the prompt plus reply (> index_topk
    tokens) takes the indexer's top-k path."""
    path = converted(v32, qtype)
    first, logits = _generate(path)
    again, _ = _generate(path)
    assert first == again and len(first) == 12
    assert np.isfinite(logits).all() and logits.std() > 0


def test_v32_quantized_agrees_with_full_precision(v32, converted) -> None:
    _, hi = _generate(converted(v32, "BF16"), n=1)
    _, lo = _generate(converted(v32, "Q8_0"), n=1)
    cos = float(hi @ lo / (np.linalg.norm(hi) * np.linalg.norm(lo)))
    print(f"\nV3.2 tiny: cosine(BF16, Q8_0 logits) = {cos:.5f}")
    assert cos > 0.99


def test_v32_mtp_block_loads_and_runs(v32, converted) -> None:
    """The kept MTP block (indexer included) loads with `load_mtp` and drives llama.cpp's deepseek32 MTP graph."""
    import llama_cpp

    mp = llama_cpp.llama_model_default_params()
    mp.load_mtp = True
    model = llama_cpp.llama_model_load_from_file(str(converted(v32, "Q8_0")).encode(), mp)
    assert model, "llama.cpp refused the model"
    try:
        assert llama_cpp.llama_model_n_layer_nextn(model) == 1
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 64, 8, 8, 2, 2
        cp.ctx_type = llama_cpp.LLAMA_CONTEXT_TYPE_MTP
        ctx = llama_cpp.llama_init_from_model(model, cp)
        assert ctx, "llama.cpp could not build an MTP context from the converted MTP block"
        try:
            h1, h2 = np.random.default_rng(0).standard_normal((2, hf.V32_DIMS.hidden)).astype(np.float32)
            a, b = _mtp_logits(model, ctx, 5, h1), _mtp_logits(model, ctx, 5, h2)
            assert np.isfinite(a).all() and a.std() > 0 and not np.allclose(a, b)
        finally:
            llama_cpp.llama_free(ctx)
    finally:
        llama_cpp.llama_model_free(model)


def test_v32_without_mtp(v32, converted) -> None:
    f = gguf.GGUFReader(converted(v32, "Q8_0", keep_mtp=False))
    assert f.fields["deepseek32.block_count"].contents() == hf.V32_DIMS.n_layer
    assert "deepseek32.nextn_predict_layers" not in f.fields
    assert not [t.name for t in f.tensors if t.name.startswith(f"blk.{hf.V32_DIMS.n_layer}.")]
