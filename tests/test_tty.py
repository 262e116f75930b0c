"""`localseek run` on a real pseudo-terminal: live, visibly distinct reasoning, and the chat loop."""

from __future__ import annotations

import os
from pathlib import Path

from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from ptyio import plain, read_until, spawn


def test_one_shot_on_terminal_styles_reasoning(tiny_gguf: Path) -> None:
    proc, master = spawn(["run", str(tiny_gguf), "hello", "--temperature", "0"])
    try:
        screen = read_until(master, "context ")  # the status line after the reply
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    assert "Thinking" in plain(screen) and SCRIPT_ANSWER in plain(screen)
    # Reasoning is dimmed (SGR 2), the answer is not.
    before_answer = screen.split(SCRIPT_ANSWER.split()[0])[0]
    assert "\x1b[2" in before_answer and "says" in before_answer


def test_chat_loop_keeps_going_until_exit(tiny_gguf: Path) -> None:
    proc, master = spawn(["run", str(tiny_gguf), "--temperature", "0"])
    try:
        read_until(master, ">>> ")
        # prompt-toolkit redraws the prompt line when Enter is pressed: wait for the reply's status line first
        os.write(master, b"hello\r")
        first = read_until(master, "context ") + read_until(master, ">>> ")
        os.write(master, b"again\r")
        second = read_until(master, "context ") + read_until(master, ">>> ")
        os.write(master, b"/exit\r")
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    for screen in (first, second):
        assert SCRIPT_ANSWER in plain(screen) and SCRIPT_REASONING in plain(screen)
