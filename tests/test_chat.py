from __future__ import annotations

import json
from pathlib import Path

import pytest
from factory import BOS, R1_TEMPLATE, R1_TEMPLATE_THINK

from localseek.chat.conversation import ChatTemplate, Conversation, strip_reasoning
from localseek.errors import UsageError


def test_r1_template_renders_and_strips_past_reasoning() -> None:
    conv = Conversation()
    conv.add_user("hi")
    conv.add_assistant("<think>secret plan</think>\n\nHello!", reasoning="")
    conv.add_user("again")
    out = ChatTemplate(R1_TEMPLATE, bos_token=BOS).render(conv.for_model())
    assert out == f"{BOS}<｜User｜>hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜><｜User｜>again<｜Assistant｜>"
    assert "secret" not in out


def test_think_template_opens_block_in_prompt() -> None:
    out = ChatTemplate(R1_TEMPLATE_THINK, bos_token=BOS).render([{"role": "user", "content": "x"}])
    assert out.endswith("<｜Assistant｜><think>\n")


def test_template_cannot_escape_sandbox() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(UsageError):
        ChatTemplate(evil).render([])


def test_template_raise_exception_becomes_usage_error() -> None:
    with pytest.raises(UsageError, match="only user"):
        ChatTemplate("{{ raise_exception('only user') }}").render([])


def test_strip_reasoning() -> None:
    assert strip_reasoning("<think>a</think>\n\nb") == "b"
    assert strip_reasoning("plain") == "plain"


def test_system_prompt_goes_first(tmp_path: Path) -> None:
    conv = Conversation(system="Be brief.")
    conv.add_user("q")
    assert conv.for_model()[0] == {"role": "system", "content": "Be brief."}


def test_save_load_round_trip(tmp_path: Path) -> None:
    conv = Conversation(system="s")
    conv.add_user("q")
    conv.add_assistant("a", reasoning="r", interrupted=True)
    path = tmp_path / "c.json"
    conv.save(path)
    loaded = Conversation.load(path)
    assert loaded.system == "s" and loaded.turns == conv.turns
    assert json.loads(path.read_text())["messages"][1]["reasoning"] == "r"


def test_load_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not a localseek conversation"):
        Conversation.load(bad)
    with pytest.raises(UsageError, match="No conversation file"):
        Conversation.load(tmp_path / "missing.json")
