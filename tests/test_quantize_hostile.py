"""quantize on hostile or broken input: typed one-line errors for wrong config.json types and crafted safetensors,
shards that must lie inside the model folder, and partial outputs after kill -9 and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import hf_factory as hf
import pytest

from quantize import SourceError, convert, plan_conversion
from quantize.errors import OutputError
from quantize.safetensors import Checkpoint


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.write_qwen2(tmp_path_factory.mktemp("hf") / "q", n_shards=1)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


# -- config.json ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "needle"), [
    (lambda c: ["a", "list"], "not a JSON object"),
    (lambda c: {**c, "num_hidden_layers": "four"}, "num_hidden_layers is 'four', not a whole number"),
    (lambda c: {**c, "num_hidden_layers": 1e8}, "num_hidden_layers is 100000000.0"),
    (lambda c: {**c, "num_hidden_layers": 100_000_000}, "not a whole number from 1 to 512"),
    (lambda c: {**c, "hidden_size": [64]}, "hidden_size is [64]"),
    (lambda c: {**c, "rms_norm_eps": "NaN"}, "rms_norm_eps is 'NaN', not a finite number"),
    (lambda c: {**c, "architectures": "Qwen2ForCausalLM"}, "architectures is"),
    (lambda c: {k: v for k, v in c.items() if k != "num_attention_heads"}, "has no num_attention_heads"),
    (lambda c: {**c, "rope_scaling": [1]}, "rope_scaling is [1], not a JSON object"),
])
def test_config_types_are_checked_before_use(qwen: Path, tmp_path: Path, edit, needle: str) -> None:
    src = _copy(qwen, tmp_path / "m")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(edit(config)))
    start = time.monotonic()
    with pytest.raises(SourceError, match=needle.replace("[", r"\[").replace("]", r"\]")) as err:
        plan_conversion(src)
    assert "\n" not in str(err.value) and time.monotonic() - start < 10


# -- safetensors ------------------------------------------------------------------------------------------------
def _shard(folder: Path, header: dict, data: bytes, name: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(header).encode()
    (folder / name).write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return folder


F32_4 = {"dtype": "F32", "shape": [4]}


@pytest.mark.parametrize(("header", "needle"), [
    ({"a": {**F32_4, "data_offsets": [0, 16]}, "b": {**F32_4, "data_offsets": [8, 24]}}, "share bytes"),
    ({"a": {**F32_4, "data_offsets": [-8, 8]}}, "malformed header entry"),
    ({"a": {**F32_4, "data_offsets": ["0", "16"]}}, "malformed header entry"),
    ({"a": {**F32_4, "data_offsets": [0.0, 16.0]}}, "malformed header entry"),
    ({"a": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, "malformed header entry"),
    ({"a": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, "malformed header entry"),
    ({"\x1b[31mred": {"dtype": "C64", "shape": [4], "data_offsets": [0, 32]}}, r"tensor '\\x1b\[31mred' has dtype C64"),
])
def test_crafted_headers(tmp_path: Path, header: dict, needle: str) -> None:
    folder = _shard(tmp_path / "m", header, bytes(32))
    with pytest.raises(SourceError, match=needle) as err:
        Checkpoint(folder)
    assert "\x1b" not in str(err.value)


def test_deep_nesting_is_a_damaged_header(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    raw = b"[" * 100_000 + b"]" * 100_000
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(SourceError, match="damaged safetensors header"):
        Checkpoint(folder)


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "../outside.safetensors",
                                    "sub/../../outside.safetensors", "C:\\x.safetensors", "a\x01.safetensors"])
def test_index_shards_must_lie_inside_the_folder(tmp_path: Path, target: str) -> None:
    outside = _shard(tmp_path, {"w": {**F32_4, "data_offsets": [0, 16]}}, bytes(16), "outside.safetensors")
    folder = _shard(tmp_path / "m", {"w": {**F32_4, "data_offsets": [0, 16]}}, bytes(16))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": target}}))
    with pytest.raises(SourceError, match="not a file inside the model folder"):
        Checkpoint(folder)
    assert (outside / "outside.safetensors").exists()


def test_a_shard_in_a_subfolder_is_fine(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    _shard(folder / "sub", {"w": {**F32_4, "data_offsets": [0, 16]}}, bytes(16))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "sub/model.safetensors"}}))
    with Checkpoint(folder) as ckpt:
        assert list(ckpt.tensors) == ["w"]


# -- partial outputs ---------------------------------------------------------------------------------------------
# The real `localseek quantize`, made to stop after its first tensor (a marker file says it got there) so it can be
# killed mid-write deterministically.
_STALL = """
import os, pathlib, sys, time
import quantize.writer as w
end = w.GGUFStreamWriter.end
def stall(self):
    end(self)
    pathlib.Path(os.environ["MARK"]).touch()
    time.sleep(120)
w.GGUFStreamWriter.end = stall
sys.argv = ["localseek", "quantize", *sys.argv[1:]]
from localseek.cli import main
main()
"""


def _start_stalled(src: Path, out: Path, mark: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _STALL, str(src), "-q", "Q8_0", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, MARK=str(mark)))
    deadline = time.monotonic() + 120
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localseek", "quantize", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def test_kill_9_leaves_a_partial_that_the_next_run_removes(qwen: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    partial = tmp_path / ".o.gguf.partial"
    proc = _start_stalled(qwen, out, tmp_path / "mark")
    assert partial.stat().st_size > 0
    # while it runs, a second conversion of the same output is refused, and its file left alone
    with pytest.raises(OutputError, match="Another conversion is writing o.gguf"):
        convert(qwen, out, qtype="Q8_0")
    assert partial.stat().st_size > 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not out.exists()
    r = _cli(str(qwen), "-q", "Q8_0", "-o", str(out))
    assert r.returncode == 0, r.stderr
    removed = [line for line in r.stderr.splitlines() if "Removed" in line]
    assert len(removed) == 1 and ".o.gguf.partial" in removed[0] and "earlier run" in removed[0]
    assert out.exists() and not partial.exists()


def test_sigterm_cleans_up_and_says_so(qwen: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    proc = _start_stalled(qwen, out, tmp_path / "mark")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines() == [
        "error: Stopped by SIGTERM: the unfinished output was removed; nothing was written."]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "user-home") == ["mark"]  # (HOME: conftest)


def test_split_partials_are_cleaned_too(qwen: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    stale = [tmp_path / ".o-00001-of-00002.gguf.partial", tmp_path / ".o-00002-of-00002.gguf.partial"]
    for p in stale:
        p.write_bytes(b"x" * 100)
    unrelated = tmp_path / ".other.gguf.partial"
    unrelated.write_bytes(b"keep")
    events = []
    convert(qwen, out, qtype="Q8_0", progress=events.append)
    assert [Path(e.name).name for e in events if e.stage == "cleanup"] == [p.name for p in stale]
    assert not any(p.exists() for p in stale) and unrelated.read_bytes() == b"keep"
