"""quantize/: tiny Hugging Face checkpoints (tests/hf_factory.py) → GGUF, checked number by number and run in
the real llama.cpp.

What is proved here:
- every converted tensor, dequantized by gguf-py's independent numpy code, is within the target type's error
  bound of the source value (FP8 × block scale, computed by the factory's own arithmetic decoder), and the
  quantized bytes are exactly what ggml produces from that source value (so FP8 decoding, block scales, expert
  stacking, MLA splitting and Llama's q/k permutation lose nothing);
- a direct FP8→Q4_K_M conversion is byte-identical to llama.cpp's two-step route (F32 GGUF →
  llama_model_quantize);
- llama.cpp loads and greedy-generates every converted model; the MTP block loads with `load_mtp`;
- bad input fails with one clear error and leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import gguf
import hf_factory as hf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from quantize import (
    BadWeights,
    OutputError,
    OutputExists,
    SourceError,
    UnsupportedArchitecture,
    UnsupportedType,
    convert,
    native,
)

LAYOUTS = ["deepseek_v3", "deepseek_v2_lite", "qwen2", "llama", "qwen3"]


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    for name, write in hf.WRITERS.items():
        write(root / name)
    return root


@pytest.fixture(scope="session")
def references(hf_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    return {name: hf.reference_tensors(hf_dir / name) for name in hf.WRITERS}


_converted: dict[tuple, Path] = {}


@pytest.fixture(scope="session")
def converted(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out_dir = tmp_path_factory.mktemp("gguf")

    def get(layout: str, qtype: str, **kw) -> Path:
        key = (layout, qtype, tuple(sorted(kw.items())))
        if key not in _converted:
            out = out_dir / f"{layout}-{qtype}-{len(_converted)}.gguf"
            convert(hf_dir / layout, out, qtype=qtype, **kw)
            _converted[key] = out
        return _converted[key]

    return get


# -- mapping GGUF tensors back to the Hugging Face source (written out independently of quantize/archs) ----
def _hf_value(layout: str, name: str, ref: dict[str, np.ndarray], config: dict) -> np.ndarray:
    if name == "token_embd.weight":
        return ref["model.embed_tokens.weight"]
    if name == "output.weight":
        return ref["lm_head.weight"]
    if name == "output_norm.weight":
        return ref["model.norm.weight"]
    if name == "rope_freqs.weight":
        return _llama3_rope_factors(config)
    layer, rest = name.split(".", 2)[1:]
    p = f"model.layers.{layer}."
    table = {
        "attn_norm.weight": "input_layernorm.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
        "attn_q_a.weight": "self_attn.q_a_proj.weight",
        "attn_q_a_norm.weight": "self_attn.q_a_layernorm.weight",
        "attn_q_b.weight": "self_attn.q_b_proj.weight",
        "attn_q.weight": "self_attn.q_proj.weight",
        "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight",
        "attn_q.bias": "self_attn.q_proj.bias",
        "attn_k.bias": "self_attn.k_proj.bias",
        "attn_v.bias": "self_attn.v_proj.bias",
        "attn_q_norm.weight": "self_attn.q_norm.weight",
        "attn_k_norm.weight": "self_attn.k_norm.weight",
        "attn_kv_a_mqa.weight": "self_attn.kv_a_proj_with_mqa.weight",
        "attn_kv_a_norm.weight": "self_attn.kv_a_layernorm.weight",
        "attn_output.weight": "self_attn.o_proj.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight",
        "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
        "ffn_gate_inp.weight": "mlp.gate.weight",
        "exp_probs_b.bias": "mlp.gate.e_score_correction_bias",
        "ffn_gate_shexp.weight": "mlp.shared_experts.gate_proj.weight",
        "ffn_up_shexp.weight": "mlp.shared_experts.up_proj.weight",
        "ffn_down_shexp.weight": "mlp.shared_experts.down_proj.weight",
        "nextn.eh_proj.weight": "eh_proj.weight",
        "nextn.enorm.weight": "enorm.weight",
        "nextn.hnorm.weight": "hnorm.weight",
        "nextn.embed_tokens.weight": "embed_tokens.weight",
        "nextn.shared_head_head.weight": "shared_head.head.weight",
        "nextn.shared_head_norm.weight": "shared_head.norm.weight",
    }
    if rest in table:
        value = ref[p + table[rest]]
        if layout == "llama" and rest in ("attn_q.weight", "attn_k.weight"):
            hd = config["hidden_size"] // config["num_attention_heads"]
            n = value.shape[0] // hd
            value = value.reshape(n, 2, hd // 2, -1).swapaxes(1, 2).reshape(value.shape)
        return value
    for w in ("gate", "up", "down"):
        if rest == f"ffn_{w}_exps.weight":
            n = config["n_routed_experts"]
            return np.stack([ref[p + f"mlp.experts.{e}.{w}_proj.weight"] for e in range(n)])
    if rest in ("attn_k_b.weight", "attn_v_b.weight"):
        nh, nope, v = config["num_attention_heads"], config["qk_nope_head_dim"], config["v_head_dim"]
        kv_b = ref[p + "self_attn.kv_b_proj.weight"].reshape(nh, nope + v, -1)
        return kv_b[:, :nope].transpose(0, 2, 1) if rest == "attn_k_b.weight" else kv_b[:, nope:]
    raise AssertionError(f"no source for {name}")


def _llama3_rope_factors(config: dict) -> np.ndarray:
    rope = config["rope_scaling"]
    dim = config["hidden_size"] // config["num_attention_heads"]
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * config["rope_theta"] ** (i / dim)
        lo = rope["original_max_position_embeddings"] / rope["low_freq_factor"]
        hi = rope["original_max_position_embeddings"] / rope["high_freq_factor"]
        if wavelen < hi:
            out.append(1.0)
        elif wavelen > lo:
            out.append(rope["factor"])
        else:
            s = (rope["original_max_position_embeddings"] / wavelen - rope["low_freq_factor"]) / (
                rope["high_freq_factor"] - rope["low_freq_factor"]
            )
            out.append(1 / ((1 - s) / rope["factor"] + s))
    return np.asarray(out, dtype=np.float32)


# Error bound per type: |dequantized − source| ≤ BOUND × max|source| within each ggml block (32 or 256 values
# along the row). Derived from the formats: symmetric b-bit blocks err ≤ d/2 (+d at the clipped end, + the f16
# rounding of d); affine K-types err ≤ range/(2^b − 1)/2 plus the 6-bit quantization of sub-block scales.
BOUND = {
    T.Q8_0: 1 / 127 * 0.55,
    T.Q5_0: 1 / 16 * 1.01,
    T.Q5_1: 2 / 31 * 0.55,
    T.Q4_0: 1 / 8 * 1.01,
    T.Q4_1: 2 / 15 * 0.55,
    T.Q6_K: 1 / 32 * 1.1,
    T.Q5_K: 2 / 31 * 1.0,
    T.Q4_K: 2 / 15 * 1.0,
    T.Q3_K: 1 / 4 * 1.1,
    T.Q2_K: 2 / 3 * 1.0,
}


def _check_tensor(name: str, t, expected: np.ndarray) -> tuple[float, float]:
    """Returns (max error / bound, relative RMS error); asserts within bound."""
    gtype = T(t.tensor_type)
    got = gguf.quants.dequantize(t.data, gtype).astype(np.float32).reshape(expected.shape)
    if gtype == T.F32:
        if name == "rope_freqs.weight":  # computed, not copied: float32 vs this test's float64 arithmetic
            np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=name)
        return 0.0, 0.0
    rms = float(np.sqrt(np.mean((got - expected) ** 2)) / (np.sqrt(np.mean(expected**2)) + 1e-30))
    if gtype in (T.F16, T.BF16):
        rel = 2.0**-11 if gtype == T.F16 else 2.0**-8
        assert np.all(np.abs(got - expected) <= rel * np.abs(expected) + 1e-7), name
        return 0.0, rms
    blk = gguf.GGML_QUANT_SIZES[gtype][0]
    rows = expected.reshape(-1, blk)
    amax = np.abs(rows).max(axis=1, keepdims=True)
    err = np.abs(got.reshape(-1, blk) - rows)
    ratio = float((err / (BOUND[gtype] * amax + 1e-12)).max())
    assert ratio <= 1.0, f"{name} ({gtype.name}): error {ratio:.2f}× the bound"
    # and the bytes are exactly ggml's quantization of the source value
    want = native.quantize_rows(int(gtype), expected.reshape(-1, expected.shape[-1]))
    assert np.array_equal(np.asarray(t.data).reshape(-1).view(np.uint8), want), (
        f"{name}: bytes differ from ggml"
    )
    return ratio, rms


CASES = [
    ("deepseek_v3", "Q8_0"),
    ("deepseek_v3", "Q4_K_M"),
    ("deepseek_v3", "Q2_K"),
    ("deepseek_v3", "BF16"),
    ("deepseek_v3", "Q6_K"),
    ("deepseek_v2_lite", "Q4_0"),
    ("qwen2", "Q8_0"),
    ("qwen2", "Q5_K_M"),
    ("llama", "Q4_K_M"),
    ("llama", "F16"),
    ("qwen3", "Q3_K_M"),
]


@pytest.mark.parametrize("layout,qtype", CASES)
def test_every_tensor_within_error_bound(layout, qtype, hf_dir, references, converted) -> None:
    path = converted(layout, qtype)
    config = json.loads((hf_dir / layout / "config.json").read_text())
    ref = references[layout]
    reader = gguf.GGUFReader(path)
    worst: dict[str, tuple[float, float]] = {}
    seen = set()
    for t in reader.tensors:
        expected = _hf_value(layout, t.name, ref, config)
        ratio, rms = _check_tensor(t.name, t, expected)
        kind = T(t.tensor_type).name
        worst[kind] = (max(worst.get(kind, (0, 0))[0], ratio), max(worst.get(kind, (0, 0))[1], rms))
        seen.add(t.name)
    print(
        f"\n{layout} {qtype}: "
        + ", ".join(f"{k}: max err {r:.2f}× bound, rel RMS {s:.4f}" for k, (r, s) in sorted(worst.items()))
    )
    # every source value is accounted for exactly once (MTP block included; rope_freqs is generated)
    n_gguf = sum(int(np.prod(t.shape)) for t in reader.tensors if t.name != "rope_freqs.weight")
    assert n_gguf == sum(v.size for v in ref.values())


def test_v3_layout_keeps_mtp_and_metadata(converted) -> None:
    reader = gguf.GGUFReader(converted("deepseek_v3", "Q8_0"))
    f = {
        k: v.contents()
        for k, v in reader.fields.items()
        if not k.startswith("tokenizer.ggml.") or k in ("tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token")
    }
    d = hf.V3_DIMS
    assert f["general.architecture"] == "deepseek2"
    assert f["deepseek2.block_count"] == d.n_layer + 1
    assert f["deepseek2.nextn_predict_layers"] == 1
    assert f["deepseek2.attention.q_lora_rank"] == d.q_lora_rank
    assert f["deepseek2.attention.kv_lora_rank"] == d.kv_lora_rank
    assert f["deepseek2.attention.head_count_kv"] == 1
    assert f["deepseek2.attention.key_length"] == d.kv_lora_rank + d.qk_rope
    assert f["deepseek2.attention.key_length_mla"] == d.qk_nope + d.qk_rope
    assert f["deepseek2.expert_gating_func"] == int(gguf.ExpertGatingFuncType.SIGMOID)
    assert f["deepseek2.expert_weights_scale"] == pytest.approx(2.5)
    assert f["deepseek2.expert_weights_norm"] is True
    assert f["deepseek2.leading_dense_block_count"] == d.first_dense
    assert f["deepseek2.rope.scaling.yarn_log_multiplier"] == pytest.approx(0.1)
    assert f["tokenizer.ggml.pre"] == "deepseek-v3"
    names = {t.name for t in reader.tensors}
    mtp = f"blk.{d.n_layer}."
    for n in (
        "nextn.eh_proj",
        "nextn.enorm",
        "nextn.hnorm",
        "nextn.embed_tokens",
        "nextn.shared_head_head",
        "nextn.shared_head_norm",
        "attn_q_a",
        "ffn_gate_exps",
        "ffn_down_shexp",
        "attn_k_b",
    ):
        assert mtp + n + ".weight" in names
    assert f"blk.{d.n_layer}.exp_probs_b.bias" in names
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == d.vocab_size and tokens[-1] == f"[PAD{d.vocab_size - 1}]"
    assert types[-1] == int(gguf.TokenType.UNUSED)
    assert types[tokens.index("<｜User｜>")] == int(gguf.TokenType.CONTROL)
    assert "<｜Assistant｜><think>" in reader.fields["tokenizer.chat_template"].contents()


def test_no_mtp_drops_the_block(converted) -> None:
    reader = gguf.GGUFReader(converted("deepseek_v3", "Q8_0", keep_mtp=False))
    assert reader.fields["deepseek2.block_count"].contents() == hf.V3_DIMS.n_layer
    assert "deepseek2.nextn_predict_layers" not in reader.fields
    assert not any(t.name.startswith(f"blk.{hf.V3_DIMS.n_layer}.") for t in reader.tensors)


@pytest.mark.parametrize(
    "layout,pre",
    [
        ("deepseek_v2_lite", "deepseek-llm"),
        ("qwen2", "deepseek-r1-qwen"),
        ("llama", "llama-bpe"),
        ("qwen3", "deepseek-r1-qwen"),
    ],
)
def test_tokenizer_pre_from_the_tokenizer(layout, pre, converted) -> None:
    reader = gguf.GGUFReader(converted(layout, "Q8_0"))
    assert reader.fields["tokenizer.ggml.pre"].contents() == pre


def _generate(path: Path, n: int = 12, **params) -> tuple[list[int], np.ndarray]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, **params)
    try:
        prompt = llm.tokenize(
            "<｜User｜>Hello! How can I help?<｜Assistant｜>".encode(), add_bos=True, special=True
        )
        out = [t for _, t in zip(range(n), llm.generate(prompt, temp=0.0))]
        llm.reset()
        llm.eval(prompt)
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)
        return out, logits
    finally:
        llm.close()


@pytest.mark.parametrize(
    "layout,qtype",
    [
        ("deepseek_v3", "Q4_K_M"),
        ("deepseek_v2_lite", "Q8_0"),
        ("qwen2", "Q8_0"),
        ("llama", "Q4_K_M"),
        ("qwen3", "Q8_0"),
    ],
)
def test_llama_cpp_loads_and_generates(layout, qtype, converted) -> None:
    path = converted(layout, qtype)
    first, logits = _generate(path)
    again, _ = _generate(path)
    assert first == again and len(first) == 12
    assert np.isfinite(logits).all() and logits.std() > 0


def test_quantized_agrees_with_full_precision(converted) -> None:
    """Q8_0 logits ≈ BF16 logits of the same FP8 checkpoint in llama.cpp (quantization changes little)."""
    _, hi = _generate(converted("deepseek_v3", "BF16"), n=1)
    _, lo = _generate(converted("deepseek_v3", "Q8_0"), n=1)
    cos = float(hi @ lo / (np.linalg.norm(hi) * np.linalg.norm(lo)))
    print(f"\nV3 tiny: cosine(BF16, Q8_0 logits) = {cos:.5f}, top-1 {int(hi.argmax())} vs {int(lo.argmax())}")
    assert cos > 0.99


def _mtp_logits(model, ctx, token: int, h: np.ndarray) -> np.ndarray:
    """One step of llama.cpp's MTP graph: token + the main model's hidden state → draft logits."""
    import llama_cpp

    n_embd = int(llama_cpp.llama_model_n_embd(model))
    batch = llama_cpp.llama_batch_init(1, n_embd, 1)
    try:
        tokens = (llama_cpp.llama_token * 1)(token)
        batch.token = tokens
        batch.n_tokens = 1
        np.ctypeslib.as_array(batch.embd, shape=(n_embd,))[:] = h
        batch.pos[0] = 0
        batch.n_seq_id[0] = 1
        batch.seq_id[0][0] = 0
        batch.logits[0] = True
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return np.ctypeslib.as_array(
            ptr, shape=(int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))),)
        ).copy()
    finally:
        batch.token = None  # ours, not llama_batch_init's
        llama_cpp.llama_batch_free(batch)


def test_mtp_block_loads_and_runs_with_load_mtp(converted) -> None:
    """The kept MTP block loads with `load_mtp` and drives llama.cpp's MTP graph (LLAMA_CONTEXT_TYPE_MTP)."""
    import llama_cpp

    mp = llama_cpp.llama_model_default_params()
    mp.load_mtp = True
    model = llama_cpp.llama_model_load_from_file(str(converted("deepseek_v3", "Q8_0")).encode(), mp)
    assert model, "llama.cpp refused the model"
    try:
        assert llama_cpp.llama_model_n_layer_nextn(model) == 1
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 64, 8, 8, 2, 2
        cp.ctx_type = llama_cpp.LLAMA_CONTEXT_TYPE_MTP
        ctx = llama_cpp.llama_init_from_model(model, cp)
        assert ctx, "llama.cpp could not build an MTP context from the converted MTP block"
        try:
            rng = np.random.default_rng(0)
            h1, h2 = rng.standard_normal((2, hf.V3_DIMS.hidden)).astype(np.float32)
            a, b, c = (
                _mtp_logits(model, ctx, 5, h1),
                _mtp_logits(model, ctx, 5, h2),
                _mtp_logits(model, ctx, 9, h1),
            )
            assert np.isfinite(a).all() and a.std() > 0
            assert not np.allclose(a, b) and not np.allclose(a, c)  # depends on hidden state and token
            np.testing.assert_allclose(a, _mtp_logits(model, ctx, 5, h1), rtol=1e-5, atol=1e-5)
        finally:
            llama_cpp.llama_free(ctx)
    finally:
        llama_cpp.llama_model_free(model)


