"""Issue 18 in a real terminal (tmux): the chat banner names the model, Ollama's `/set parameter` and `/show`, and
`/stats` after `/load` counts the loaded conversation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_tui_tmux import EXIT_MARK, terminal  # noqa: F401 - `terminal` is a fixture

pytestmark = pytest.mark.tmux


def _installed_nano() -> str:
    """localseek-nano converted and registered (in this test's LOCALSEEK_HOME); its cache file's path."""
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "localseek", "run", "nano", "What is 1 + 1?"], env=env, check=True,
                   capture_output=True, timeout=180)
    listed = subprocess.run([sys.executable, "-m", "localseek", "list", "--json"], env=env, check=True,
                            capture_output=True, text=True, timeout=60)
    return json.loads(listed.stdout)[0]["path"]


def test_banner_show_set_parameter_and_stats_after_load(terminal, tmp_path: Path) -> None:  # noqa: F811
    path = _installed_nano()
    t = terminal(Path(path), "--temperature", "0")  # the cache file's path, as the user ran it
    screen = t.wait_for("/exit to leave")
    assert "Chatting with localseek-nano:Q8_0 (context 1024 tokens)" in screen
    assert Path(path).name not in screen

    t.type("/set parameter temperature 0.2")
    t.keys("Enter")
    t.wait_for("temperature = 0.2")
    t.prompt_ready(2)
    t.type("/show parameters")
    t.keys("Enter")
    screen = t.wait_for("repeat_penalty")
    assert re.search(r"^temperature\s+0\.2\s*$", screen, re.MULTILINE), screen

    t.prompt_ready(3)
    t.type("What is 2 + 3?")
    t.keys("Enter")
    t.wait_for("first token ")
    saved = tmp_path / "chat.json"
    t.prompt_ready(4)
    t.type(f"/save {saved}")
    t.keys("Enter")
    t.wait_for("Saved 2 messages")
    t.prompt_ready(5)
    t.type("/clear")
    t.keys("Enter")
    t.wait_for("Conversation cleared.")
    t.prompt_ready(6)
    t.type(f"/load {saved}")
    t.keys("Enter")
    t.wait_for("Loaded 2 messages")
    t.prompt_ready(7)
    t.type("/stats")
    t.keys("Enter")
    screen = t.wait_for("loaded conversation")
    used = re.search(r"^context\s+(\d+) of 1024 tokens", screen, re.MULTILINE)
    assert used and int(used[1]) > 10, screen

    t.prompt_ready(8)
    t.type("/show")
    t.keys("Enter")
    screen = t.wait_for("chat template")
    assert re.search(r"^model\s+localseek-nano:Q8_0\s*$", screen, re.MULTILINE), screen
    t.prompt_ready(9)
    t.keys("C-d")
    t.wait_for(f"{EXIT_MARK} rc=0")
