"""llama.cpp logits on converted tiny checkpoints vs an independent forward pass: Hugging Face transformers
on CPU.

Optional group: needs `pip install -e '.[reference]'` (torch + transformers). Skipped cleanly without them,
unless LOCALSEEK_REQUIRE_REFERENCE=1 (CI sets it), which turns the skip into a failure.
Prints cosine similarity and top-1 agreement per model (run with -s to see them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hf_factory as hf
import numpy as np
import pytest

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


LLAMA_CPP_SRC = Path(
    os.environ.get("LOCALSEEK_LLAMA_CPP_SRC", "/tmp/src/llama_cpp_python-0.3.36/vendor/llama.cpp")
)
_WRAPPER = """
import sys
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[1:]
sys.path.insert(0, {src!r})
import convert_hf_to_gguf
from conversion.base import TextModel
# the tiny tokenizer is not in llama.cpp's table of tokenizer hashes; name its pre-tokenizer directly
TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
convert_hf_to_gguf.main()
"""


@pytest.mark.skipif(
    not (LLAMA_CPP_SRC / "convert_hf_to_gguf.py").exists(),
    reason="llama.cpp source tree not found (set LOCALSEEK_LLAMA_CPP_SRC)",
)
@pytest.mark.parametrize("layout,pre", [("deepseek_v3", "deepseek-v3"), ("deepseek_v2_lite", "deepseek-llm")])
def test_same_file_as_llama_cpp_converter(layout, pre, tmp_path) -> None:
    """Q8_0 from localseek == Q8_0 from llama.cpp's own convert_hf_to_gguf.py (torch), tensor for tensor,
    byte for
    byte, and the same metadata (llama.cpp drops the MTP block, so compare with keep_mtp=False)."""
    import subprocess
    import sys

    import gguf

    src = hf.WRITERS[layout](tmp_path / layout)
    ours = convert(src, tmp_path / "ours.gguf", qtype="Q8_0", keep_mtp=False).paths[0]
    wrapper = tmp_path / "wrap.py"
    wrapper.write_text(_WRAPPER.format(src=str(LLAMA_CPP_SRC), pre=pre))
    theirs = tmp_path / "theirs.gguf"
    env = dict(os.environ, PYTHONPATH=str(LLAMA_CPP_SRC / "gguf-py"))
    r = subprocess.run(
        [sys.executable, str(wrapper), str(src), "--outtype", "q8_0", "--outfile", str(theirs)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert set(a) == set(b)
    for name, t in a.items():
        assert t.tensor_type == b[name].tensor_type and list(t.shape) == list(b[name].shape), name
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(b[name].data).view(np.uint8)), (
            name
        )
    fa, fb = gguf.GGUFReader(ours).fields, gguf.GGUFReader(theirs).fields
    differ = {
        k
        for k in set(fa) | set(fb)
        if k not in ("general.name", "GGUF.kv_count")
        and (k not in fa or k not in fb or fa[k].contents() != fb[k].contents())
    }
    print(
        f"\n{layout}: {len(a)} tensors byte-identical to llama.cpp's converter; metadata differs only in "
        f"{sorted(differ) or 'nothing'} (besides general.name)"
    )
    assert not differ
