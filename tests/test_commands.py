"""Slash commands against a real session on the scripted tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from tuimodels import hybrid_model

from localseek.chat.commands import COMMANDS, R1_SYSTEM_ADVICE, completions, is_command, run_command
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions, Sampling
from localseek.chat.generation import Turn
from localseek.chat.session import ChatSession, ChatSettings


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path) -> Engine:
    return Engine.load(tiny_gguf, LoadOptions(n_ctx=512, n_threads=1))


@pytest.fixture
def session(engine: Engine) -> ChatSession:
    return ChatSession(engine, ChatSettings(sampling=Sampling(temperature=0.0, max_tokens=100)))


def chat(session: ChatSession, text: str) -> None:
    for _ in session.ask(text, Turn()):
        pass


def test_is_command() -> None:
    assert is_command("/help") and is_command("/bye") and is_command("/nonsense")
    assert not is_command("/usr/bin/env is a path") and not is_command("hello /help")


def test_unknown_command_is_an_error_reply(session: ChatSession) -> None:
    reply = run_command(session, "/frobnicate now")
    assert reply.kind == "error" and "/help" in reply.text


def test_help_lists_every_command_and_key(session: ChatSession) -> None:
    rows = dict(run_command(session, "/help").rows)
    for cmd in COMMANDS:
        assert any(key.startswith(cmd.name) for key in rows)
    assert any("Alt-Enter" in key for key in rows) and any("Ctrl-C" in key for key in rows)


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("/set temperature 0.3", "temperature", 0.3),
        ("/set top_p 0.5", "top_p", 0.5),
        ("/set top_k 7", "top_k", 7),
        ("/set min_p 0.1", "min_p", 0.1),
        ("/set repeat_penalty 1.1", "repeat_penalty", 1.1),
        ("/set frequency_penalty 0.5", "frequency_penalty", 0.5),
        ("/set presence-penalty -1", "presence_penalty", -1.0),
        ("/set max_tokens 12", "max_tokens", 12),
        ("/set max_tokens off", "max_tokens", None),
        ("/set seed 42", "seed", 42),
        ("/set seed off", "seed", None),
        ("/set temp 1", "temperature", 1.0),
    ],
)
def test_set_changes_sampling(session: ChatSession, line: str, field: str, value: object) -> None:
    reply = run_command(session, line)
    assert reply.kind == "info", reply.text
    assert getattr(session.settings.sampling, field) == value


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/set temperature hot", "must be a number"),
        ("/set top_p 2", "between 0 and 1"),
        ("/set presence_penalty 3", "between -2 and 2"),
        ("/set top_k -1", "at least 0"),
        ("/set max_tokens 0", "at least 1"),
        ("/set colour blue", "Unknown setting"),
        ("/set temperature", "Usage"),
    ],
)
def test_set_rejects_bad_values(session: ChatSession, line: str, message: str) -> None:
    before = session.settings.sampling
    reply = run_command(session, line)
    assert reply.kind == "error" and message in reply.text
    assert session.settings.sampling == before


def test_set_max_tokens_applies_to_the_next_reply(session: ChatSession) -> None:
    run_command(session, "/set max_tokens 3")
    chat(session, "hello")
    assert session.last is not None and session.last.stats.generated_tokens == 3
    assert session.last.stats.stop_reason == "length"


def test_think_commands_on_an_r1_model(session: ChatSession) -> None:
    assert "R1-style" in run_command(session, "/think").text
    off = run_command(session, "/think off")
    assert off.kind == "notice" and "always reasons" in off.text and not session.settings.show_thinking
    assert run_command(session, "/think on").kind == "info" and session.settings.show_thinking
    run_command(session, "/think hide")
    assert not session.settings.show_thinking
    assert "no reasoning to show yet" in run_command(session, "/think show").text
    chat(session, "hello")
    shown = run_command(session, "/think show")
    assert shown.reasoning is not None and shown.reasoning["reasoning"] == SCRIPT_REASONING
    assert session.settings.show_thinking
    assert run_command(session, "/think budget 5").kind == "info" and session.settings.think_budget == 5
    assert run_command(session, "/think budget off").kind == "info" and session.settings.think_budget is None
    assert run_command(session, "/think budget lots").kind == "error"
    assert run_command(session, "/think maybe").kind == "error"


def test_think_off_on_a_hybrid_model_switches_the_template(model_dir: Path) -> None:
    engine = Engine.load(hybrid_model(model_dir), LoadOptions(n_ctx=512, n_threads=1))
    session = ChatSession(engine, ChatSettings(sampling=Sampling(temperature=0.0)))
    reply = run_command(session, "/think off")
    assert "answers directly" in reply.text and session.settings.show_thinking
    chat(session, "hello")
    assert session.last is not None and session.last.reasoning == "" and session.last.answer == SCRIPT_ANSWER
    run_command(session, "/think on")
    chat(session, "hello")
    assert session.last.reasoning == SCRIPT_REASONING
    assert "hybrid" in dict(run_command(session, "/model").rows)["chat template"]


def test_system_prompt_with_r1_advice(session: ChatSession) -> None:
    reply = run_command(session, "/system Answer in French.")
    assert reply.kind == "notice" and R1_SYSTEM_ADVICE in reply.text
    assert session.conversation.system == "Answer in French."
    assert "Answer in French." in run_command(session, "/system").text
    chat(session, "hello")
    assert session.last_prompt is not None and "Answer in French." in session.last_prompt.text
    run_command(session, "/system clear")
    assert session.conversation.system is None


def test_clear_forgets_the_conversation_but_not_the_system_prompt(session: ChatSession) -> None:
    run_command(session, "/system be brief")
    chat(session, "hello")
    run_command(session, "/clear")
    assert session.conversation.turns == [] and session.conversation.system == "be brief"


def test_save_then_load_round_trip(session: ChatSession, tmp_path: Path) -> None:
    run_command(session, "/system be brief")
    chat(session, "hello")
    chat(session, "and again")
    target = tmp_path / "chat.json"
    reply = run_command(session, f"/save {target}")
    assert reply.kind == "info" and "4 messages" in reply.text
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["system"] == "be brief"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][1] == {"role": "assistant", "content": SCRIPT_ANSWER, "reasoning": SCRIPT_REASONING}
    saved = list(session.conversation.turns)
    run_command(session, "/clear")
    run_command(session, "/system clear")
    loaded = run_command(session, f"/load {target}")
    assert loaded.kind == "info" and loaded.transcript == saved
    assert session.conversation.turns == saved and session.conversation.system == "be brief"
    chat(session, "third")  # the loaded history is what the model sees next
    assert session.last_prompt is not None and "<｜User｜>and again" in session.last_prompt.text


def test_save_and_load_errors_are_replies(session: ChatSession, tmp_path: Path) -> None:
    assert run_command(session, "/save").kind == "error"
    assert "folder" in run_command(session, f"/save {tmp_path}").text
    assert "Could not write" in run_command(session, f"/save {tmp_path}/missing/dir/x.json").text
    assert "No conversation file" in run_command(session, f"/load {tmp_path}/nope.json").text
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert "not a localseek conversation" in run_command(session, f"/load {bad}").text
    assert not list(tmp_path.glob("*.tmp"))


def test_stats_and_model(session: ChatSession) -> None:
    assert dict(run_command(session, "/stats").rows)["last reply"] == "none yet"
    chat(session, "hello")
    rows = dict(run_command(session, "/stats").rows)
    assert "(8 reasoning)" in rows["last reply"] and "stop: eos" in rows["last reply"]
    assert rows["context"].startswith(f"{session.context_used} of {session.n_ctx}")
    assert rows["session"].startswith("1 reply,")
    model = dict(run_command(session, "/model").rows)
    assert model["chat template"] == "R1-style" and "temperature 0" in model["sampling"]


def test_exit_and_aliases(session: ChatSession) -> None:
    assert run_command(session, "/exit").exit and run_command(session, "/bye").exit
    assert run_command(session, "/quit").exit and not run_command(session, "/stats").exit


def test_completions() -> None:
    assert completions("/th") == ["/think "]
    assert set(completions("/s")) == {"/system ", "/set ", "/save ", "/stats", "/show "}
    assert completions("/think b") == ["budget"]
    assert "temperature" in completions("/set te") and completions("/set temperature 0") == []
    assert completions("hello") == [] and completions("/nope ") == []


# ───────────────────────────── the habits people bring from Ollama (issue 18) ─────────────────────────────

@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("/set parameter temperature 0.2", "temperature", 0.2),
        ("/set parameter num_predict 40", "max_tokens", 40),
        ("/set parameter top_k 5", "top_k", 5),
        ("/set parameter seed 42", "seed", 42),
    ],
)
def test_ollama_set_parameter(session: ChatSession, line: str, field: str, value: object) -> None:
    reply = run_command(session, line)
    assert reply.kind == "info", reply.text
    assert getattr(session.settings.sampling, field) == value


def test_ollama_set_system_and_think(session: ChatSession) -> None:
    run_command(session, "/set system answer in one word")
    assert session.conversation.system == "answer in one word"
    assert "hidden" in run_command(session, "/set nothink").text and not session.settings.think
    run_command(session, "/set think")
    assert session.settings.think and session.settings.show_thinking


def test_settings_fixed_at_load_say_how_to_change_them(session: ChatSession) -> None:
    reply = run_command(session, "/set parameter num_ctx 8192")
    assert reply.kind == "error" and "--ctx" in reply.text


def test_show_like_ollama(session: ChatSession) -> None:
    assert dict(run_command(session, "/show").rows) == dict(run_command(session, "/model").rows)
    run_command(session, "/set parameter temperature 0.2")
    params = dict(run_command(session, "/show parameters").rows)
    assert params["temperature"] == "0.2" and params["max_tokens"] == "100"
    assert "<｜Assistant｜>" in run_command(session, "/show template").text
    assert "No system prompt" in run_command(session, "/show system").text
    assert run_command(session, "/show license").kind == "info"
    assert run_command(session, "/show nonsense").kind == "error"
    assert "/show" in dict(run_command(session, "/help").rows).__repr__()


def test_stats_after_load_count_the_loaded_conversation(session: ChatSession, tmp_path: Path) -> None:
    chat(session, "hello")
    chat(session, "and again")
    target = tmp_path / "chat.json"
    run_command(session, f"/save {target}")
    fresh = ChatSession(session.engine, ChatSettings(sampling=Sampling(temperature=0.0, max_tokens=100)))
    run_command(fresh, f"/load {target}")
    rows = dict(run_command(fresh, "/stats").rows)
    used = int(rows["context"].split()[0])
    assert used > 20, rows  # four messages' worth of tokens, not 0
    assert "loaded conversation" in rows["context"]
    run_command(fresh, "/clear")
    assert dict(run_command(fresh, "/stats").rows)["context"].startswith("0 of")
