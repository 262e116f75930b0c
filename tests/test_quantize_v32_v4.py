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
from test_quantize import _check_tensor, _hf_value, _mtp_logits

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


def _generate(path: Path, n: int = 12) -> tuple[list[int], np.ndarray]:
    """Greedy tokens after a chat prompt, and the prompt's last logits. A 64-token context: llama.cpp's
    deepseek32 decode costs grow with the context size (5 s at 256 here, 0.1 s at 64); prompt + reply (23
    tokens) stay beyond the indexer's top-k (8), so its selection path runs."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False)
    try:
        prompt = llm.tokenize(
            "<｜User｜>Hello! How can I help?<｜Assistant｜>".encode(), add_bos=True, special=True
        )
        out = [t for _, t in zip(range(n), llm.generate(prompt, temp=0.0))]
        llm.reset()
        llm.eval(prompt)
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return out, np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)
    finally:
        llm.close()


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


# -- V4 --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def v4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.write_deepseek_v4(tmp_path_factory.mktemp("hf") / "deepseek_v4")


# GGUF → checkpoint names, written out independently of quantize/archs/deepseek4.py
V4_ROOT = {
    "token_embd.weight": "embed.weight",
    "output.weight": "head.weight",
    "output_norm.weight": "norm.weight",
    "output_hc_fn.weight": "hc_head_fn",
    "output_hc_base.weight": "hc_head_base",
    "output_hc_scale.weight": "hc_head_scale",
}
V4_LAYER = {
    "attn_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "attn_sinks.weight": "attn.attn_sink",
    "attn_q_a.weight": "attn.wq_a.weight",
    "attn_q_a_norm.weight": "attn.q_norm.weight",
    "attn_q_b.weight": "attn.wq_b.weight",
    "attn_kv.weight": "attn.wkv.weight",
    "attn_kv_a_norm.weight": "attn.kv_norm.weight",
    "attn_output_a.weight": "attn.wo_a.weight",
    "attn_output_b.weight": "attn.wo_b.weight",
    "attn_compressor_kv.weight": "attn.compressor.wkv.weight",
    "attn_compressor_gate.weight": "attn.compressor.wgate.weight",
    "attn_compressor_ape.weight": "attn.compressor.ape",
    "attn_compressor_norm.weight": "attn.compressor.norm.weight",
    "indexer.attn_q_b.weight": "attn.indexer.wq_b.weight",
    "indexer.proj.weight": "attn.indexer.weights_proj.weight",
    "indexer_compressor_kv.weight": "attn.indexer.compressor.wkv.weight",
    "indexer_compressor_gate.weight": "attn.indexer.compressor.wgate.weight",
    "indexer_compressor_ape.weight": "attn.indexer.compressor.ape",
    "indexer_compressor_norm.weight": "attn.indexer.compressor.norm.weight",
    "ffn_gate_inp.weight": "ffn.gate.weight",
    "exp_probs_b.bias": "ffn.gate.bias",
    "ffn_gate_tid2eid.weight": "ffn.gate.tid2eid",
    "ffn_gate_shexp.weight": "ffn.shared_experts.w1.weight",
    "ffn_down_shexp.weight": "ffn.shared_experts.w2.weight",
    "ffn_up_shexp.weight": "ffn.shared_experts.w3.weight",
    **{f"hc_{p}_{k}.weight": f"hc_{p}_{k}" for p in ("attn", "ffn") for k in ("fn", "base", "scale")},
}
V4_EXPERTS = {"ffn_gate_exps.weight": "w1", "ffn_down_exps.weight": "w2", "ffn_up_exps.weight": "w3"}


def _v4_value(name: str, ref: dict[str, np.ndarray]) -> np.ndarray:
    if name in V4_ROOT:
        return ref[V4_ROOT[name]]
    _, layer, rest = name.split(".", 2)
    if rest in V4_EXPERTS:
        n = hf.V4_DIMS.n_routed
        return np.stack([ref[f"layers.{layer}.ffn.experts.{e}.{V4_EXPERTS[rest]}.weight"] for e in range(n)])
    return ref[f"layers.{layer}.{V4_LAYER[rest]}"]


def _check_v4(path: Path, v4: Path) -> dict[str, str]:
    """Every tensor of a V4 conversion against the checkpoint; returns name → type."""
    ref = hf.reference_tensors(v4)
    reader = gguf.GGUFReader(path)
    types = {}
    for t in reader.tensors:
        expected = _v4_value(t.name, ref)
        gtype = T(t.tensor_type)
        types[t.name] = gtype.name
        if gtype == T.MXFP4:  # kept as the checkpoint has it: decodes to exactly its values
            got = gguf.quants.dequantize(t.data, gtype).reshape(expected.shape)
            np.testing.assert_array_equal(got, expected, err_msg=t.name)
        elif gtype == T.I32:
            np.testing.assert_array_equal(
                np.asarray(t.data).reshape(expected.shape), expected, err_msg=t.name
            )
        else:
            _check_tensor(t.name, t, expected)
    # every checkpoint value exactly once, except the MTP block (not kept) and the unused gate.bias of the
    # hash-routed layers
    skipped = [k for k in ref if k.startswith("mtp.")]
    skipped += [f"layers.{i}.ffn.gate.bias" for i in range(hf.V4_DIMS.n_hash_layers)]
    assert sum(int(np.prod(t.shape)) for t in reader.tensors) == sum(
        v.size for k, v in ref.items() if k not in skipped
    )
    return types


@pytest.mark.parametrize(
    "qtype,experts,want",
    [
        ("MXFP4_MOE", None, "MXFP4"),  # llama.cpp's converter's types: experts as shipped, the rest Q8_0
        ("Q8_0", None, "MXFP4"),  # experts stay MXFP4 unless --experts says otherwise
        ("BF16", None, "MXFP4"),
        ("Q4_K_M", "Q4_K", "Q4_K"),  # MXFP4 decoded and quantized straight to the requested type
        ("Q4_K_M", "Q2_K", "Q2_K"),
    ],
)
def test_v4_every_tensor_within_error_bound(qtype, experts, want, v4, converted) -> None:
    types = _check_v4(converted(v4, qtype, experts_type=experts), v4)
    assert {types[f"blk.{i}.ffn_{w}_exps.weight"] for i in range(4) for w in ("gate", "up", "down")} == {want}
    assert types["blk.0.ffn_gate_tid2eid.weight"] == "I32"
    for kept in ("blk.1.hc_attn_fn.weight", "output_hc_fn.weight", "blk.1.attn_compressor_ape.weight"):
        assert types[kept] == "F32"  # F32 in the checkpoint, F32 in the file, at every type
    if qtype == "MXFP4_MOE":
        assert types["blk.1.attn_q_a.weight"] == types["token_embd.weight"] == "Q8_0"


def test_v4_metadata_and_template(v4, converted, tmp_path) -> None:
    f = gguf.GGUFReader(converted(v4, "MXFP4_MOE")).fields
    c = json.loads((v4 / "config.json").read_text())
    a = "deepseek4"
    expect = {
        "general.architecture": "deepseek4",
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_MXFP4_MOE),
        f"{a}.block_count": c["num_hidden_layers"],  # the MTP block is not kept
        f"{a}.expert_gating_func": 4,  # sqrt-softplus
        f"{a}.attention.head_count_kv": 1,
        f"{a}.attention.key_length": c["head_dim"],
        f"{a}.attention.sliding_window": c["sliding_window"],
        f"{a}.attention.output_group_count": c["o_groups"],
        f"{a}.attention.output_lora_rank": c["o_lora_rank"],
        f"{a}.attention.compress_ratios": c["compress_ratios"],
        f"{a}.attention.indexer.top_k": c["index_topk"],
        f"{a}.hyper_connection.count": c["hc_mult"],
        f"{a}.hyper_connection.sinkhorn_iterations": c["hc_sinkhorn_iters"],
        f"{a}.hash_layer_count": c["num_hash_layers"],
        f"{a}.embedding_length_out": c["hidden_size"] * c["hc_mult"],
        f"{a}.swiglu_clamp_exp": [c["swiglu_limit"]] * c["num_hidden_layers"],
        f"{a}.swiglu_clamp_shexp": [c["swiglu_limit"]] * c["num_hidden_layers"],
    }
    assert {k: f[k].contents() for k in expect} == expect
    assert f"{a}.nextn_predict_layers" not in f
    # no template in tokenizer_config.json: llama.cpp's default V4 template, as its converter embeds it
    templates = Path(__file__).resolve().parent.parent / "quantize" / "templates"
    assert (
        f["tokenizer.chat_template"].contents() == (templates / "deepseek-ai-DeepSeek-V4.jinja").read_text()
    )
    flash = hf.write_deepseek_v4(tmp_path / "DeepSeek-V4-Flash-0731", mtp=False)
    g = gguf.GGUFReader(convert(flash, tmp_path / "f.gguf", qtype="MXFP4_MOE").paths[0]).fields
    want = (templates / "deepseek-ai-DeepSeek-V4-Flash-0731.jinja").read_text()
    assert g["tokenizer.chat_template"].contents() == want


@pytest.mark.parametrize("qtype,experts", [("MXFP4_MOE", None), ("Q4_K_M", "Q2_K")])
def test_v4_llama_cpp_loads_and_generates(qtype, experts, v4, converted) -> None:
    """llama.cpp's deepseek4 graph runs the file: hyper-connections, sliding window + compressed caches,
    the indexer's top-k over the 4× compressed cache, hash routing in layer 0, MXFP4 experts."""
    path = converted(v4, qtype, experts_type=experts)
    first, logits = _generate(path)
    again, _ = _generate(path)
    assert first == again and len(first) == 12
    assert np.isfinite(logits).all() and logits.std() > 0


