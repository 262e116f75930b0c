"""localseek-nano: problem generator, evaluation harness, the shipped FP8 checkpoint, its tokenizer in llama.cpp.

No torch here (CI installs only the `test` extra); tests that need the `train` extra are in test_nano_torch.py.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from localseek.chat.conversation import ChatTemplate
from localseek.nano import CHECKPOINT
from localseek.nano.evaluate import evaluate, evaluate_many, llama_generate, score
from localseek.nano.problems import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    THINK_CLOSE,
    Problem,
    completion,
    eval_problems,
    extract_answer,
    is_held_out,
    reasoning,
    render_prompt,
    sample_problem,
)

DATA = Path(__file__).parent / "data"

# ---------------------------------------------------------------- problems and reasoning

_EXPR = re.compile(r"^-?[\d+\-×]+$")


def _value(expr: str) -> int:
    expr = expr.strip()
    assert _EXPR.match(expr), expr
    expr = re.sub(r"\b0+(\d)", r"\1", expr)  # "0044" (a partial result with leading zeros) is 44
    return eval(expr.replace("×", "*"), {"__builtins__": {}})  # digits and + - × only, checked above


def _check_worked_solution(p: Problem) -> None:
    """Every equation in the reasoning holds, carries and borrows are right, each partial result is the new
    digit in front of the previous one, and the last result is the answer."""
    lines = reasoning(p).split("\n")
    previous, final = "", None
    for line in lines:
        if line.endswith(":") or "<" in line:  # "48×7:", "336+960:", "438<915, so the result is negative…"
            previous = ""
            continue
        body, _, partial = line.partition(" → ")
        head, _, note = body.partition(", ")
        if head.startswith("carry"):
            assert partial == head.split()[1] + previous, line
        else:
            values = [_value(side) for side in head.split("=")]
            if note == "borrow 1":
                assert values[0] < 0 and values[0] + 10 == values[1] == values[2], line
            else:
                assert len(set(values)) == 1, line
            if note.startswith("carry"):
                assert note == f"carry {values[0] // 10}" and partial[0] == str(values[0] % 10), line
            elif note == "borrow 0":
                assert 0 <= values[0] <= 9 and partial[0] == str(values[0]), line
            elif note == "borrow 1":
                assert partial[0] == str(values[-1]), line
            final = values[-1]
        if partial:
            assert partial[1:] == previous, line
            previous = final = partial
    assert final is not None and int(final) == abs(p.answer), (p, lines)


def test_worked_solutions_are_correct_arithmetic():
    rng = random.Random(3)
    for held_out in (False, True):
        for _ in range(1500):
            _check_worked_solution(sample_problem(rng, held_out=held_out))
    for p in [Problem("-", 1000, 999, ""), Problem("-", 438, 915, ""), Problem("×", 7, 348, ""),
              Problem("×", 48, 40, ""), Problem("+", 999, 1, ""), Problem("×", 0, 5, ""), Problem("-", 5, 5, "")]:
        _check_worked_solution(p)


def test_completion_ends_with_the_answer():
    p = Problem("-", 438, 915, "What is 438 - 915?")
    text = completion(p)
    assert text.count(THINK_CLOSE) == 1
    assert text.endswith("\n</think>\n\n438 - 915 = -477")
    assert extract_answer(text) == -477


def test_held_out_split_is_disjoint_and_deterministic():
    rng = random.Random(0)
    for _ in range(5000):
        p = sample_problem(rng, held_out=False)
        assert not is_held_out(p.op, p.a, p.b) and not is_held_out(p.op, p.b, p.a)
    problems = eval_problems(500)
    assert problems == eval_problems(500)
    assert len({(p.op, p.a, p.b) for p in problems}) == 500
    assert all(is_held_out(p.op, p.a, p.b) for p in problems)
    ops = {p.op for p in problems}
    assert ops == {"+", "-", "×"}
    assert any(p.answer < 0 for p in problems) and any(p.answer >= 10000 for p in problems)


def test_phrasings_vary_and_keep_the_operands():
    rng = random.Random(1)
    questions = set()
    for _ in range(10000):
        p = sample_problem(rng, held_out=False)
        questions.add(re.sub(r"\d+", "N", p.question))
        found = [int(x) for x in re.findall(r"\d+", p.question)]
        assert sorted(found) == sorted([p.a, p.b]), p
    assert len(questions) > 100
    for form in ("What is N + N?", "Compute N × N.", "N - N = ?", "N-N=?", "N×N"):
        assert form in questions, form


def test_render_prompt_equals_the_chat_template():
    template = ChatTemplate(CHAT_TEMPLATE, bos_token=BOS, eos_token=EOS)
    history = [("What is 2 + 3?", "2+3\n2+3+0=5, carry 0 → 5\n</think>\n\n2 + 3 = 5")]
    messages = [{"role": "user", "content": history[0][0]}, {"role": "assistant", "content": history[0][1]},
                {"role": "user", "content": "Compute 48 × 27."}]
    assert template.render(messages) == render_prompt("Compute 48 × 27.", history)
    assert render_prompt("hi").endswith("<｜User｜>hi<｜Assistant｜><think>\n")
    assert "carry" not in render_prompt("x", history)  # past reasoning stripped


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("a\n</think>\n\n387 + 512 = 899", 899),
        ("</think>\n\n438 - 915 = -477", -477),
        ("</think>The answer is 42.", 42),
        ("x</think>\n\n1 = 2 = 3", 3),
        ("no think block 5 + 5 = 10", None),
        ("</think>\n\nI do not know", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_evaluate_scores_a_perfect_and_a_broken_model():
    problems = eval_problems(60)
    oracle = {render_prompt(p.question): completion(p) for p in problems}
    assert evaluate(lambda prompt: oracle[prompt], problems).accuracy == 1.0

    def off_by_one(prompts):
        return [oracle[q].replace(str(p.answer), str(p.answer + 1)) for q, p in zip(prompts, problems)]

    result = evaluate_many(off_by_one, problems, batch_size=len(problems))
    assert result.correct == 0 and len(result.failures) == 60
    assert sum(t for _, t in result.by_op.values()) == 60
    assert "0/60" in result.summary()
    assert score(problems[:2], ["</think>" + str(problems[0].answer), ""]).correct == 1


def test_llama_generate_runs_a_gguf(tiny_think_gguf):
    """The harness drives a real llama.cpp model (the scripted tiny one writes a think block, no number)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(tiny_think_gguf), n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False, seed=0)
    problems = eval_problems(2)
    result = evaluate(llama_generate(llm, max_new_tokens=40), problems)
    assert result.n == 2 and result.correct == 0
    out = result.failures[0][1]
    assert THINK_CLOSE in out and "Hello! How can I help?" in out


