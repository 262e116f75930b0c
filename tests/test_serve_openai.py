"""`localseek serve` through the real `openai` client: chat (streaming and not) with the reasoning apart, the same
text as `localseek run --json`, usage with reasoning tokens, thinking switches and budgets, stop strings, JSON schema
output, a tool-call round trip, raw completions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from serve_helpers import Server, server_env, tool_caller_model, tool_model
from tuimodels import hybrid_model, loop_model

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, tiny_random_gguf: Path, model_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve-openai")
    srv = Server([str(tiny_gguf), str(tiny_random_gguf), str(loop_model(model_dir)), str(hybrid_model(model_dir)),
                  str(tool_model(model_dir)), str(tool_caller_model(model_dir)), "--log-prompts", "--ctx", "2048"],
                 work, env=server_env(work))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _reasoning(delta: object) -> str:
    extra = getattr(delta, "model_extra", None) or {}
    return extra.get("reasoning_content") or ""


def test_models_lists_what_was_named(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"tiny-scripted", "tiny-random", "tiny-loop", "tiny-hybrid", "tiny-tools"} <= ids


def test_chat_keeps_the_reasoning_apart(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny-scripted", messages=HELLO, temperature=0)
    message = reply.choices[0].message
    assert message.content == SCRIPT_ANSWER
    assert message.model_extra["reasoning_content"] == SCRIPT_REASONING
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage.completion_tokens == 18 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens_details.reasoning_tokens == 8


def test_stream_equals_run_json_for_the_same_seed(client: openai.OpenAI, tiny_random_gguf: Path,
                                                  tmp_path: Path) -> None:
    settings = {"temperature": 0.9, "seed": 1234, "max_tokens": 40}
    run = subprocess.run(
        [sys.executable, "-m", "localseek", "run", str(tiny_random_gguf), "hello", "--json", "--threads", "1",
         "--ctx", "2048", "--temperature", "0.9", "--seed", "1234", "--max-tokens", "40"],
        capture_output=True, text=True, timeout=120, env=server_env(tmp_path), check=True,
    )
    expected = json.loads(run.stdout)
    stream = client.chat.completions.create(model="tiny-random", messages=HELLO, stream=True,
                                            stream_options={"include_usage": True}, **settings)
    reasoning, content, usage, finish = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning.append(_reasoning(choice.delta))
            content.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(content) == expected["answer"]
    assert "".join(reasoning) == expected["reasoning"]
    assert usage is not None and usage.completion_tokens == expected["stats"]["generated_tokens"]
    assert finish == ("length" if expected["stats"]["stop_reason"] == "length" else "stop")


def test_penalties_change_the_reply_as_in_run(client: openai.OpenAI, tiny_random_gguf: Path, tmp_path: Path) -> None:
    def served(**penalties: float) -> str:
        reply = client.chat.completions.create(model="tiny-random", messages=HELLO, temperature=0, max_tokens=32,
                                               **penalties)
        message = reply.choices[0].message
        return (message.model_extra.get("reasoning_content") or "") + (message.content or "")

    run = subprocess.run(
        [sys.executable, "-m", "localseek", "run", str(tiny_random_gguf), "hello", "--json", "--threads", "1",
         "--ctx", "2048", "--temperature", "0", "--max-tokens", "32", "--frequency-penalty", "1.5",
         "--presence-penalty", "0.5"],
        capture_output=True, text=True, timeout=120, env=server_env(tmp_path), check=False,
    )
    assert run.returncode in (0, 3), run.stderr  # 3: no answer after the reasoning, which is fine here
    expected = json.loads(run.stdout)
    penalized = served(frequency_penalty=1.5, presence_penalty=0.5)
    assert penalized == expected["reasoning"] + expected["answer"]
    assert penalized != served()


def test_stream_of_the_scripted_model(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="tiny-scripted", messages=HELLO, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(_reasoning(c.choices[0].delta) for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == (SCRIPT_REASONING, SCRIPT_ANSWER)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens_details.reasoning_tokens == 8
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_thinking_switch_on_a_hybrid_template(client: openai.OpenAI) -> None:
    on = client.chat.completions.create(model="tiny-hybrid", messages=HELLO, temperature=0)
    assert on.choices[0].message.model_extra["reasoning_content"]  # V3.1 templates reason by default here, as `run`
    off = client.chat.completions.create(model="tiny-hybrid", messages=HELLO, temperature=0,
                                         extra_body={"chat_template_kwargs": {"thinking": False}})
    assert off.choices[0].message.model_extra.get("reasoning_content") is None
    assert off.usage.completion_tokens_details.reasoning_tokens == 0
    effort = client.chat.completions.create(model="tiny-hybrid", messages=HELLO, temperature=0,
                                            reasoning_effort="none")
    assert effort.usage.completion_tokens_details.reasoning_tokens == 0


def test_reasoning_budget(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny-loop", messages=HELLO, temperature=0,
                                           extra_body={"max_reasoning_tokens": 12})
    assert reply.choices[0].message.content == SCRIPT_ANSWER
    assert reply.usage.completion_tokens_details.reasoning_tokens == 12
    capped = client.chat.completions.create(model="tiny-loop", messages=HELLO, temperature=0, max_tokens=20)
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 20


def test_stop_string_cuts_the_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny-scripted", messages=HELLO, temperature=0, stop=[" can"])
    assert reply.choices[0].message.content == "Hello! How"
    assert reply.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="tiny-scripted", messages=HELLO, temperature=0, stop="I h",
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Hello! How can "


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}, "sunny": {"type": "boolean"},
                   "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
    "required": ["city", "sunny"],
    "additionalProperties": False,
}


def test_json_schema_output_parses_and_validates(client: openai.OpenAI) -> None:
    for model in ("tiny-scripted", "tiny-random"):
        reply = client.chat.completions.create(
            model=model, messages=HELLO, temperature=0, max_tokens=200,
            response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}},
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)
    scripted = client.chat.completions.create(
        model="tiny-scripted", messages=HELLO, temperature=0, max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}},
    )
    assert scripted.choices[0].message.model_extra["reasoning_content"] == SCRIPT_REASONING  # reasoning stays free


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                   "required": ["city"], "additionalProperties": False},
}}]


def test_tool_call_round_trip(client: openai.OpenAI, server: Server) -> None:
    first = client.chat.completions.create(model="tiny-tools", messages=HELLO, tools=TOOLS, tool_choice="required",
                                           temperature=0, max_tokens=200)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, TOOLS[0]["function"]["parameters"])
    assert choice.message.model_extra["reasoning_content"] == SCRIPT_REASONING
    result = f"It is sunny in {args['city']}."
    second = client.chat.completions.create(model="tiny-tools", temperature=0, tools=TOOLS, messages=[
        *HELLO, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ])
    assert second.choices[0].message.content == SCRIPT_ANSWER
    assert second.choices[0].finish_reason == "stop"
    # The template got the call and its result (the server was started with --log-prompts).
    logged = server.log()
    assert json.dumps(f"get_weather\n```json\n{call.function.arguments}", ensure_ascii=False)[1:-1] in logged
    assert f"<｜tool▁output▁begin｜>{result}" in logged
    streamed = list(client.chat.completions.create(model="tiny-tools", messages=HELLO, tools=TOOLS, stream=True,
                                                   tool_choice={"type": "function",
                                                                "function": {"name": "get_weather"}},
                                                   temperature=0, max_tokens=200))
    calls = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].index == 0
    assert not "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)


def test_a_streamed_tool_call_is_sent_once_with_its_id(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="tiny-toolcaller", messages=HELLO, tools=TOOLS, stream=True,
                                                 temperature=0))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    whole = client.chat.completions.create(model="tiny-toolcaller", messages=HELLO, tools=TOOLS, temperature=0)
    assert [c.function.name for c in whole.choices[0].message.tool_calls] == ["get_weather"]


def test_tools_on_a_template_without_them_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        client.chat.completions.create(model="tiny-scripted", messages=HELLO, tools=TOOLS)


def test_raw_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="tiny-scripted", prompt="<｜User｜>hi<｜Assistant｜>", temperature=0,
                                      max_tokens=50)
    assert reply.choices[0].text == f"<think>\n{SCRIPT_REASONING}</think>\n\n{SCRIPT_ANSWER}"
    short = client.completions.create(model="tiny-scripted", prompt="<｜User｜>hi<｜Assistant｜>", temperature=0)
    assert short.usage.completion_tokens == 16 and short.choices[0].finish_reason == "length"  # OpenAI's default
    streamed = client.completions.create(model="tiny-scripted", prompt="<｜User｜>hi<｜Assistant｜>", temperature=0,
                                         max_tokens=50, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text
