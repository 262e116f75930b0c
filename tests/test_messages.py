"""Messages that mislead (issue 18): work announced before the input is checked, "did you mean" the very name typed,
no "did you mean" at all, a context past the model's training without a word, re-quantizing without a word."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LOCALSEEK = [sys.executable, "-m", "localseek"]


def cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*LOCALSEEK, *args], env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_a_bundled_quant_is_checked_before_anything_is_announced(isolated_home: Path) -> None:
    line = error_line(cli("run", "nano:Q5", "hi"))
    assert "'Q5'" in line and "Q4_K_M" in line and "Q8_0" in line
    assert not (isolated_home / "converted").exists() or not list((isolated_home / "converted").iterdir())


def test_rm_never_suggests_the_name_that_was_typed(isolated_home: Path) -> None:
    line = error_line(cli("rm", "deepseek-r1:7b", "--yes"))
    assert "Did you mean" not in line and "nothing to remove" in line
    assert cli("run", "nano", "What is 2 + 3?").returncode == 0  # installs localseek-nano:Q8_0
    line = error_line(cli("rm", "localseek-nano:Q4_0", "--yes"))
    assert "Did you mean 'localseek-nano:Q8_0'?" in line


@pytest.mark.parametrize("args", [["run", "nnao"], ["run", "nnao", "hi"], ["plan", "nnao"], ["show", "nnao"],
                                  ["pull", "nnao"], ["bench", "nnao"]])
def test_a_misspelt_name_gets_did_you_mean(args: list[str]) -> None:
    assert "Did you mean 'nano'?" in error_line(cli(*args))


def test_a_context_longer_than_trained_warns(tiny_gguf: Path) -> None:
    plan = cli("plan", str(tiny_gguf), "--ctx", "4096")
    assert plan.returncode == 0, plan.stderr
    assert "warning: --ctx 4096 is more than the 2048 tokens the model was trained for" in plan.stdout
    run = cli("run", str(tiny_gguf), "hi", "--ctx", "4096", "-n", "2", "--temperature", "0")
    assert run.returncode == 3, run.stderr  # two tokens end inside the reasoning: "No answer" (exit 3)
    assert "warning: --ctx 4096 is more than the 2048 tokens" in run.stderr
    quiet = cli("plan", str(tiny_gguf), "--ctx", "2048")
    assert "trained for" in quiet.stdout and "warning: --ctx" not in quiet.stdout


def test_the_chat_and_plan_name_an_installed_model_not_its_cache_file(isolated_home: Path) -> None:
    assert cli("run", "nano", "What is 2 + 3?").returncode == 0
    path = json.loads(cli("list", "--json").stdout)[0]["path"]
    assert Path(path).name.startswith("localseek-nano-") and Path(path).name.endswith("-Q8_0.gguf")
    r = cli("run", path, "What is 2 + 3?", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "localseek-nano:Q8_0"
    plan = cli("plan", path, env={"COLUMNS": "200"})
    assert plan.stdout.splitlines()[0].startswith("localseek-nano:Q8_0 · deepseek2")


def test_quantize_warns_that_a_quantized_source_loses_quality(tiny_gguf: Path, tmp_path: Path) -> None:
    q8 = tmp_path / "q8.gguf"
    first = cli("quantize", str(tiny_gguf), "-q", "Q8_0", "-o", str(q8))
    assert first.returncode == 0, first.stderr
    assert "already quantized" not in first.stderr  # F32 weights: nothing lost before
    again = cli("quantize", str(q8), "-q", "Q4_0", "-o", str(tmp_path / "q4.gguf"))
    assert again.returncode == 0, again.stderr
    assert "warning: q8.gguf is already quantized (Q8_0)" in again.stderr and "original weights" in again.stderr