def test_v4_quantized_agrees_with_full_precision(v4, converted) -> None:
    """Logits of the BF16 file (experts MXFP4 as shipped) vs quantized ones: Q8_0 with the experts as shipped,
    decoded to Q8_0, and decoded to Q4_K (the decoded path loses only what the target type loses)."""
    _, hi = _generate(converted(v4, "BF16"), n=1)
    for qtype, experts, floor in (
        ("MXFP4_MOE", None, 0.999),
        ("Q8_0", "Q8_0", 0.999),
        ("Q8_0", "Q4_K", 0.99),
    ):
        _, lo = _generate(converted(v4, qtype, experts_type=experts), n=1)
        cos = float(hi @ lo / (np.linalg.norm(hi) * np.linalg.norm(lo)))
        print(f"\nV4 tiny: cosine(BF16, {qtype} experts {experts or 'MXFP4'} logits) = {cos:.5f}")
        assert cos > floor


def test_v4_experts_decode_a_chunk_at_a_time(v4, converted, tmp_path, monkeypatch) -> None:
    """--experts Q2_K decodes MXFP4 a bounded chunk of rows at a time (never a float copy of a whole tensor),
    and the result does not depend on the chunk size."""
    from quantize import mxfp4, reader

    seen: list[int] = []
    decode = mxfp4.decode
    monkeypatch.setattr(reader, "CHUNK_ELEMENTS", 4096)
    monkeypatch.setattr(mxfp4, "decode", lambda p, s: seen.append(p.size * 2) or decode(p, s))
    small = convert(v4, tmp_path / "small.gguf", qtype="Q4_K_M", experts_type="Q2_K").paths[0]
    per_tensor = hf.V4_DIMS.n_routed * hf.V4_DIMS.moe_intermediate * hf.V4_DIMS.hidden
    assert seen and max(seen) <= 4096 < per_tensor
    big = converted(v4, "Q4_K_M", experts_type="Q2_K")
    a = {t.name: np.asarray(t.data).tobytes() for t in gguf.GGUFReader(small).tensors}
    b = {t.name: np.asarray(t.data).tobytes() for t in gguf.GGUFReader(big).tensors}
    assert a == b


