"""The chat in a real terminal: tmux runs `localseek run`, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from tuimodels import loop_model

pytestmark = pytest.mark.tmux

if shutil.which("tmux") is None:
    if os.environ.get("LOCALSEEK_REQUIRE_TMUX"):
        raise RuntimeError("tmux is required (LOCALSEEK_REQUIRE_TMUX is set) but not installed")
    pytest.skip("tmux is not installed (apt-get install tmux)", allow_module_level=True)

EXIT_MARK = "__localseek_exited__"
_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colours(screen: str) -> set[str]:
    """Colour-setting SGR parameters on a `capture-pane -e` screen (tmux's resets 39/49 are not colours)."""
    found = set()
    for params in _SGR.findall(screen):
        for p in params.split(";"):
            if p.isdigit() and (30 <= int(p) <= 38 or 40 <= int(p) <= 48 or 90 <= int(p) <= 107):
                found.add(p)
    return found


class Terminal:
    """One tmux server (own socket) running one command in a 100x40 window."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.socket = f"localseek-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        shell = f"cd {shlex.quote(str(cwd))} && env {exports} {shlex.join(command)}; echo {EXIT_MARK} rc=$?; sleep 600"
        self._tmux("new-session", "-d", "-s", "chat", "-x", "100", "-y", "40", shell)
        self.socket_path = self._tmux("display-message", "-p", "#{socket_path}").strip()

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            self._tmux("send-keys", "-t", "chat", key)
            time.sleep(0.05)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "chat", "-l", text)

    def screen(self, *, escapes: bool = False) -> str:
        return self._tmux("capture-pane", "-p", "-t", "chat", "-S", "-400", *(["-e"] if escapes else []))

    def wait_for(self, text: str, timeout: float = 30.0, *, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} (x{count}) did not appear; the screen shows:\n{screen}")
            time.sleep(0.1)

    def wait_last_line(self, expected: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            last = self.screen().rstrip().splitlines()[-1]
            if last == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"last line is {last!r}, expected {expected!r}")
            time.sleep(0.1)

    def prompt_ready(self, count: int) -> str:
        """Wait until the `count`-th input prompt is shown (">>> " at the start of a line)."""
        return self.wait_for("\n>>> ", count=count)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path: Path, isolated_home: Path) -> Iterator:
    opened: list[Terminal] = []

    def start(model: Path, *args: str, env: dict[str, str] | None = None) -> Terminal:
        base = {"LOCALSEEK_HOME": str(isolated_home), "LOCALSEEK_THREADS": "1", "TERM": "xterm-256color",
                "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        # one llama.cpp thread: steady on a busy 2-core machine (spinning threads there crawl)
        command = [sys.executable, "-m", "localseek", "run", str(model), "--threads", "1", *args]
        term = Terminal(command, tmp_path, {**base, **(env or {})})
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


def test_chat_shows_thinking_apart_then_commands_history_and_exit(terminal, tiny_gguf: Path, isolated_home: Path) -> None:
    t = terminal(tiny_gguf, "--temperature", "0")
    t.wait_for("Type /? for help")
    t.type("hello there")
    t.keys("Enter")
    screen = t.wait_for("first token ")  # the status line after the reply (the banner also says "context")
    lines = screen.splitlines()
    thought = next(i for i, line in enumerate(lines) if line.startswith("Thought for "))
    assert lines[thought].endswith("· 8 tokens")
    assert lines[thought + 1] == SCRIPT_ANSWER  # the answer, on its own line, after the collapsed block
    assert SCRIPT_REASONING not in screen  # collapsed
    assert lines[thought + 2].startswith("first token ") and "context " in lines[thought + 2]

    t.prompt_ready(2)
    t.type("/think show")
    t.keys("Enter")
    screen = t.wait_for("│ " + SCRIPT_REASONING)

    t.prompt_ready(3)
    t.type("/set temperature 0.3")
    t.keys("Enter")
    t.wait_for("temperature = 0.3")
    t.prompt_ready(4)
    t.type("/help")
    t.keys("Enter")
    t.wait_for("/think on|off|show|hide|budget N")
    t.prompt_ready(5)
    t.type("/stats")
    t.keys("Enter")
    t.wait_for("(8 reasoning), stop: eos")

    # Up recalls earlier messages (and commands), newest first
    t.prompt_ready(6)
    t.keys("Up")
    t.wait_last_line(">>> /stats")
    t.keys("Up", "Up", "Up", "Up")  # /help, /set…, /think show, hello there
    t.wait_last_line(">>> hello there")
    t.keys("C-u")  # clear the line
    t.type("/th")
    time.sleep(0.3)
    t.keys("Tab")
    time.sleep(0.3)
    t.type("hide")
    t.keys("Enter")
    t.wait_for("Live reasoning hidden")

    # Ctrl-C twice at an empty prompt leaves the chat
    t.prompt_ready(7)
    t.keys("C-c")
    t.wait_for("Press Ctrl-C again")
    t.keys("C-c")
    t.wait_for(f"{EXIT_MARK} rc=0")
    history = (isolated_home / "history" / "tiny-scripted.txt").read_text(encoding="utf-8")
    assert "hello there" in history and "/think show" in history


def test_history_persists_per_model(terminal, tiny_gguf: Path) -> None:
    first = terminal(tiny_gguf, "--temperature", "0")
    first.wait_for("Type /? for help")
    first.type("a message to remember")
    first.keys("Enter")
    first.prompt_ready(2)
    first.keys("C-d")
    first.wait_for(f"{EXIT_MARK} rc=0")
    second = terminal(tiny_gguf, "--temperature", "0")
    second.wait_for("Type /? for help")
    second.keys("Up")
    second.wait_last_line(">>> a message to remember")


def test_ctrl_c_stops_generation_and_the_chat_goes_on(terminal, model_dir: Path) -> None:
    t = terminal(loop_model(model_dir), "--temperature", "0", "--ctx", "32768", "-n", "1000000")
    t.wait_for("Type /? for help")
    t.type("hello")
    t.keys("Enter")
    screen = t.wait_for("Thinking… ")
    block = t.wait_for("│ ", count=5).splitlines()  # reasoning streams live, in its own block
    assert sum(line.startswith("│ ") and "the user says hello" in line for line in block) >= 4
    t.keys("C-c")
    screen = t.wait_for("[interrupted]", timeout=10)
    assert "· interrupted" in screen  # the collapse line says the thinking was cut short
    assert "context full" not in screen  # stopped long before the 32k context filled
    t.prompt_ready(2)
    # the session continues: a budget makes the looping model answer
    t.type("/think budget 10")
    t.keys("Enter")
    t.wait_for("Reasoning capped at 10 tokens")
    t.prompt_ready(3)
    t.type("hello again")
    t.keys("Enter")
    screen = t.wait_for("Thought for ", count=2)
    assert "10 tokens · budget reached" in screen
    t.wait_for(SCRIPT_ANSWER)
    t.prompt_ready(4)
    t.type("/stats")
    t.keys("Enter")
    t.wait_for("1 interrupted")


def test_save_then_load_round_trip(terminal, tiny_gguf: Path, tmp_path: Path) -> None:
    t = terminal(tiny_gguf, "--temperature", "0")
    t.wait_for("Type /? for help")
    t.type("first question")
    t.keys("Enter")
    t.prompt_ready(2)
    t.type("/save talk.json")
    t.keys("Enter")
    t.wait_for("Saved 2 messages to talk.json.")
    saved = json.loads((tmp_path / "talk.json").read_text(encoding="utf-8"))
    assert saved["messages"][0] == {"role": "user", "content": "first question"}
    assert saved["messages"][1]["content"] == SCRIPT_ANSWER
    t.prompt_ready(3)
    t.type("/clear")
    t.keys("Enter")
    t.wait_for("Conversation cleared.")
    t.prompt_ready(4)
    t.type("/load talk.json")
    t.keys("Enter")
    screen = t.wait_for("Loaded 2 messages from talk.json.")
    tail = screen[screen.index("Loaded 2 messages"):]
    assert ">>> first question" in tail and SCRIPT_ANSWER in tail  # the transcript is replayed
    t.prompt_ready(5)
    t.type("/stats")
    t.keys("Enter")
    t.prompt_ready(6)
    t.type("second question")
    t.keys("Enter")
    t.prompt_ready(7)
    t.type("/save again.json")
    t.keys("Enter")
    t.wait_for("Saved 4 messages to again.json.")
    again = json.loads((tmp_path / "again.json").read_text(encoding="utf-8"))
    assert again["messages"][:2] == saved["messages"]


def test_multiline_input(terminal, tiny_gguf: Path, tmp_path: Path) -> None:
    t = terminal(tiny_gguf, "--temperature", "0")
    t.wait_for("Type /? for help")
    t.type("line one")
    t.keys("Escape", "Enter")  # Alt-Enter: a new line, not send
    t.type("line two")
    t.keys("C-j")
    t.type("line three")
    t.keys("Enter")
    screen = t.wait_for("first token ")  # the status line after the reply (the banner also says "context")
    assert ">>> line one\n... line two\n... line three" in screen
    t.prompt_ready(2)
    t.type("/save m.json")
    t.keys("Enter")
    t.wait_for("Saved 2 messages")
    data = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert data["messages"][0]["content"] == "line one\nline two\nline three"


def test_one_shot_on_a_terminal_looks_like_the_chat_and_honours_no_color(terminal, tiny_gguf: Path) -> None:
    colour = terminal(tiny_gguf, "hello", "--temperature", "0")
    colour.wait_for(EXIT_MARK)
    screen = colour.screen(escapes=True)
    assert "Thought for" in colour.screen() and SCRIPT_ANSWER in colour.screen()

    plain = terminal(tiny_gguf, "hello", "--temperature", "0", env={"NO_COLOR": "1"})
    plain.wait_for(EXIT_MARK)
    text = plain.screen(escapes=True)
    assert "Thought for" in text and SCRIPT_ANSWER in text
    assert colours(text) == set() and colours(screen)  # NO_COLOR: styles like dim stay, colours go
