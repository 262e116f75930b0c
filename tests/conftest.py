"""Shared fixtures: an isolated user directory for every test, and tiny GGUF models built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
    monkeypatch.setenv("LOCALSEEK_THREADS", "2")
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