# ---------------------------------------------------------------- the shipped checkpoint (read without torch)


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def _checkpoint_tensors() -> dict[str, dict]:
    index = json.loads((CHECKPOINT / "model.safetensors.index.json").read_text(encoding="utf-8"))
    out = {}
    for fname in sorted(set(index["weight_map"].values())):
        header = _safetensors_header(CHECKPOINT / fname)
        header.pop("__metadata__", None)
        for name, info in header.items():
            assert index["weight_map"][name] == fname
            out[name] = dict(info, file=fname)
    assert set(out) == set(index["weight_map"])
    return out


def _e4m3_table() -> np.ndarray:
    """float value of each of the 256 e4m3fn bytes (0x7F/0xFF are NaN)."""
    table = np.zeros(256, dtype=np.float32)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        exp, man = (b >> 3) & 0xF, b & 0x7
        if exp == 0xF and man == 0x7:
            table[b] = np.nan
        elif exp == 0:
            table[b] = sign * man / 8 * 2.0**-6
        else:
            table[b] = sign * (1 + man / 8) * 2.0 ** (exp - 7)
    return table


def _read(name: str, tensors: dict[str, dict]) -> np.ndarray:
    info = tensors[name]
    header_len = struct.unpack("<Q", (CHECKPOINT / info["file"]).open("rb").read(8))[0]
    start, end = info["data_offsets"]
    with (CHECKPOINT / info["file"]).open("rb") as f:
        f.seek(8 + header_len + start)
        raw = f.read(end - start)
    if info["dtype"] == "F8_E4M3":
        return _e4m3_table()[np.frombuffer(raw, dtype=np.uint8)].reshape(info["shape"])
    if info["dtype"] == "BF16":
        return (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
    assert info["dtype"] == "F32"
    return np.frombuffer(raw, dtype=np.float32).reshape(info["shape"])


def test_checkpoint_is_laid_out_like_deepseek_v3():
    config = json.loads((CHECKPOINT / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["DeepseekV3ForCausalLM"] and config["model_type"] == "deepseek_v3"
    assert config["quantization_config"] == {
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]
    }
    assert config["num_nextn_predict_layers"] == 1 and config["q_lora_rank"] and config["kv_lora_rank"]
    assert config["scoring_func"] == "sigmoid" and config["topk_method"] == "noaux_tc"
    assert 0 < config["first_k_dense_replace"] < config["num_hidden_layers"]
    n = config["num_hidden_layers"]
    tensors = _checkpoint_tensors()
    size = sum((CHECKPOINT / f).stat().st_size for f in {t["file"] for t in tensors.values()})
    assert size < 8 * 2**20

    fp8 = {k for k, v in tensors.items() if v["dtype"] == "F8_E4M3"}
    assert fp8 and all(k + "_scale_inv" in tensors for k in fp8)
    ragged = 0
    for k in fp8:
        out_dim, in_dim = tensors[k]["shape"]
        scale = tensors[k + "_scale_inv"]
        assert scale["dtype"] == "F32" and scale["shape"] == [math.ceil(out_dim / 128), math.ceil(in_dim / 128)]
        ragged += out_dim % 128 != 0 or in_dim % 128 != 0
    assert ragged > 0
    for layer in range(n + 1):
        p = f"model.layers.{layer}."
        for proj in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"):
            assert p + f"self_attn.{proj}.weight" in fp8
        if layer < config["first_k_dense_replace"]:
            assert p + "mlp.gate_proj.weight" in fp8 and p + "mlp.gate.weight" not in tensors
        else:
            assert tensors[p + "mlp.gate.weight"]["dtype"] == "BF16"
            assert tensors[p + "mlp.gate.e_score_correction_bias"]["dtype"] == "F32"
            assert p + "mlp.shared_experts.down_proj.weight" in fp8
            for e in range(config["n_routed_experts"]):
                assert p + f"mlp.experts.{e}.up_proj.weight" in fp8
    mtp = f"model.layers.{n}."
    for name in ("embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head.norm", "shared_head.head"):
        assert tensors[mtp + name + ".weight"]["dtype"] == "BF16"
    assert tensors[mtp + "eh_proj.weight"]["shape"] == [config["hidden_size"], 2 * config["hidden_size"]]
    assert tensors["model.embed_tokens.weight"]["shape"] == [config["vocab_size"], config["hidden_size"]]


def test_checkpoint_weights_decode_to_sane_values():
    tensors = _checkpoint_tensors()
    name = "model.layers.1.self_attn.q_b_proj.weight"
    q, s = _read(name, tensors), _read(name + "_scale_inv", tensors)
    assert np.isfinite(q).all() and np.abs(q).max() <= 448
    w = q * np.repeat(np.repeat(s, 128, 0), 128, 1)[: q.shape[0], : q.shape[1]]
    assert 0.005 < w.std() < 1.0
    bias = _read("model.layers.1.mlp.gate.e_score_correction_bias", tensors)
    assert np.isfinite(bias).all()
    n = json.loads((CHECKPOINT / "config.json").read_text())["num_hidden_layers"]
    np.testing.assert_array_equal(_read(f"model.layers.{n}.shared_head.head.weight", tensors),
                                  _read("lm_head.weight", tensors))


def test_checkpoint_tokenizer_files():
    tok = json.loads((CHECKPOINT / "tokenizer.json").read_text(encoding="utf-8"))
    cfg = json.loads((CHECKPOINT / "tokenizer_config.json").read_text(encoding="utf-8"))
    config = json.loads((CHECKPOINT / "config.json").read_text(encoding="utf-8"))
    gen = json.loads((CHECKPOINT / "generation_config.json").read_text(encoding="utf-8"))
    assert cfg["chat_template"] == CHAT_TEMPLATE and cfg["bos_token"] == BOS and cfg["eos_token"] == EOS
    added = {t["content"]: t for t in tok["added_tokens"]}
    assert added[BOS]["id"] == config["bos_token_id"] == gen["bos_token_id"] == 0
    assert added[EOS]["id"] == config["eos_token_id"] == gen["eos_token_id"] == 1
    assert not added["<think>"]["special"] and not added["</think>"]["special"]
    assert len(tok["model"]["vocab"]) + 4 == config["vocab_size"]
    assert not any(len(p) > 1 and p.isdigit() for p in tok["model"]["vocab"])  # one token per digit
    steps = tok["pre_tokenizer"]["pretokenizers"]
    assert [s["type"] for s in steps] == ["Split", "Split", "Split", "ByteLevel"]
    assert steps[0]["pattern"]["Regex"] == r"\p{N}{1,3}"


def test_llama_cpp_tokenizes_like_training(tmp_path):
    """llama.cpp with the `deepseek-v3` pre-tokenizer gives the ids Hugging Face tokenizers gave in training."""
    import llama_cpp
    from nano_vocab import write_vocab_gguf

    path = write_vocab_gguf(CHECKPOINT / "tokenizer.json", tmp_path / "nano-vocab.gguf")
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    samples = json.loads((DATA / "nano_tokens.json").read_text(encoding="utf-8"))
    assert len(samples) >= 70
    for s in samples:
        assert llm.tokenize(s["text"].encode("utf-8"), add_bos=False, special=True) == s["ids"], s["text"]
        assert llm.detokenize(s["ids"], special=True).decode("utf-8") == s["text"]
