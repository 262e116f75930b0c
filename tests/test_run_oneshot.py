"""`localseek run MODEL "prompt"` through pipes: plain text, stdin, --show-thinking, --json, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from tuimodels import loop_model

CMD = [sys.executable, "-m", "localseek", "run"]
ENV = dict(os.environ)
THREADS = ["--threads", "1"]  # one llama.cpp thread: steady on a busy 2-core machine


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (Linux /proc), to know it is past imports and loading."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CMD, *args, *THREADS], input=stdin if stdin is not None else "", capture_output=True, text=True, timeout=120,
        env={**ENV, **(env or {})}, check=False,
    )


def test_piped_output_is_the_answer_only_in_plain_text(tiny_gguf: Path) -> None:
    result = run(str(tiny_gguf), "hello", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCRIPT_ANSWER + "\n"
    assert result.stderr == ""  # reasoning only with --show-thinking
    assert "\x1b" not in result.stdout + result.stderr


def test_show_thinking_writes_reasoning_to_stderr(tiny_gguf: Path) -> None:
    result = run(str(tiny_gguf), "hello", "--temperature", "0", "--show-thinking")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCRIPT_ANSWER + "\n"
    assert result.stderr == SCRIPT_REASONING + "\n"
    assert "\x1b" not in result.stderr


def test_stdin_is_the_prompt_or_appended_to_it(tiny_gguf: Path) -> None:
    only_stdin = run(str(tiny_gguf), "--temperature", "0", "--json", stdin="hello")
    both = run(str(tiny_gguf), "summarise this", "--temperature", "0", "--json", stdin="some notes\nmore notes\n")
    assert only_stdin.returncode == both.returncode == 0, only_stdin.stderr + both.stderr
    a, b = json.loads(only_stdin.stdout), json.loads(both.stdout)
    assert a["answer"] == b["answer"] == SCRIPT_ANSWER
    assert b["stats"]["prompt_tokens"] > a["stats"]["prompt_tokens"] + 5


def test_json_has_answer_reasoning_and_stats(tiny_gguf: Path) -> None:
    result = run(str(tiny_gguf), "hello", "--temperature", "0", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == SCRIPT_ANSWER and data["reasoning"] == SCRIPT_REASONING
    assert data["interrupted"] is False and data["model"] == tiny_gguf.name
    stats = data["stats"]
    assert stats["stop_reason"] == "eos" and stats["generated_tokens"] == 18 and stats["reasoning_tokens"] == 8
    for key in ("time_to_first_token_s", "tokens_per_s", "prompt_tokens", "n_ctx", "reasoning_s"):
        assert key in stats


def test_think_budget_flag(model_dir: Path) -> None:
    result = run(str(loop_model(model_dir)), "hello", "--temperature", "0", "--think-budget", "12", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == SCRIPT_ANSWER
    assert data["stats"]["reasoning_tokens"] == 12 and data["stats"]["think_budget_hit"] is True


def test_sampling_flags_reach_the_model(tiny_gguf: Path) -> None:
    result = run(str(tiny_gguf), "hello", "--temperature", "0", "-n", "4", "--json")
    assert json.loads(result.stdout)["stats"]["generated_tokens"] == 4
    assert json.loads(result.stdout)["stats"]["stop_reason"] == "length"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["{model}", "   "], "", "prompt is empty"),
        (["{model}", "--json"], "", "Nothing to answer"),
        (["/nonexistent/model.gguf", "hi"], "", "model.gguf"),
        (["{model}", "hi", "--top-p", "3"], "", "top-p"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tiny_gguf: Path, args: list[str], stdin: str, message: str) -> None:
    result = run(*[a.format(model=tiny_gguf) for a in args], stdin=stdin)
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == ""
    assert "Traceback" not in result.stderr


def test_ctrl_c_exits_130_with_the_partial_answer(model_dir: Path) -> None:
    proc = subprocess.Popen(
        [*CMD, str(loop_model(model_dir)), "hello", "--temperature", "0", "--ctx", "32768", "-n", "1000000",
         "--show-thinking", *THREADS],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.read(len("Hmm, the user"))  # reasoning is streaming
        assert first == "Hmm, the user"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    # Not an error: the partial answer is what was asked for; stderr says it was cut, once.
    assert err.strip().endswith("[interrupted]") and "error" not in err and "Traceback" not in err


def test_json_when_interrupted_still_prints_what_it_has(model_dir: Path) -> None:
    proc = subprocess.Popen(
        [*CMD, str(loop_model(model_dir)), "hello", "--temperature", "0", "--ctx", "32768", "-n", "1000000", "--json",
         *THREADS],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        # --json prints nothing until the end: wait until it has worked well past loading (~0.7 s of CPU)
        deadline = time.monotonic() + 60
        while cpu_seconds(proc.pid) < 2.0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    data = json.loads(out)
    assert data["interrupted"] is True and data["stats"]["stop_reason"] == "interrupted"
    assert data["reasoning"].startswith("Hmm, the user says hello.") and data["answer"] == ""
