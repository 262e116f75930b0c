"""`localseek serve` through the real `ollama` client: /api/chat with `think` (streaming and not), /api/generate,
/api/tags, /api/show, /api/ps, /api/version, and Ollama's error body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from serve_helpers import Server, server_env, tool_caller_model
from tuimodels import hybrid_model

HELLO = [{"role": "user", "content": "hello"}]
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve-ollama")
    srv = Server([str(tiny_gguf), str(hybrid_model(model_dir)), str(tool_caller_model(model_dir)), "--ctx", "1024"],
                 work, env=server_env(work))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=60)


def test_chat_with_think_keeps_thinking_apart(client: ollama.Client) -> None:
    reply = client.chat(model="tiny-scripted", messages=HELLO, think=True, options=GREEDY)
    assert reply.message.content == SCRIPT_ANSWER
    assert reply.message.thinking == SCRIPT_REASONING
    assert reply.done and reply.done_reason == "stop" and reply.eval_count == 18 and reply.prompt_eval_count > 0


def test_chat_stream(client: ollama.Client) -> None:
    parts = list(client.chat(model="tiny-scripted", messages=HELLO, think=True, stream=True, options=GREEDY))
    assert "".join(p.message.thinking or "" for p in parts) == SCRIPT_REASONING
    assert "".join(p.message.content or "" for p in parts) == SCRIPT_ANSWER
    assert parts[-1].done and not any(p.done for p in parts[:-1])


def test_think_false_on_a_hybrid_model(client: ollama.Client) -> None:
    on = client.chat(model="tiny-hybrid", messages=HELLO, think=True, options=GREEDY)
    off = client.chat(model="tiny-hybrid", messages=HELLO, think=False, options=GREEDY)
    assert on.message.thinking and not off.message.thinking
    assert off.message.content


def test_generate(client: ollama.Client) -> None:
    reply = client.generate(model="tiny-scripted", prompt="hello", think=True, options=GREEDY)
    assert (reply.response, reply.thinking) == (SCRIPT_ANSWER, SCRIPT_REASONING)
    raw = client.generate(model="tiny-scripted", prompt="<｜User｜>hi<｜Assistant｜>", raw=True,
                          options={**GREEDY, "num_predict": 3})
    assert raw.response == "<think>\nHmm" and raw.done_reason == "length"


def test_tags_show_ps_version(client: ollama.Client, server: Server) -> None:
    names = {m.model for m in client.list().models}
    assert {"tiny-scripted", "tiny-hybrid"} <= names
    shown = client.show("tiny-hybrid")
    assert "thinking" in shown.capabilities and shown.details.family == "qwen2" and "thinking" in shown.template
    client.chat(model="tiny-scripted", messages=HELLO, options=GREEDY)
    running = {m.model for m in client.ps().models}
    assert "tiny-scripted" in running
    assert httpx.get(server.url + "/api/version").json()["version"]


def test_ollama_errors(client: ollama.Client, server: Server) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=HELLO)
    assert err.value.status_code == 404 and "no-such-model" in err.value.error
    bad = httpx.post(server.url + "/api/chat", content=b"{nope")
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)


WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_tool_calls_streamed_once_and_whole(client: ollama.Client) -> None:
    whole = client.chat(model="tiny-toolcaller", messages=HELLO, tools=WEATHER, options=GREEDY)
    assert [(c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls] == \
        [("get_weather", {"city": "Oslo"})]
    assert whole.message.content == "" and whole.message.thinking == "ok"
    parts = list(client.chat(model="tiny-toolcaller", messages=HELLO, tools=WEATHER, options=GREEDY, stream=True))
    with_calls = [p for p in parts if p.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done  # sent when the call was complete, not again at the end
    assert with_calls[0].message.tool_calls[0].function.name == "get_weather"
    assert parts[-1].done and parts[-1].done_reason == "stop"
