"""`localseek run` one-shot, what it says when things do not end with an answer: a reply cut before any answer
(exit 3, one line naming the flag to raise, also on a terminal), Ctrl-C (exit 130, no error line), and a model that
takes a while to load (a notice on the terminal after a second, nothing in pipes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ptyio import plain, read_until, spawn
from tuimodels import loop_model

from localseek.runtime.options import Stats
from localseek.tui.view import stats_line

CMD = [sys.executable, "-m", "localseek", "run"]
THREADS = ["--threads", "1"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args, *THREADS], input="", capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def test_cut_while_reasoning_exits_3_and_names_the_flag(tiny_gguf: Path) -> None:
    """The issue's `run nano "What is 387 + 512?" -n 5 | cat`: it printed nothing and exited 0."""
    result = run(str(tiny_gguf), "hello", "--temperature", "0", "-n", "3")
    assert result.returncode == 3 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No answer")
    assert "--max-tokens" in lines[0] and "still reasoning" in lines[0] and "--think-budget" in lines[0]


def test_json_says_the_same_with_the_json(tiny_gguf: Path) -> None:
    result = run(str(tiny_gguf), "hello", "--temperature", "0", "-n", "3", "--json")
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["answer"] == "" and data["stats"]["stop_reason"] == "length" and data["interrupted"] is False
    assert len(result.stderr.splitlines()) == 1 and "--max-tokens" in result.stderr


def test_context_full_while_reasoning_names_ctx(model_dir: Path) -> None:
    result = run(str(loop_model(model_dir)), "hello", "--temperature", "0", "--ctx", "64")
    assert result.returncode == 3 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "--ctx" in result.stderr and "context" in result.stderr


def test_an_answer_cut_short_is_still_an_answer(tiny_gguf: Path) -> None:
    result = run(str(tiny_gguf), "hello", "--temperature", "0", "-n", "12")  # 8 reasoning tokens, then answer
    assert result.returncode == 0 and result.stdout.strip() and result.stderr == ""


def test_on_a_terminal_the_hint_names_what_exists(tiny_gguf: Path) -> None:
    """One-shot has no chat commands: no `/think show`, but the flag to raise."""
    proc, master = spawn(["run", str(tiny_gguf), "hello", "--temperature", "0", "-n", "3", *THREADS])
    try:
        screen = plain(read_until(master, "--think-budget"))
        assert proc.wait(timeout=60) == 3
    finally:
        os.close(master)
    assert "/think" not in screen and "--max-tokens" in screen and "stopped at max tokens" in screen


def test_ctrl_c_on_a_terminal_is_not_an_error(model_dir: Path) -> None:
    proc, master = spawn(["run", str(loop_model(model_dir)), "hello", "--temperature", "0", "--ctx", "32768",
                          "-n", "1000000", *THREADS])
    try:
        read_until(master, "Hmm, the user")
        proc.send_signal(signal.SIGINT)
        screen = plain(read_until(master, "context "))
        screen += plain(read_until(master, "never shown", timeout=5))
        assert proc.wait(timeout=30) == 130
    finally:
        os.close(master)
    assert "[interrupted]" in screen
    assert "error" not in screen and "Interrupted." not in screen and "Traceback" not in screen


def test_stats_line_counts_in_words() -> None:
    assert " 1 token · " in stats_line(Stats(generated_tokens=1, n_ctx=100))
    assert " 2 tokens · " in stats_line(Stats(generated_tokens=2, n_ctx=100))


@pytest.fixture
def slow_load(tmp_path: Path) -> dict[str, str]:
    """An environment whose `localseek` takes 2.5 s more to load a model (a sitecustomize that slows Engine.load)."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import time
        from localseek.runtime import engine

        _load = engine.Engine.load.__func__

        def _slow(cls, *args, **kwargs):
            time.sleep(2.5)
            return _load(cls, *args, **kwargs)

        engine.Engine.load = classmethod(_slow)
    """))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}


def test_a_slow_load_shows_a_notice_on_the_terminal(tiny_gguf: Path, slow_load: dict[str, str]) -> None:
    proc, master = spawn(["run", str(tiny_gguf), "hello", "--temperature", "0", *THREADS],
                         env={**os.environ, **slow_load})
    try:
        raw = read_until(master, "context ")
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    assert f"Loading {tiny_gguf.name} (" in raw and (" … 1 s" in raw or " … 2 s" in raw)
    # erased when the load ends, before the reply
    notice_end = raw.rindex(" s", 0, raw.index("Hello!"))
    assert "\r\x1b[2K" in raw[notice_end:raw.index("Hello!")]


def test_a_slow_load_says_nothing_in_pipes(tiny_gguf: Path, slow_load: dict[str, str]) -> None:
    result = run(str(tiny_gguf), "hello", "--temperature", "0", env=slow_load)
    assert result.returncode == 0 and result.stderr == ""
