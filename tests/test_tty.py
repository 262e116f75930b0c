"""`localseek run` on a real pseudo-terminal: live, visibly distinct reasoning, and the chat loop."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from factory import SCRIPT_ANSWER, SCRIPT_REASONING

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def plain(screen: str) -> str:
    return ANSI.sub("", screen)


def _spawn(args: list[str]) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100", LINES="30")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localseek", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    return proc, master


def _read_until(master: int, needle: str, timeout: float = 60) -> str:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if needle.encode() in out:
                break
    return out.decode("utf-8", "replace")


def test_one_shot_on_terminal_styles_reasoning(tiny_gguf: Path) -> None:
    proc, master = _spawn(["run", str(tiny_gguf), "hello", "--temperature", "0"])
    try:
        screen = _read_until(master, "context ")  # the status line after the reply
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    assert "Thinking" in plain(screen) and SCRIPT_ANSWER in plain(screen)
    # Reasoning is dimmed (SGR 2), the answer is not.
    before_answer = screen.split(SCRIPT_ANSWER.split()[0])[0]
    assert "\x1b[2" in before_answer and "says" in before_answer


def test_chat_loop_keeps_going_until_exit(tiny_gguf: Path) -> None:
    proc, master = _spawn(["run", str(tiny_gguf), "--temperature", "0"])
    try:
        _read_until(master, ">>> ")
        # prompt-toolkit redraws the prompt line when Enter is pressed: wait for the reply's status line first
        os.write(master, b"hello\r")
        first = _read_until(master, "context ") + _read_until(master, ">>> ")
        os.write(master, b"again\r")
        second = _read_until(master, "context ") + _read_until(master, ">>> ")
        os.write(master, b"/exit\r")
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    for screen in (first, second):
        assert SCRIPT_ANSWER in plain(screen) and SCRIPT_REASONING in plain(screen)
