"""Every sampling setting changes what llama.cpp's sampler does: each `run` flag and each `/set` knob, on the tiny
random model, against references that a dropped or misrouted setting would not match.

A hot draw (temperature 1.5, fixed seed, the truncations off) and the greedy reply are the references: top-k 1,
top-p 0.001 and min-p 1 each leave one candidate, so the hot draw becomes the greedy reply; temperature and seed
change the draw; the three penalties change the greedy reply (the random model repeats itself); max_tokens cuts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localseek.chat.commands import run_command
from localseek.chat.generation import Turn
from localseek.chat.reasoning import Answer, Reasoning
from localseek.chat.session import ChatSession, ChatSettings
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions, Sampling

N = 32
HOT = {"temperature": 1.5, "seed": 7, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "max_tokens": N}
GREEDY = {"temperature": 0.0, "max_tokens": N}

# (knob, value, base settings, what the reply must then be)
CASES = [
    ("top_k", 1, HOT, "greedy"),
    ("top_p", 0.001, HOT, "greedy"),
    ("min_p", 1.0, HOT, "greedy"),
    ("temperature", 0.0, HOT, "greedy"),
    ("temperature", 0.7, HOT, "not hot"),
    ("seed", 8, HOT, "not hot"),
    ("repeat_penalty", 3.0, GREEDY, "not greedy"),
    ("frequency_penalty", 2.0, GREEDY, "not greedy"),
    ("presence_penalty", 2.0, GREEDY, "not greedy"),
    ("max_tokens", 5, GREEDY, "shorter greedy"),
]
IDS = [f"{knob}={value}" for knob, value, _, _ in CASES]


def check(expect: str, text: str, greedy: str, hot: str) -> None:
    assert greedy != hot  # the references differ, or nothing below could tell
    if expect == "greedy":
        assert text == greedy
    elif expect == "not hot":
        assert text != hot
    elif expect == "not greedy":
        assert text != greedy
    else:
        assert text != greedy and greedy.startswith(text)


# -- `localseek run` flags -----------------------------------------------------------------------------------------

def flags(settings: dict[str, Any]) -> list[str]:
    names = {"max_tokens": "--max-tokens"}
    out: list[str] = []
    for knob, value in settings.items():
        out += [names.get(knob, "--" + knob.replace("_", "-")), str(value)]
    return out


def run(model: Path, settings: dict[str, Any]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "localseek", "run", str(model), "hello", "--json", "--threads", "1", "--ctx", "512",
         *flags(settings)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False,
    )
    assert result.returncode in (0, 3), result.stderr  # 3: the reply ended inside its reasoning (no answer)
    doc = json.loads(result.stdout)
    return doc["reasoning"] + "\x00" + doc["answer"]


@pytest.fixture(scope="module")
def cli_references(tiny_random_gguf: Path) -> tuple[str, str]:
    return run(tiny_random_gguf, GREEDY), run(tiny_random_gguf, HOT)


@pytest.mark.parametrize(("knob", "value", "base", "expect"), CASES, ids=IDS)
def test_each_run_flag_reaches_the_sampler(tiny_random_gguf: Path, cli_references: tuple[str, str], knob: str,
                                           value: object, base: dict[str, Any], expect: str) -> None:
    greedy, hot = cli_references
    check(expect, run(tiny_random_gguf, {**base, knob: value}), greedy, hot)


# -- `/set` in the chat ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tiny_random_gguf: Path) -> Engine:
    return Engine.load(tiny_random_gguf, LoadOptions(n_ctx=512, n_threads=1))


def reply(session: ChatSession) -> str:
    parts = {"reasoning": "", "answer": ""}
    for event in session.ask("hello", Turn()):
        if isinstance(event, Reasoning):
            parts["reasoning"] += event.text
        elif isinstance(event, Answer):
            parts["answer"] += event.text
    return parts["reasoning"] + "\x00" + parts["answer"]


def session(engine: Engine, settings: dict[str, Any]) -> ChatSession:
    return ChatSession(engine, ChatSettings(sampling=Sampling(**settings)))


@pytest.fixture(scope="module")
def chat_references(engine: Engine) -> tuple[str, str]:
    return reply(session(engine, GREEDY)), reply(session(engine, HOT))


@pytest.mark.parametrize(("knob", "value", "base", "expect"), CASES, ids=IDS)
def test_each_set_knob_reaches_the_sampler(engine: Engine, chat_references: tuple[str, str], knob: str,
                                           value: object, base: dict[str, Any], expect: str) -> None:
    greedy, hot = chat_references
    chat = session(engine, base)
    answer = run_command(chat, f"/set {knob} {value}")
    assert answer.kind == "info", answer.text
    check(expect, reply(chat), greedy, hot)