def test_direct_mixture_equals_llama_quantize_two_step(converted, tmp_path) -> None:
    """FP8 → Q4_K_M in one pass == FP8 → F32 GGUF → llama.cpp's llama_model_quantize(Q4_K_M), byte for
    byte."""
    direct = gguf.GGUFReader(converted("deepseek_v3", "Q4_K_M"))
    f32 = converted("deepseek_v3", "F32")
    two_step = tmp_path / "two-step.gguf"
    native.requantize_gguf(f32, two_step, int(gguf.LlamaFileType.MOSTLY_Q4_K_M), threads=1)
    other = {t.name: t for t in gguf.GGUFReader(two_step).tensors}
    types = {}
    for t in direct.tensors:
        o = other[t.name]
        assert T(t.tensor_type) == T(o.tensor_type), (
            f"{t.name}: {T(t.tensor_type).name} vs {T(o.tensor_type).name}"
        )
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(o.data).view(np.uint8)), t.name
        types[T(t.tensor_type).name] = types.get(T(t.tensor_type).name, 0) + 1
    assert {"Q4_K", "Q6_K"} <= set(types)  # a real mixture, with fallbacks for ragged rows
    print(f"\nQ4_K_M tensor types: {types}")


@pytest.mark.parametrize(
    "layout,qtype",
    [("qwen2", "Q4_K_M"), ("llama", "Q3_K_M"), ("qwen2", "Q2_K"), ("deepseek_v2_lite", "Q5_K_M")],
)
def test_mixture_types_match_llama_cpp(layout, qtype, converted, tmp_path) -> None:
    f32 = converted(layout, "F32")
    ftype = int(getattr(gguf.LlamaFileType, "MOSTLY_" + qtype))
    native.requantize_gguf(f32, tmp_path / "ref.gguf", ftype, threads=1)
    want = {t.name: T(t.tensor_type) for t in gguf.GGUFReader(tmp_path / "ref.gguf").tensors}
    got = {t.name: T(t.tensor_type) for t in gguf.GGUFReader(converted(layout, qtype)).tensors}
    assert got == want


