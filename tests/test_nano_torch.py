"""localseek-nano's training side: FP8 checkpoint round trip, MTP module, transformers compatibility, and the
shipped model's accuracy. Needs the `train` extra (torch, transformers, tokenizers); skipped without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import require_reference

try:
    import tokenizers  # noqa: F401
    import torch
    import transformers
except ImportError:
    require_reference("torch, transformers and tokenizers are needed: pip install -e '.[reference]'")
if int(transformers.__version__.split(".")[0]) < 5:  # fused-expert layout of transformers 5 (the extras pin it)
    require_reference("localseek_train needs transformers 5: pip install -e '.[reference]'")

from localseek.nano import CHECKPOINT
from localseek.nano.evaluate import evaluate_many
from localseek.nano.problems import eval_problems
from localseek_train.checkpoint import (
    dequantize_fp8,
    fp8_roundtrip,
    is_fp8_weight,
    load_checkpoint,
    quantize_fp8,
    read_checkpoint,
    save_checkpoint,
    v3_state_dict,
)
from localseek_train.model import NANO_CONFIG, NanoModel

TINY = dict(NANO_CONFIG, vocab_size=300, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
            num_hidden_layers=2, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, num_attention_heads=2, num_key_value_heads=2)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _tiny_model(seed: int = 0) -> NanoModel:
    torch.manual_seed(seed)
    model = NanoModel(TINY)
    for r in model.routers():  # a non-trivial correction bias, as after training
        r.e_score_correction_bias.copy_(torch.randn(r.num_experts) * 0.1)
    return model.eval()


@pytest.mark.parametrize("shape", [(192, 64), (48, 128), (300, 260), (128, 128), (1, 7)])
def test_fp8_block_quantization(shape):
    torch.manual_seed(1)
    w = torch.randn(*shape) * torch.logspace(-3, 0, shape[1])  # columns of very different magnitude
    q, scale = quantize_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    assert scale.shape == ((shape[0] + 127) // 128, (shape[1] + 127) // 128)
    back = dequantize_fp8(q, scale)
    assert torch.equal(back, fp8_roundtrip(w))
    # e4m3 keeps 3 mantissa bits: relative error ≤ 2^-4 for values well inside the block's range
    big = w.abs() > scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[: shape[0], : shape[1]] * 2**-6 * 448
    assert ((back - w).abs()[big] <= w.abs()[big] * 2**-4 + 1e-12).all()
    stack = torch.stack([w, -w])
    assert torch.equal(fp8_roundtrip(stack)[1], -fp8_roundtrip(w))


def test_checkpoint_round_trip(tmp_path: Path):
    model = _tiny_model()
    save_checkpoint(model, tmp_path / "ckpt", {"extra.json": {"a": 1}})
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "extra.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    config, sd = read_checkpoint(tmp_path / "ckpt")
    assert config["quantization_config"]["weight_block_size"] == [128, 128]
    original = v3_state_dict(model)
    assert set(sd) == set(original)
    # dense layer: 5 attention + 3 MLP; MoE layer and MTP layer: 5 + 3 shared + 8 experts × 3
    assert sum(map(is_fp8_weight, sd)) == 8 + 32 + 32
    for name, w in original.items():
        if is_fp8_weight(name):
            assert torch.equal(sd[name], fp8_roundtrip(w.float())), name
        elif name.endswith("e_score_correction_bias"):
            assert torch.equal(sd[name], w.float()), name
        else:
            assert torch.equal(sd[name], w.to(torch.bfloat16).float()), name
    loaded = load_checkpoint(tmp_path / "ckpt")
    ids = torch.randint(3, 290, (2, 17))
    a, am = model.mtp_logits(ids)
    b, bm = loaded.mtp_logits(ids)
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    assert torch.nn.functional.cosine_similarity(am.flatten(), bm.flatten(), dim=0) > 0.99
    # saving again replaces the directory as a whole
    save_checkpoint(loaded, tmp_path / "ckpt", {})
    assert not (tmp_path / "ckpt" / "extra.json").exists()


def test_mtp_is_causal_and_uses_the_next_token():
    model = _tiny_model(2)
    ids = torch.randint(3, 290, (1, 12))
    _, m1 = model.mtp_logits(ids)
    changed = ids.clone()
    changed[0, 8] = (ids[0, 8] + 1) % 290 + 3
    _, m2 = model.mtp_logits(changed)
    # row i sees h_0..h_i and tokens 1..i+1: rows < 7 are untouched, row 7 (token 8 as "next") changes
    assert torch.allclose(m1[0, :7], m2[0, :7], atol=1e-5)
    assert not torch.allclose(m1[0, 7], m2[0, 7], atol=1e-5)


def test_losses_train_both_heads():
    model = _tiny_model(3)
    model.train()
    ids = torch.randint(3, 290, (4, 20))
    mask = torch.ones_like(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        main, mtp = model.losses(ids, mask)
        first = first or (main.item(), mtp.item())
        (main + 0.3 * mtp).backward()
        opt.step()
        opt.zero_grad()
    assert main.item() < first[0] * 0.7 and mtp.item() < first[1] * 0.7


def test_transformers_loads_the_checkpoint(tmp_path: Path):
    """`DeepseekV3ForCausalLM.from_pretrained` reads our FP8 checkpoint (its own FP8 path, dequantized) and
    computes what our loader computes."""
    pytest.importorskip("accelerate")
    from transformers import DeepseekV3ForCausalLM, FineGrainedFP8Config

    save_checkpoint(_tiny_model(4), tmp_path / "ckpt", {})
    hf = DeepseekV3ForCausalLM.from_pretrained(
        tmp_path / "ckpt", quantization_config=FineGrainedFP8Config(dequantize=True)
    ).float().eval()
    ours = load_checkpoint(tmp_path / "ckpt")
    ids = torch.randint(3, 290, (1, 24))
    with torch.no_grad():
        a, b = hf(ids).logits, ours.lm(ids).logits
    # transformers dequantizes into bf16, we into f32: same model up to bf16 rounding of the weights
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the fixture's 500 torch replies count against the first test that uses it
def test_shipped_model_full_precision_accuracy(nano_full_precision):
    """All 500 held-out problems with the shipped FP8 checkpoint in torch: the figure docs/NANO.md reports (99.4%)."""
    assert nano_full_precision.n == 500
    assert nano_full_precision.accuracy == pytest.approx(0.994, abs=0.003), nano_full_precision.summary()


def test_shipped_tokenizer_matches_golden_ids():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(CHECKPOINT / "tokenizer.json"))
    samples = json.loads((Path(__file__).parent / "data" / "nano_tokens.json").read_text(encoding="utf-8"))
    for s in samples:
        assert tok.encode(s["text"], add_special_tokens=False).ids == s["ids"]
