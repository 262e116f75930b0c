"""`localseek run nano`: the bundled FP8 checkpoint is converted once with our own FP8 path, then cached."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_factory import write_deepseek_v3

from localseek import nano
from localseek.errors import ModelFileError
from localseek.loader import resolve_model


def test_parse_ref() -> None:
    assert nano.parse_ref("nano") == "Q8_0"
    assert nano.parse_ref("localseek-nano:q4_k_m") == "Q4_K_M"
    assert nano.parse_ref("deepseek-r1:7b") is None


def test_converts_once_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    ckpt = write_deepseek_v3(tmp_path / "ckpt")
    monkeypatch.setattr(nano, "CHECKPOINT", ckpt)
    messages: list[str] = []
    first = nano.ensure_gguf("Q8_0", on_convert=messages.append)
    assert first.is_file() and first.is_relative_to(isolated_home) and len(messages) == 1
    mtime = first.stat().st_mtime_ns
    again = nano.ensure_gguf("Q8_0", on_convert=messages.append)
    assert again == first and again.stat().st_mtime_ns == mtime and len(messages) == 1
    assert resolve_model("nano") == first
    assert resolve_model("nano:Q4_0") != first


def test_missing_checkpoint_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nano, "CHECKPOINT", tmp_path / "absent")
    with pytest.raises(ModelFileError, match="reinstall"):
        nano.ensure_gguf()
