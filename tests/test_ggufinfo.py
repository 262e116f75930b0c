from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from factory import R1_TEMPLATE, build_vocab

from localseek.errors import ModelFileError
from localseek.models.gguf_info import read_gguf, split_parts


def test_header_round_trip(tiny_gguf: Path) -> None:
    info = read_gguf(tiny_gguf)
    assert info.arch == "qwen2"
    assert info.get("block_count") == 2
    assert info.get("embedding_length") == 64
    assert info.chat_template == R1_TEMPLATE
    assert info.metadata["tokenizer.ggml.pre"] == "deepseek-r1-qwen"
    assert len(info.metadata["tokenizer.ggml.tokens"]) == len(build_vocab().tokens)
    names = {t.name for t in info.tensors}
    assert {"token_embd.weight", "blk.1.attn_q.bias", "output.weight"} <= names
    emb = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert emb.shape == (64, len(build_vocab().tokens)) and emb.type_name == "F32"
    assert info.total_bytes == tiny_gguf.stat().st_size


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="No such file"):
        read_gguf(tmp_path / "nope.gguf")


def test_not_gguf(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ModelFileError, match="not a GGUF.*quantize"):
        read_gguf(p)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated(tiny_gguf: Path, tmp_path: Path, keep: float) -> None:
    data = tiny_gguf.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="truncated"):
        read_gguf(p)


def test_truncated_inside_header(tiny_gguf: Path, tmp_path: Path) -> None:
    p = tmp_path / "cut.gguf"
    p.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        read_gguf(p)


def test_split_parts_missing(tiny_gguf: Path, tmp_path: Path) -> None:
    first = tmp_path / "m-00001-of-00003.gguf"
    shutil.copy(tiny_gguf, first)
    with pytest.raises(ModelFileError, match="missing 2 of 3 parts"):
        split_parts(first)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="folder"):
        read_gguf(tmp_path)