def test_v4_bad_mxfp4_scales(tmp_path) -> None:
    from quantize import SourceError as _SourceError

    src = hf.write_deepseek_v4(tmp_path / "v4", mtp=False, n_shards=1)
    raw = hf.read_safetensors(src / "model.safetensors")
    tensors = {k: hf._Tensor(d, a) for k, (d, a) in raw.items()}
    name = "layers.1.ffn.experts.2.w3.scale"
    tensors[name] = hf._Tensor("F8_E8M0", tensors[name].array[:, :-1].copy())
    hf.write_safetensors(src / "model.safetensors", tensors)
    with pytest.raises(_SourceError, match="not MXFP4"):
        convert(src, tmp_path / "o.gguf", qtype="MXFP4_MOE")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial"))


def test_mxfp4_decode_and_repack() -> None:
    """quantize/mxfp4.py against the factory's arithmetic E2M1/E8M0 decoder and gguf-py's own MXFP4 dequantizer:
    repacking moves bits only, decoding gives exactly the values ggml reads from the repacked blocks."""
    from quantize import mxfp4

    rng = np.random.default_rng(3)
    packed = rng.integers(0, 256, size=(5, 48), dtype=np.uint8)
    scale = rng.integers(100, 140, size=(5, 3), dtype=np.uint8)
    values = mxfp4.decode(packed, scale)
    np.testing.assert_array_equal(values, hf.mxfp4_dequantize(packed, scale))
    blocks = mxfp4.repack(packed, scale)
    assert blocks.shape == (5, 3 * 17)
    np.testing.assert_array_equal(gguf.quants.dequantize(blocks, T.MXFP4).reshape(5, 96), values)
    np.testing.assert_array_equal(
        mxfp4.e8m0_to_f32(np.array([127, 130, 0], dtype=np.uint8)), [1, 8, 2.0**-127]
    )
    assert np.isnan(mxfp4.e8m0_to_f32(np.array([255], dtype=np.uint8))).all()
    with pytest.raises(ValueError):
        mxfp4.decode(packed, scale[:, :2])


