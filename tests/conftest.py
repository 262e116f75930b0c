"""Shared fixtures: an isolated user directory for every test, and tiny GGUF models built once per session."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# A test run started in the background of a non-interactive shell (a CI script with `&`) inherits SIGINT ignored,
# and an ignored signal stays ignored across exec: the Ctrl-C tests' children would never see theirs. A handler
# here (not an ignore) is reset to the default in every child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from factory import TinyConfig, write_qwen2_gguf


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing a test does touches the real user's models, caches or the network."""
    home = tmp_path / "localseek-home"
    monkeypatch.setenv("LOCALSEEK_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("LOCALSEEK_RAM_BYTES", raising=False)
    monkeypatch.setenv("LOCALSEEK_THREADS", "1")  # tests share 2 cores; 1 thread avoids contention stalls
    # Other tools' model folders (models/elsewhere.py): none of the real user's, unless a test builds some.
    user = tmp_path / "user-home"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))  # ~/.ollama, ~/.lmstudio, ~/.cache/llama.cpp
    monkeypatch.setenv("OLLAMA_MODELS", str(user / ".ollama" / "models"))
    monkeypatch.setenv("LLAMA_CACHE", str(user / ".cache" / "llama.cpp"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("LOCALSEEK_MODELS_PATH", raising=False)
    return home


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_gguf(model_dir: Path) -> Path:
    """Scripted qwen2 model: greedy output is <think>SCRIPT_REASONING</think>SCRIPT_ANSWER."""
    return write_qwen2_gguf(model_dir / "tiny-scripted.gguf", TinyConfig())


@pytest.fixture(scope="session")
def tiny_think_gguf(model_dir: Path) -> Path:
    """Same weights, template whose generation prompt ends with <think>\\n."""
    return write_qwen2_gguf(model_dir / "tiny-think.gguf", TinyConfig(think_in_prompt=True))


@pytest.fixture(scope="session")
def tiny_random_gguf(model_dir: Path) -> Path:
    return write_qwen2_gguf(model_dir / "tiny-random.gguf", TinyConfig(weights="random", seed=7))


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def inventories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Header-only GGUFs with the real tensor inventories (tests/inventory.py): "DeepSeek-R1-Q4_K_M" → path.
    A few MB of disk each whatever their apparent size; per-tensor types from llama.cpp's quantizer."""
    import gguf
    from inventory import (
        LLAMA_8B,
        LLAMA_70B,
        QWEN3_8B,
        QWEN_1_5B,
        QWEN_7B,
        QWEN_14B,
        R1,
        R1_MTP,
        V2_LITE,
        header_only_quant,
    )

    q = gguf.LlamaFileType
    d = tmp_path_factory.mktemp("inventories")
    made = {}
    for shape, ftype in [
        (R1, q.MOSTLY_Q4_K_M), (R1, q.MOSTLY_IQ1_S), (R1, q.MOSTLY_Q2_K), (R1, q.MOSTLY_Q8_0),
        (R1_MTP, q.MOSTLY_Q4_K_M), (V2_LITE, q.MOSTLY_Q4_K_M), (V2_LITE, q.MOSTLY_Q4_0), (QWEN_1_5B, q.MOSTLY_Q4_K_M),
        (QWEN_1_5B, q.MOSTLY_Q4_0), (QWEN_7B, q.MOSTLY_Q4_K_M), (QWEN_7B, q.MOSTLY_Q4_0), (QWEN_14B, q.MOSTLY_Q4_K_M),
        (QWEN_14B, q.MOSTLY_Q4_0), (LLAMA_8B, q.MOSTLY_Q4_K_M), (LLAMA_70B, q.MOSTLY_Q4_K_M),
        (QWEN3_8B, q.MOSTLY_Q4_K_M),
    ]:
        made[f"{shape.name}-{ftype.name.removeprefix('MOSTLY_')}"] = header_only_quant(d, shape, ftype)[0]
    return made


def require_reference(reason: str) -> None:
    """Skip a reference check whose tools are missing — or fail, where CI says they must be there."""
    if os.environ.get("LOCALSEEK_REQUIRE_REFERENCE") == "1":
        pytest.fail(f"{reason} (LOCALSEEK_REQUIRE_REFERENCE=1: CI must run this check)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def nano_full_precision():
    """localseek-nano's accuracy in full precision (torch fp32, greedy) on all 500 held-out problems: the number the
    GGUF floors are measured against, computed here rather than copied."""
    try:
        import torch
        import transformers
        from tokenizers import Tokenizer
    except ImportError:
        require_reference("torch/transformers/tokenizers missing: pip install -e '.[reference]'")
    if int(transformers.__version__.split(".")[0]) < 5:
        require_reference("localseek_train needs transformers 5 (the `reference` extra pins it)")
    from localseek.nano import CHECKPOINT
    from localseek.nano.evaluate import evaluate_many
    from localseek.nano.problems import eval_problems
    from localseek_train.checkpoint import load_checkpoint
    from localseek_train.generate import torch_generate_many

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: OpenMP's spinning collapses when other jobs share the cores
    try:
        model = load_checkpoint(CHECKPOINT)
        tok = Tokenizer.from_file(str(CHECKPOINT / "tokenizer.json"))
        return evaluate_many(torch_generate_many(model, tok), eval_problems(500))
    finally:
        torch.set_num_threads(threads)
