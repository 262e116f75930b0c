"""One size convention: binary units, parsed the same by every flag and printed the same by every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

from localseek.errors import UsageError
from localseek.sizes import GiB, KiB, MiB, format_count, format_size, parse_size


@pytest.mark.parametrize("text,value", [
    ("24GiB", 24 * GiB), ("24G", 24 * GiB), ("24GB", 24 * GiB), ("24 gb", 24 * GiB), ("1.5T", int(1.5 * 1024**4)),
    ("512M", 512 * MiB), ("512MiB", 512 * MiB), ("300k", 300 * KiB), ("4096", 4096), ("4096B", 4096),
])
def test_parse_size_is_binary(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "", "-1G", "1e9", "5iB", "3 GiBs", "9" * 40 + "T"])
def test_parse_size_refuses_with_one_line(text: str) -> None:
    with pytest.raises(UsageError, match="--ram|too large"):
        parse_size(text, "--ram")


def test_format_size_and_count() -> None:
    assert format_size(None) == "?"
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 * MiB) == "3.0 MiB"
    assert format_size(1.1e9) == "1.0 GiB"
    assert format_count(1_780_000_000) == "1.78B" and format_count(2_430_000) == "2.43M" and format_count(12) == "12"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", *args], capture_output=True, text=True, timeout=180,
                          env=cli_env())


def test_plan_flags_parse_like_every_size(tiny_gguf: Path) -> None:
    for ram in ("50G", "50GB", "50GiB", str(50 * GiB)):
        doc = json.loads(_cli("plan", str(tiny_gguf), "--ram", ram, "--vram", "8GB", "--json").stdout)
        assert doc["hardware"]["memory"]["total"] == 50 * GiB, ram
        assert doc["hardware"]["gpus"][0]["memory_total"] == 8 * GiB
    bad = _cli("plan", str(tiny_gguf), "--ram", "lots")
    assert bad.returncode == 2 and "--ram" in bad.stderr and "Traceback" not in bad.stderr


def test_split_max_size_is_binary_too(tmp_path: Path) -> None:
    """`quantize --split-max-size 1M` means 1 MiB, as `plan --ram 1M` does: same parts as 1048576 bytes."""
    from hf_factory import write_deepseek_v3

    ckpt = write_deepseek_v3(tmp_path / "ckpt")
    parts = {}
    for size in ("1M", "1048576", "1MiB"):
        out = tmp_path / size / "m.gguf"
        out.parent.mkdir()
        r = _cli("quantize", str(ckpt), "-q", "Q8_0", "-o", str(out), "--split-max-size", size)
        assert r.returncode == 0, r.stderr
        files = sorted(out.parent.glob("m-*.gguf"))
        assert len(files) > 1 and all(f.stat().st_size <= MiB for f in files)
        parts[size] = [f.stat().st_size for f in files]
    assert parts["1M"] == parts["1048576"] == parts["1MiB"]


def test_commands_print_binary_units(tiny_gguf: Path) -> None:
    out = _cli("show", str(tiny_gguf)).stdout + _cli("plan", str(tiny_gguf)).stdout + _cli("models").stdout
    assert "MiB" in out or "GiB" in out
    for decimal in (" GB", " MB", " kB", " TB"):
        assert decimal not in out, decimal
