"""Hybrid thinking on DeepSeek-V3.2 and V4 templates: `/think on|off` and `run --think/--no-think` switch the
template's `thinking` flag, and `show` says whether a model is hybrid, reasoning-only or plain.

The templates are the real ones: V4's default (quantize/templates/, the one llama.cpp's converter embeds) and
V3.2's from llama.cpp (tests/templates/). The model under them is tests/factory.py's scripted tiny model, whose
greedy reply is `<think>SCRIPT_REASONING</think>SCRIPT_ANSWER` from wherever the prompt leaves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from factory import R1_TEMPLATE, SCRIPT_ANSWER, SCRIPT_REASONING, TinyConfig, write_qwen2_gguf
from tuimodels import V31_TEMPLATE

from localseek.chat.commands import run_command
from localseek.chat.conversation import thinking_mode
from localseek.chat.generation import Turn
from localseek.chat.reasoning import Reasoning
from localseek.chat.session import ChatSession, ChatSettings
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions, Sampling

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = {
    "v4": (ROOT / "quantize" / "templates" / "deepseek-ai-DeepSeek-V4.jinja").read_text(encoding="utf-8"),
    "v4-0731": (ROOT / "quantize" / "templates" / "deepseek-ai-DeepSeek-V4-Flash-0731.jinja").read_text("utf-8"),
    "v3.2": (Path(__file__).parent / "templates" / "deepseek-ai-DeepSeek-V3.2.jinja").read_text(encoding="utf-8"),
}
# where the generation prompt leaves the reply: V4 closes the block with `</think>` alone, V3.2 with an empty one
THINK_OFF_END = {"v4": "<｜Assistant｜></think>", "v3.2": "<｜Assistant｜><think></think>"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("thinking")
    return {name: write_qwen2_gguf(d / f"tiny-{name}.gguf", TinyConfig(template=TEMPLATES[name]))
            for name in ("v4", "v3.2")}


@pytest.mark.parametrize(("template", "catalog", "mode"), [
    (TEMPLATES["v4"], None, ("hybrid", "template")),
    (TEMPLATES["v4-0731"], None, ("hybrid", "template")),
    (TEMPLATES["v3.2"], True, ("hybrid", "template")),
    (V31_TEMPLATE, True, ("hybrid", "template")),
    (R1_TEMPLATE, None, ("reasoning", "template")),
    (R1_TEMPLATE, False, ("reasoning", "template")),  # the template knows better than a catalog entry
    ("{% for m in messages %}{{ m['content'] }}{% endfor %}", None, ("plain", "template")),
    ("{% for m in messages %}{{ m['content'] }}{% endfor %}", True, ("reasoning", "catalog")),
    (None, True, ("reasoning", "catalog")),
    (None, False, ("plain", "catalog")),
    (None, None, ("unknown", "")),
])
def test_thinking_mode(template: str | None, catalog: bool | None, mode: tuple[str, str]) -> None:
    assert thinking_mode(template, catalog) == mode


def _ask(session: ChatSession, text: str) -> tuple[str, str, list[object]]:
    events = list(session.ask(text, Turn()))
    done = events[-1]
    return done.reasoning, done.answer, events  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["v4", "v3.2"])
def test_think_off_and_on_switch_the_template_flag(tiny: dict[str, Path], name: str) -> None:
    engine = Engine.load(tiny[name], LoadOptions(n_ctx=1024, n_threads=1))
    try:
        session = ChatSession(engine, ChatSettings(sampling=Sampling(temperature=0.0, max_tokens=200)))
        assert session.hybrid and session.template_vars() == {"thinking": True, "enable_thinking": True}
        reasoning, answer, _ = _ask(session, "hello")
        assert (reasoning, answer) == (SCRIPT_REASONING, SCRIPT_ANSWER)
        assert session.last_prompt is not None and session.last_prompt.text.endswith("<｜Assistant｜><think>")
        assert session.last_prompt.opened_think  # the parser starts inside the block the prompt opened

        reply = run_command(session, "/think off")
        assert "answers directly" in reply.text and not session.settings.think
        reasoning, answer, events = _ask(session, "hello again")
        assert session.last_prompt.text.endswith(THINK_OFF_END[name])
        assert (reasoning, answer) == ("", SCRIPT_ANSWER) and not any(isinstance(e, Reasoning) for e in events)
        # the earlier reply went back without its reasoning, as both templates expect
        assert SCRIPT_REASONING not in session.last_prompt.text and SCRIPT_ANSWER in session.last_prompt.text

        run_command(session, "/think on")
        reasoning, answer, _ = _ask(session, "and again")
        assert (reasoning, answer) == (SCRIPT_REASONING, SCRIPT_ANSWER)
        assert "hybrid" in dict(run_command(session, "/model").rows)["chat template"]
    finally:
        engine.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_run_think_flags_on_the_v4_template(tiny: dict[str, Path]) -> None:
    path = str(tiny["v4"])
    on = _cli("run", path, "hello", "--temperature", "0", "--threads", "1", "--json")
    off = _cli("run", path, "hello", "--temperature", "0", "--threads", "1", "--json", "--no-think")
    assert on.returncode == off.returncode == 0, on.stderr + off.stderr
    a, b = json.loads(on.stdout), json.loads(off.stdout)
    assert (a["reasoning"], a["answer"]) == (SCRIPT_REASONING, SCRIPT_ANSWER)
    assert (b["reasoning"], b["answer"]) == ("", SCRIPT_ANSWER)


@pytest.mark.parametrize(("name", "row"), [("v4", "hybrid"), ("v3.2", "hybrid")])
def test_show_says_hybrid(tiny: dict[str, Path], name: str, row: str) -> None:
    shown = _cli("show", str(tiny[name]), "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["thinking"], data["thinking_from"]) == (row, "template")
    text = _cli("show", str(tiny[name]))
    assert text.returncode == 0 and "thinking     hybrid: reasons when asked" in text.stdout


def test_show_says_reasoning_only_for_r1_style(tiny_gguf: Path) -> None:
    data = json.loads(_cli("show", str(tiny_gguf), "--json").stdout)
    assert (data["thinking"], data["thinking_from"]) == ("reasoning", "template")
    assert "reasoning-only" in _cli("show", str(tiny_gguf)).stdout
