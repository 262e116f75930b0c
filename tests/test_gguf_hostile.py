"""Hostile GGUF headers (issue 20, parts 3 and 5): counts that would size gigabytes, values of the wrong type, names
that are terminal escapes or Rich markup. Each ends in one typed line, fast, or is shown escaped."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from fuzzing import ARR, F32, GGUF_SEEDS, KV, STR, TI, U32, U64, Doc, serialize

from localseek.errors import ModelFileError
from localseek.models.gguf_info import read_gguf
from localseek.planning import hardware
from localseek.planning.footprint import from_gguf
from localseek.planning.plan import Request, make_plan


def _write(path: Path, doc: Doc, *, extra: int | None = None) -> Path:
    header, data = serialize(doc)
    path.write_bytes(header)
    os.truncate(path, len(header) + (data if extra is None else extra))  # sparse: no disk blocks
    return path


def _dense(**values: object) -> Doc:
    doc = GGUF_SEEDS["dense"]()
    for kv in doc.kvs:
        if kv.key in values:
            value = values[kv.key]
            kv.vtype, kv.value = (value if isinstance(value, tuple) else (U32, value))  # type: ignore[assignment]
    return doc


def _plan(path: Path) -> None:
    make_plan(from_gguf(read_gguf(path)), hardware.simulated(ram=64 << 30, vram=24 << 30), Request())


def _bounded(fn, *, seconds: float = 2.0, megabytes: float = 32.0) -> None:
    tracemalloc.start()
    start = time.monotonic()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.monotonic() - start < seconds and peak < megabytes * 1e6, (time.monotonic() - start, peak)


def test_block_count_of_4_billion_is_refused_before_anything_is_sized(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", _dense(**{"qwen2.block_count": 2**32 - 1}))
    with pytest.raises(ModelFileError, match=r"block_count is 4,294,967,295, more than any model has \(at most 512\)"):
        _bounded(lambda: _plan(path))


def test_counts_beyond_what_the_file_can_hold(tmp_path: Path) -> None:
    doc = GGUF_SEEDS["dense"]()
    doc.n_tensors = 1 << 24
    path = _write(tmp_path / "many.gguf", doc, extra=1 << 30)  # 16M tensor infos "over" a 1 GB sparse file
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        _bounded(lambda: read_gguf(path))
    doc = GGUF_SEEDS["dense"]()
    doc.kvs.append(KV("huge.strings", ARR, ["x"], STR, count=1 << 40))
    path = _write(tmp_path / "strings.gguf", doc)
    with pytest.raises(ModelFileError, match="array of 1,099,511,627,776 items"):
        _bounded(lambda: read_gguf(path))


@pytest.mark.parametrize("value", [(STR, "four"), (F32, math.nan), (F32, math.inf), (ARR, [1, 2]), (U64, 2**64 - 1),
                                   (F32, 61.0)])
def test_wrong_typed_counts_are_one_typed_line(tmp_path: Path, value: tuple) -> None:
    for key in ("qwen2.block_count", "qwen2.embedding_length", "qwen2.attention.head_count", "qwen2.context_length"):
        if key.endswith("head_count") and value[0] == ARR:
            continue  # head counts may be per layer (a list): legal
        path = _write(tmp_path / f"{key}.gguf", _dense(**{key: value}))
        with pytest.raises(ModelFileError) as err:
            _plan(path)
        assert "\n" not in str(err.value) and key.removeprefix("qwen2.") in str(err.value)


def test_odd_but_legal_shapes(tmp_path: Path) -> None:
    doc = _dense(**{"qwen2.attention.head_count": (ARR, [4, 4]), "qwen2.attention.head_count_kv": (ARR, [2, 1])})
    doc.tensors[0] = TI("token_embd.weight", [], 0)  # zero dimensions: n_vocab falls back to the token list
    for kv in doc.kvs:
        if kv.vtype == ARR:
            kv.itype = U32 if kv.key.startswith("qwen2.") else kv.itype
    _plan(_write(tmp_path / "m.gguf", doc))


@pytest.mark.parametrize("name", ["x-00001-of-00000.gguf", "x-00002-of-00001.gguf", "x-00000-of-00003.gguf"])
def test_impossible_split_names(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, GGUF_SEEDS["dense"]())
    with pytest.raises(ModelFileError, match="which cannot be"):
        read_gguf(path)


def test_architecture_names_llama_cpp_cannot_have(tmp_path: Path) -> None:
    for arch in ("[/nope]", "qwen2\x1b[2J", "qwen2\nfake", ""):
        path = _write(tmp_path / "m.gguf", _dense(**{"general.architecture": (STR, arch)}))
        with pytest.raises(ModelFileError, match="no architecture llama.cpp has") as err:
            read_gguf(path)
        assert "\x1b" not in str(err.value) and "\n" not in str(err.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # An explicit copy of the environment: under pytest a child otherwise sees COLUMNS=80 put there behind
    # os.environ's back, and piped output is then wrapped at 80 columns.
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "localseek", *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def test_show_prints_file_text_escaped(tmp_path: Path) -> None:
    doc = _dense(**{"general.name": (STR, "[bold red]x[/] \x1b]0;pwned\x07\x1b[2J"),
                    "qwen2.context_length": (F32, math.nan)})
    for kv in doc.kvs:
        if kv.key == "tokenizer.chat_template":
            kv.value = "[/nope]{{ '\x1b[31m' }}\u202e"
    path = _write(tmp_path / "[i]m[-i]\x1b[31m.gguf", doc)
    r = _cli("show", str(path), "--template")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "[i]m[-i]\\x1b[31m.gguf" in r.stdout and "context      nan" in r.stdout
    assert "[/nope]{{ '\\x1b[31m' }}\\u202e" in r.stdout
    r = _cli("show", str(path), "--json")
    assert r.returncode == 0 and '"context_length": "nan"' in r.stdout


def test_plan_of_a_hostile_header_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", _dense(**{"qwen2.block_count": 2**32 - 1}))
    r = _cli("plan", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "block_count" in lines[0]
