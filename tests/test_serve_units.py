"""The server's pure parts: DeepSeek tool-call parsing (both forms), the delta shaper (stop strings and markers split
over pieces, the reasoning's and answer's edges), reasoning fields, request field checks."""

from __future__ import annotations

import json

import pytest

from localseek.runtime.options import Stats
from localseek.serve import params
from localseek.serve.errors import HTTPError
from localseek.serve.openai_api import Shape, parse_chat
from localseek.serve.tools import call_grammar, parse_tool_calls, schema_grammar
from localseek.serve.turn import Delta, Finish, _Shaper

R1_CALLS = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```"
    "<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜>"
    "<｜tool▁calls▁end｜>"
)
V31_CALLS = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\":\"Oslo\"}<｜tool▁call▁end｜>"
    "<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)


def test_tool_calls_in_both_of_deepseeks_forms() -> None:
    for text, city in ((R1_CALLS, "Paris"), (V31_CALLS, "Oslo")):
        calls = parse_tool_calls(text)
        assert [c.name for c in calls] == ["get_weather", "get_time"]
        assert json.loads(calls[0].arguments) == {"city": city} and json.loads(calls[1].arguments) == {}
        assert calls[0].id != calls[1].id and calls[0].id.startswith("call_")
        assert calls[0].ollama() == {"function": {"name": "get_weather", "arguments": {"city": city}}}


def test_broken_tool_calls_are_not_invented() -> None:
    assert parse_tool_calls("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather") == []
    bad_args = parse_tool_calls("<｜tool▁call▁begin｜>f<｜tool▁sep｜>{not json<｜tool▁call▁end｜>")
    assert bad_args[0].arguments == "{not json" and bad_args[0].ollama()["function"]["arguments"] == {}


def _shape(pieces: list[tuple[str, str]], stop: tuple[str, ...] = (), tools: bool = False) -> tuple[_Shaper, str]:
    shaper = _Shaper(stop, tools)
    out: list[Delta] = []
    for kind, text in pieces:
        out += shaper.reasoning_piece(text) if kind == "r" else shaper.answer_piece(text)
        if shaper.stopped:
            break
    out += shaper.flush()
    return shaper, "".join(d.text for d in out if isinstance(d, Delta) and d.kind == "content")


def test_shaper_edges_and_stop_strings_split_over_pieces() -> None:
    shaper, content = _shape([("r", "think"), ("r", "ing\n"), ("r", "\n"), ("a", "\n\nHel"), ("a", "lo EN"),
                              ("a", "D more")], stop=("END",))
    assert "".join(shaper.reasoning) == "thinking"  # trailing newlines of the reasoning dropped
    assert content == "Hello " and shaper.stopped
    _, content = _shape([("a", "no stop E"), ("a", "N here")], stop=("END",))
    assert content == "no stop EN here"  # held back while it could be a stop string, released after


def test_shaper_sends_text_before_a_tool_call_and_keeps_the_call() -> None:
    shaper, content = _shape([("a", "Let me check."), ("a", "<｜tool▁calls▁be"), ("a", "gin｜><｜tool▁call▁begin｜>x")],
                             tools=True)
    assert content == "Let me check." and shaper.in_calls
    assert shaper.calls.text.startswith("<｜tool▁calls▁begin｜>")


def test_each_tool_call_is_sent_when_its_end_marker_arrives() -> None:
    from localseek.serve.turn import CallDelta

    shaper = _Shaper((), True)
    text = "Checking." + V31_CALLS
    first_end = text.index("<｜tool▁call▁end｜>") + len("<｜tool▁call▁end｜>")
    sent: list[tuple[int, list[CallDelta]]] = []
    for at in range(0, len(text), 7):  # 7-character pieces: markers and arguments split anywhere
        piece = text[at:at + 7]
        calls = [d for d in shaper.answer_piece(piece) if isinstance(d, CallDelta)]
        if calls:
            sent.append((at + len(piece), calls))
    assert [[(d.index, d.call.name) for d in calls] for _, calls in sent] == [[(0, "get_weather")], [(1, "get_time")]]
    assert first_end <= sent[0][0] < first_end + 7  # the first call went out with the piece that closed it
    assert [c.id for c in shaper.calls.calls] == [d.call.id for _, calls in sent for d in calls]  # same ids at the end


def test_reasoning_fields() -> None:
    finish = Finish("stop", Stats(), 3, "why", "answer", [])
    assert Shape("reasoning_content").message(finish)["reasoning_content"] == "why"
    both = Shape("both").message(finish)
    assert both["reasoning"] == both["reasoning_content"] == "why"
    assert Shape("inline").message(finish)["content"] == "<think>\nwhy\n</think>\n\nanswer"
    inline = Shape("inline")
    deltas = [inline.delta(Delta("reasoning", "a")), inline.delta(Delta("reasoning", "b")),
              inline.delta(Delta("content", "c"))]
    assert "".join(d["content"] for d in deltas) == "<think>\nab\n</think>\n\nc"


def test_request_fields() -> None:
    parsed = parse_chat({"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "x"}]},
                                                   {"role": "user", "content": "hi"}],
                         "thinking": {"type": "enabled", "budget_tokens": 64}, "max_completion_tokens": 9,
                         "chat_template_kwargs": {"thinking": False}, "seed": 3, "stop": "\n\n"})
    assert parsed.messages is not None and parsed.messages[0] == {"role": "system", "content": "x"}
    assert parsed.think is False and parsed.think_budget == 64 and parsed.template_vars == {"thinking": False}
    assert parsed.sampling == {"seed": 3, "max_tokens": 9} and parsed.stop == ("\n\n",)
    with pytest.raises(HTTPError, match="max_tokens"):
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1})
    assert params.duration("5m", "k") == 300 and params.duration(-1, "k") is None


def test_penalties_reach_the_sampling_settings() -> None:
    from localseek.serve.ollama_api import _parse

    chat = parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "frequency_penalty": 0.5,
                       "presence_penalty": -1})
    assert chat.sampling == {"frequency_penalty": 0.5, "presence_penalty": -1.0}
    ollama, _ = _parse({"model": "m", "prompt": "x", "options": {"frequency_penalty": 1, "presence_penalty": 0.25,
                                                                  "repeat_penalty": 1.1}}, chat=False)
    assert ollama.sampling == {"frequency_penalty": 1.0, "presence_penalty": 0.25, "repeat_penalty": 1.1}
    with pytest.raises(HTTPError, match="presence_penalty"):
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 3})


def test_grammars() -> None:
    assert "root ::=" in schema_grammar({"type": "object"}, "p").gbnf
    with pytest.raises(HTTPError):
        schema_grammar({"type": "string", "pattern": "unanchored"}, "p")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert "function<｜tool▁sep｜>f" in call_grammar(tools, None, "```json").gbnf  # R1 form
    assert "f<｜tool▁sep｜>" in call_grammar(tools, "f", "no fence").gbnf  # V3.1 form
    with pytest.raises(HTTPError, match="not among the tools"):
        call_grammar(tools, "g", "")
