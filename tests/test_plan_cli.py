"""`localseek plan` and the offload flags of `localseek run`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inventory import TINY_MOE, write_tiny_moe


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localseek", *args], check=False, capture_output=True, text=True, timeout=180,
        env=dict(os.environ, COLUMNS="160", **(env or {})),
    )


def test_what_if_json(inventories) -> None:
    r = run_cli("plan", str(inventories["DeepSeek-R1-IQ1_S"]), "--vram", "24GiB", "--ram", "192GiB", "--ctx", "8192",
                "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    plan = data["plan"]
    assert plan["fits"] and plan["n_ctx"] == 8192 and plan["n_gpu_layers"] == 62 and plan["overrides"]
    assert data["hardware"]["simulated"] and data["model"]["mla"] and data["model"]["kv_bytes_per_token"] == 70272
    assert data["model"]["bytes_by_class"]["routed_experts"] > 0.9 * data["model"]["file_bytes"]


def test_refusal_is_a_table_then_one_line_exit_2(inventories) -> None:
    r = run_cli("plan", str(inventories["DeepSeek-R1-Q4_K_M"]), "--vram", "24GiB", "--ram", "192GiB")
    assert r.returncode == 2
    assert "routed experts" in r.stdout and "Memory" in r.stdout  # the plan is still shown
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Ways out" in lines[0] and "--force" in lines[0]
    forced = run_cli("plan", str(inventories["DeepSeek-R1-Q4_K_M"]), "--vram", "24GiB", "--ram", "192GiB", "--force")
    assert forced.returncode == 0


def test_board_profile(inventories) -> None:
    r = run_cli("plan", str(inventories["R1-Distill-Qwen-7B-Q4_K_M"]), "--board", "Raspberry Pi 5 Model B Rev 1.0",
                "--ram", "8GiB")
    assert r.returncode == 0, r.stderr
    assert "recommended model" in r.stdout and "repacked" in r.stdout and "Raspberry Pi 5" in r.stdout
    assert "expected speed" in r.stdout and "geerlingguy/ollama-benchmark" in r.stdout


def test_bad_flags_are_one_line_errors(tiny_gguf: Path) -> None:
    for args, message in [
        (["plan", str(tiny_gguf), "--vram", "lots"], "Cannot read the --"),
        (["run", str(tiny_gguf), "hi", "--gpu-layers", "many"], "--gpu-layers takes"),
        (["run", str(tiny_gguf), "hi", "--cpu-moe", "--n-cpu-moe", "2"], "either --cpu-moe"),
    ]:
        r = run_cli(*args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_run_with_offload_flags_on_tiny_moe(tmp_path: Path) -> None:
    model = write_tiny_moe(tmp_path / "tiny-moe.gguf", TINY_MOE)
    r = run_cli("run", str(model), "hello", "-n", "3", "--temperature", "0", "--ctx", "256", "--threads", "1",
                "--no-mmap", "--cpu-moe", "--verbose")
    assert r.returncode == 0, r.stderr
    assert "plan: ctx 256, threads 1" in r.stderr and "no mmap" in r.stderr
    assert "no usable GPU" in r.stderr  # this machine has none: said, not silently ignored
    assert "load_tensors" in r.stderr  # --verbose shows llama.cpp's own log


def test_run_refuses_what_does_not_fit(tiny_gguf: Path) -> None:
    r = run_cli("run", str(tiny_gguf), "hi", env={"LOCALSEEK_RAM_BYTES": "100000"})
    assert r.returncode == 2 and "Ways out" in r.stderr and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", [["plan", "--help"], ["doctor", "--help"], ["run", "--help"]])
def test_help_lists_the_options(cmd: list[str]) -> None:
    r = run_cli(*cmd)
    assert r.returncode == 0
    if cmd[0] == "run":
        for flag in ("--gpu-layers", "--cpu-moe", "--n-cpu-moe", "--ctx", "--threads", "--mlock", "--no-mmap"):
            assert flag in r.stdout
    if cmd[0] == "plan":
        assert "--vram" in r.stdout and "--json" in r.stdout