def test_mxfp4_moe_from_fp8(tmp_path) -> None:
    """--type MXFP4_MOE on an FP8 (V3) checkpoint: routed experts quantized to MXFP4 by ggml (bytes = ggml's
    quantization of FP8 × scale, error within a quarter of each 32-block's max: E2M1 with a power-of-two
    scale), every other matrix Q8_0; llama.cpp runs the file."""
    from quantize import native

    src = hf.write_deepseek_v3(tmp_path / "v3")
    path = convert(src, tmp_path / "o.gguf", qtype="MXFP4_MOE").paths[0]
    config = json.loads((src / "config.json").read_text())
    ref = hf.reference_tensors(src)
    experts = 0
    for t in gguf.GGUFReader(path).tensors:
        expected = _hf_value("deepseek_v3", t.name, ref, config)
        if T(t.tensor_type) != T.MXFP4:
            assert "_exps." not in t.name
            _check_tensor(t.name, t, expected)
            continue
        experts += 1
        want = native.quantize_rows(int(T.MXFP4), expected.reshape(-1, expected.shape[-1]))
        assert np.array_equal(np.asarray(t.data).reshape(-1).view(np.uint8), want), t.name
        got = gguf.quants.dequantize(t.data, T.MXFP4).reshape(-1, 32)
        rows = expected.reshape(-1, 32)
        assert (np.abs(got - rows) <= 0.26 * np.abs(rows).max(axis=1, keepdims=True) + 1e-12).all(), t.name
    assert experts == 3 * 2  # gate/up/down of the MoE layer and of the MTP layer
    first, _ = _generate(path)
    assert len(first) == 12


def _v4_mtp_value(name: str, ref: dict[str, np.ndarray]) -> np.ndarray:
    """GGUF name in an MTP-only file → the checkpoint's `mtp.0.*` value (or the model's embeddings/head)."""
    if name.startswith("output_hc_"):
        return ref["mtp.0." + V4_ROOT[name]]
    if name in V4_ROOT:
        return ref[V4_ROOT[name]]
    _, layer, rest = name.split(".", 2)
    assert int(layer) == hf.V4_DIMS.n_layer, name
    nextn = {"nextn.enorm.weight": "enorm.weight", "nextn.hnorm.weight": "hnorm.weight"}
    nextn["nextn.shared_head_norm.weight"] = "norm.weight"
    if rest in nextn:
        return ref["mtp.0." + nextn[rest]]
    if rest == "nextn.eh_proj.weight":
        return np.concatenate([ref["mtp.0.e_proj.weight"], ref["mtp.0.h_proj.weight"]], axis=1)
    if rest in V4_EXPERTS:
        n = hf.V4_DIMS.n_routed
        return np.stack([ref[f"mtp.0.ffn.experts.{e}.{V4_EXPERTS[rest]}.weight"] for e in range(n)])
    return ref["mtp.0." + V4_LAYER[rest]]


