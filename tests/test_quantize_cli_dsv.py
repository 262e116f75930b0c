"""`localseek quantize` on DeepSeek-V4: `--type MXFP4_MOE` (experts kept MXFP4) and `--mtp-only` (the MTP block as a
draft model of its own, `convert(..., mtp_only=True)`), through the real command on the factory's checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gguf
import hf_factory as hf
import pytest
from gguf import GGMLQuantizationType as T


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", "quantize", *args], capture_output=True, text=True,
                          timeout=180, check=False, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def v4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.write_deepseek_v4(tmp_path_factory.mktemp("hf") / "DeepSeek-V4-Flash")


def test_help_names_mxfp4_moe_and_mtp_only() -> None:
    r = _cli("--help")
    assert r.returncode == 0
    assert "MXFP4_MOE" in r.stdout and "--mtp-only" in r.stdout


def test_mxfp4_moe_keeps_v4_experts_mxfp4(v4: Path, tmp_path: Path) -> None:
    out = tmp_path / "v4.gguf"
    r = _cli(str(v4), "--type", "MXFP4_MOE", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"Wrote {out}" in r.stdout and "MXFP4_MOE" in r.stdout and "MTP" not in r.stdout  # V4: not in this file
    types = {t.name: T(t.tensor_type) for t in gguf.GGUFReader(out).tensors}
    assert {types[f"blk.{i}.ffn_{w}_exps.weight"] for i in range(hf.V4_DIMS.n_layer)
            for w in ("gate", "up", "down")} == {T.MXFP4}
    assert types["blk.0.attn_q_a.weight"] == T.Q8_0 and not any(n.startswith("blk.4.") for n in types)


def test_mtp_only_writes_the_draft_file_beside_the_source(v4: Path) -> None:
    r = _cli(str(v4), "--type", "MXFP4_MOE", "--mtp-only")
    expected = v4.parent / f"{v4.name}-MTP-MXFP4_MOE.gguf"  # not the main file's default name
    assert r.returncode == 0, r.stderr
    assert f"Wrote {expected}" in r.stdout and "draft model of its own" in r.stdout
    reader = gguf.GGUFReader(expected)
    n = hf.V4_DIMS.n_layer
    names = {t.name for t in reader.tensors}
    assert f"blk.{n}.nextn.eh_proj.weight" in names and f"blk.{n}.ffn_gate_exps.weight" in names
    assert not [x for x in names if x.startswith("blk.") and not x.startswith(f"blk.{n}.")]
    assert {"token_embd.weight", "output.weight", "output_hc_fn.weight"} <= names

    def value(key: str) -> object:
        field = reader.fields[key]
        return field.contents()

    assert value("deepseek4.block_count") == n + 1 and value("deepseek4.nextn_predict_layers") == 1
    again = _cli(str(v4), "--type", "MXFP4_MOE", "--mtp-only")
    assert again.returncode == 2 and "--overwrite" in again.stderr  # an existing output is never overwritten silently


def test_mtp_only_refusals_are_one_line(v4: Path, tmp_path: Path) -> None:
    v32 = hf.write_deepseek_v32(tmp_path / "v32")
    gguf_file = tmp_path / "x.gguf"
    gguf_file.write_bytes(b"GGUF")
    for args, needle in [
        ((str(v4), "--mtp-only", "--no-mtp"), "pass one of them"),
        ((str(v32), "--mtp-only", "-o", str(tmp_path / "a.gguf")), "DeepSeek-V4"),
        ((str(gguf_file), "--mtp-only"), "Hugging Face DeepSeek-V4 folder"),
    ]:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not (tmp_path / "a.gguf").exists()