def test_experts_override(converted) -> None:
    reader = gguf.GGUFReader(converted("deepseek_v3", "Q6_K", experts_type="Q2_K"))
    types = {t.name: T(t.tensor_type) for t in reader.tensors}
    assert types["blk.1.ffn_gate_exps.weight"] == T.Q2_K  # rows of 256: Q2_K as asked
    assert types["blk.1.ffn_down_exps.weight"] == T.Q4_0  # rows of 192: ggml's fallback for Q2_K
    assert types["blk.1.ffn_gate_shexp.weight"] == T.Q6_K  # shared experts keep the mixture's type
    assert types["blk.1.attn_kv_a_mqa.weight"] == T.Q6_K
    _, logits = _generate(converted("deepseek_v3", "Q6_K", experts_type="Q2_K"), n=4)
    assert np.isfinite(logits).all()


def _write_imatrix(path: Path, reader: gguf.GGUFReader) -> None:
    """A GGUF importance matrix as llama-imatrix writes it: <tensor>.in_sum2 and <tensor>.counts."""
    w = gguf.GGUFWriter(str(path), "imatrix")
    w.add_string("imatrix.datasets", "test")
    w.add_uint32("imatrix.chunk_count", 4)
    w.add_uint32("imatrix.chunk_size", 64)
    rng = np.random.default_rng(0)
    for t in reader.tensors:
        if len(t.shape) < 2 or t.name.startswith("blk.2."):
            continue  # no statistics for the MTP block, as with real imatrix runs
        n_mat = int(t.shape[2]) if len(t.shape) > 2 else 1
        w.add_tensor(t.name + ".in_sum2", (rng.random((n_mat, int(t.shape[0]))) * 256).astype(np.float32))
        w.add_tensor(t.name + ".counts", np.full((n_mat, 1), 256.0, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_iq_types_need_an_imatrix_and_use_it(hf_dir, converted, tmp_path) -> None:
    with pytest.raises(UnsupportedType, match="importance matrix"):
        convert(hf_dir / "deepseek_v3", tmp_path / "x.gguf", qtype="Q4_K_M", experts_type="IQ2_XXS")
    assert not (tmp_path / "x.gguf").exists()
    im = tmp_path / "model.imatrix"
    _write_imatrix(im, gguf.GGUFReader(converted("deepseek_v3", "F32")))
    result = convert(
        hf_dir / "deepseek_v3", tmp_path / "x.gguf", qtype="Q4_K_M", experts_type="IQ2_XXS", imatrix=im
    )
    types = {t.name: T(t.tensor_type) for t in gguf.GGUFReader(result.paths[0]).tensors}
    assert types["blk.1.ffn_gate_exps.weight"] == T.IQ2_XXS
    assert types["blk.2.ffn_gate_exps.weight"] == T.Q4_K  # MTP block: no importance data → Q4_K, reported
    assert any("blk.2.ffn_gate_exps" in f for f in result.fallbacks)
    _, logits = _generate(result.paths[0], n=2)
    assert np.isfinite(logits).all()


def test_split_output_loads_like_one_file(hf_dir, converted, tmp_path) -> None:
    result = convert(hf_dir / "deepseek_v3", tmp_path / "split.gguf", qtype="Q8_0", split_max_size=1_000_000)
    assert len(result.paths) > 1 and result.paths[0].name == f"split-00001-of-{len(result.paths):05d}.gguf"
    assert all(p.exists() for p in result.paths) and not (tmp_path / "split.gguf").exists()
    assert not list(tmp_path.glob(".*partial"))
    one, _ = _generate(converted("deepseek_v3", "Q8_0"))
    split, _ = _generate(result.paths[0])
    assert one == split


def test_requantize_gguf_through_llama_cpp(converted, tmp_path) -> None:
    src = converted("qwen2", "F16")
    out = tmp_path / "q.gguf"
    convert(src, out, qtype="Q4_K_M")
    assert {T(t.tensor_type).name for t in gguf.GGUFReader(out).tensors} >= {"Q4_K", "Q6_K"}
    with pytest.raises(OutputExists):
        convert(src, out, qtype="Q4_K_M")
    tokens, _ = _generate(out, n=4)
    assert len(tokens) == 4


# -- bad input: one clear error, nothing left behind ------------------------------------------------------
@pytest.fixture()
def v3(tmp_path: Path) -> Path:
    return hf.write_deepseek_v3(tmp_path / "v3")


def _no_output(tmp_path: Path) -> None:
    leftovers = [p for p in tmp_path.rglob("*.gguf*")] + list(tmp_path.rglob(".*partial"))
    assert not leftovers, leftovers


def test_missing_shard(v3, tmp_path) -> None:
    (v3 / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(SourceError, match="missing"):
        convert(v3, tmp_path / "o.gguf")
    _no_output(tmp_path)


def test_truncated_shard(v3, tmp_path) -> None:
    shard = v3 / "model-00003-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    with pytest.raises(SourceError, match="truncated"):
        convert(v3, tmp_path / "o.gguf")
    _no_output(tmp_path)


def _patch_header(shard: Path, fn) -> None:
    data = shard.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    fn(header)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (n - len(raw)) if len(raw) <= n else b""
    assert len(raw) == n, "patched header must keep its length"
    shard.write_bytes(data[:8] + raw + data[8 + n :])


def test_unknown_dtype(v3, tmp_path) -> None:
    shard = v3 / "model-00001-of-00003.safetensors"
    _patch_header(
        shard, lambda h: h["model.embed_tokens.weight"].update(dtype="F8E5")
    )  # same length as "BF16"
    with pytest.raises(SourceError, match="dtype F8E5"):
        convert(v3, tmp_path / "o.gguf")
    _no_output(tmp_path)


def test_shape_mismatch_with_config(v3, tmp_path) -> None:
    config = json.loads((v3 / "config.json").read_text())
    config["moe_intermediate_size"] = 160
    (v3 / "config.json").write_text(json.dumps(config))
    with pytest.raises(SourceError, match="config.json implies"):
        convert(v3, tmp_path / "o.gguf")
    _no_output(tmp_path)


def test_declared_shape_does_not_match_bytes(v3, tmp_path) -> None:
    _patch_header(
        v3 / "model-00001-of-00003.safetensors",
        lambda h: h["model.embed_tokens.weight"].update(shape=[448, 255]),
    )
    with pytest.raises(SourceError, match="spans"):
        convert(v3, tmp_path / "o.gguf")


def test_nan_weights(tmp_path) -> None:
    src = hf.write_qwen2(tmp_path / "q")
    shard = src / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    begin = header["model.layers.0.self_attn.q_proj.weight"]["data_offsets"][0]
    data[8 + n + begin + 200 : 8 + n + begin + 202] = struct.pack("<H", 0x7FC0)  # a BF16 NaN
    shard.write_bytes(bytes(data))
    with pytest.raises(BadWeights, match="NaN/Inf"):
        convert(src, tmp_path / "o.gguf", qtype="Q4_0")
    _no_output(tmp_path)


def test_unknown_architecture(v3, tmp_path) -> None:
    config = json.loads((v3 / "config.json").read_text())
    config["architectures"] = ["MistralForCausalLM"]
    (v3 / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitecture, match="DeepseekV3ForCausalLM"):
        convert(v3, tmp_path / "o.gguf")


def test_unknown_type(v3, tmp_path) -> None:
    with pytest.raises(UnsupportedType, match="Q4_K_M"):
        convert(v3, tmp_path / "o.gguf", qtype="Q7_X")


def test_existing_output_needs_force(v3, tmp_path) -> None:
    out = tmp_path / "o.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExists, match="--force"):
        convert(v3, out)
    assert out.read_bytes() == b"precious"
    convert(v3, out, force=True)
    assert out.read_bytes()[:4] == b"GGUF"


def test_disk_full_mid_write_leaves_nothing(v3, tmp_path, monkeypatch) -> None:
    from quantize import writer

    calls = {"n": 0}
    real = writer.GGUFStreamWriter.write

    def failing(self, data):
        calls["n"] += 1
        if calls["n"] == 20:
            raise writer._os_error(OSError(28, "No space left on device"), tmp_path)
        return real(self, data)

    monkeypatch.setattr(writer.GGUFStreamWriter, "write", failing)
    with pytest.raises(OutputError, match="full"):
        convert(v3, tmp_path / "o.gguf")
    _no_output(tmp_path)


def test_not_enough_space_is_refused_up_front(v3, tmp_path, monkeypatch) -> None:
    import shutil as sh

    from quantize import writer

    monkeypatch.setattr(
        writer.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    )
    with pytest.raises(OutputError, match="Not enough disk space"):
        convert(v3, tmp_path / "o.gguf")
    _no_output(tmp_path)


def test_ctrl_c_leaves_nothing(v3, tmp_path) -> None:
    def stop(p):
        if p.stage == "tensor" and p.index == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(v3, tmp_path / "o.gguf", progress=stop)
    _no_output(tmp_path)


def test_progress_reports_every_tensor(v3, tmp_path) -> None:
    events = []
    result = convert(v3, tmp_path / "o.gguf", qtype="Q4_0", progress=events.append)
    assert events[0].stage == "plan" and events[-1].stage == "done"
    tensor_events = [e for e in events if e.stage == "tensor"]
    assert len(tensor_events) == result.n_tensors
    assert tensor_events[-1].bytes_done == tensor_events[-1].bytes_total == result.bytes_written


# -- the command ---------------------------------------------------------------------------------------------
def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "localseek", "quantize", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_converts_and_reports(hf_dir, tmp_path) -> None:
    out = tmp_path / "v3.gguf"
    r = _cli(str(hf_dir / "deepseek_v3"), "--type", "Q4_K_M", "--experts", "Q2_K", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"Wrote {out}" in r.stdout and "Kept 1 MTP layer" in r.stdout
    types = {t.name: T(t.tensor_type) for t in gguf.GGUFReader(out).tensors}
    assert types["blk.1.ffn_gate_exps.weight"] == T.Q2_K


def test_cli_errors_are_one_line(hf_dir, tmp_path) -> None:
    out = tmp_path / "o.gguf"
    out.write_bytes(b"x")
    for args, needle in [
        ((str(hf_dir / "qwen2"), "-o", str(out)), "--overwrite"),
        ((str(hf_dir / "qwen2"), "-o", str(out), "--force"), "--overwrite"),
        ((str(hf_dir / "qwen2"), "-q", "Q9", "-o", str(tmp_path / "n.gguf")), "Unknown quantization"),
        ((str(tmp_path / "missing"), "-o", str(tmp_path / "n.gguf")), "neither"),
        ((str(hf_dir / "qwen2"), "--split-max-size", "lots"), "--split-max-size"),
    ]:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert out.read_bytes() == b"x"


def test_v3_layout_in_bf16_without_fp8_scales(tmp_path) -> None:
    """A DeepseekV3 checkpoint saved in BF16 (no quantization_config, e.g. a dequantized or freshly trained one)."""
    src = hf.write_deepseek_v3(tmp_path / "bf16", fp8=False, n_shards=2)
    assert not any(n.endswith("scale_inv") for n in hf.reference_tensors(src))
    result = convert(src, tmp_path / "bf16.gguf", qtype="Q8_0")
    assert result.mtp_layers == 1
    tokens, logits = _generate(result.paths[0], n=4)
    assert len(tokens) == 4 and np.isfinite(logits).all()