def test_v4_mtp_only_file(v4, converted) -> None:
    """V4's MTP block as a draft model of its own (llama.cpp's `--mtp` layout): block `num_hidden_layers` with
    `nextn.*`, the block's own hyper-connection head as `output_hc_*`, the model's embeddings and head; every
    value from the checkpoint; llama.cpp loads it with `load_mtp` and runs its deepseek4 MTP graph, whose
    draft logits depend on both the token and the main model's hidden state (hc × hidden wide)."""
    import llama_cpp

    path = converted(v4, "MXFP4_MOE", mtp_only=True)
    ref = hf.reference_tensors(v4)
    reader = gguf.GGUFReader(path)
    n = hf.V4_DIMS.n_layer
    for t in reader.tensors:
        expected = _v4_mtp_value(t.name, ref)
        if T(t.tensor_type) == T.MXFP4:
            got = gguf.quants.dequantize(t.data, T.MXFP4).reshape(expected.shape)
            np.testing.assert_array_equal(got, expected, err_msg=t.name)
        else:
            _check_tensor(t.name, t, expected)
    names = {t.name for t in reader.tensors}
    assert f"blk.{n}.nextn.eh_proj.weight" in names and f"blk.{n}.ffn_gate_exps.weight" in names
    assert not [x for x in names if x.startswith("blk.") and not x.startswith(f"blk.{n}.")]
    f = reader.fields
    assert f["deepseek4.block_count"].contents() == n + 1
    assert f["deepseek4.nextn_predict_layers"].contents() == 1
    assert len(f["deepseek4.swiglu_clamp_exp"].contents()) == n + 1

    mp = llama_cpp.llama_model_default_params()
    mp.load_mtp = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
    assert model, "llama.cpp refused the MTP-only file"
    try:
        assert llama_cpp.llama_model_n_layer_nextn(model) == 1
        width = int(llama_cpp.llama_model_n_embd_out(model))
        assert width == hf.V4_DIMS.hc_mult * hf.V4_DIMS.hidden
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 64, 8, 8, 2, 2
        cp.ctx_type = llama_cpp.LLAMA_CONTEXT_TYPE_MTP
        ctx = llama_cpp.llama_init_from_model(model, cp)
        assert ctx, "llama.cpp could not build an MTP context from the MTP-only file"
        try:
            h1, h2 = np.random.default_rng(0).standard_normal((2, width)).astype(np.float32)
            a, b, c = (_mtp_logits_wide(model, ctx, t, h) for t, h in ((5, h1), (5, h2), (9, h1)))
            assert np.isfinite(a).all() and a.std() > 0
            assert not np.allclose(a, b) and not np.allclose(a, c)
            np.testing.assert_allclose(a, _mtp_logits_wide(model, ctx, 5, h1), rtol=1e-5, atol=1e-5)
        finally:
            llama_cpp.llama_free(ctx)
    finally:
        llama_cpp.llama_model_free(model)


def _mtp_logits_wide(model, ctx, token: int, h: np.ndarray) -> np.ndarray:
    """One step of llama.cpp's MTP graph with a hidden state of the model's output width (V4: hc × hidden)."""
    import llama_cpp

    n = int(llama_cpp.llama_model_n_embd_out(model))
    batch = llama_cpp.llama_batch_init(1, n, 1)
    try:
        tokens = (llama_cpp.llama_token * 1)(token)
        batch.token = tokens
        batch.n_tokens = 1
        np.ctypeslib.as_array(batch.embd, shape=(n,))[:] = h
        batch.pos[0] = 0
        batch.n_seq_id[0] = 1
        batch.seq_id[0][0] = 0
        batch.logits[0] = True
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()
    finally:
        batch.token = None  # ours, not llama_batch_init's
        llama_cpp.llama_batch_free(batch)


def test_mtp_only_needs_a_v4_checkpoint_with_mtp(v32, v4, tmp_path) -> None:
    from quantize import UnsupportedType as _UnsupportedType

    with pytest.raises(_UnsupportedType, match="keeps it in the main file"):
        convert(v32, tmp_path / "a.gguf", mtp_only=True)
    bare = hf.write_deepseek_v4(tmp_path / "bare", mtp=False)
    with pytest.raises(_UnsupportedType, match="does not"):
        convert(bare, tmp_path / "b.gguf", mtp_only=True)
    assert not list(tmp_path.glob("*.gguf"))
