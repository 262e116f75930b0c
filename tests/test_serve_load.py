"""Load, bounded and on loopback only: 16 concurrent streaming clients each get exactly what their request gets
alone; 50 clients that hang up at random points leave the server serving, its slots free and its memory flat."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from factory import SCRIPT_ANSWER
from serve_helpers import Server, server_env
from tuimodels import loop_model

N_CLIENTS = 16


@pytest.fixture(scope="module")
def server(tiny_random_gguf: Path, tiny_gguf: Path, model_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve-load")
    srv = Server([str(tiny_random_gguf), str(tiny_gguf), str(loop_model(model_dir)), "--ctx", "8192"], work,
                 env=server_env(work))
    yield srv
    srv.stop()


def _request(i: int) -> dict[str, object]:
    # Greedy: a sampled reply can differ in a batch by rounding alone (docs/SERVER.md); its own seed all the same.
    sampling = {"temperature": 0, "seed": 1000 + i}
    words = " ".join(random.Random(i).choice(["tiny", "model", "hello", "test", "answer", "think"]) for _ in range(8))
    return {"model": "tiny-random", "messages": [{"role": "user", "content": f"client {i}: {words}"}],
            "max_tokens": 48, **sampling}


def _stream(client: openai.OpenAI, body: dict[str, object]) -> tuple[str, str, int]:
    reasoning, content, tokens = [], [], 0
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **body):
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            reasoning.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
            content.append(choice.delta.content or "")
    return "".join(reasoning), "".join(content), tokens


def _stable_prefix(engine: object, body: dict[str, object], tie: float = 0.02) -> tuple[str, bool]:
    """The reply's text up to its first near-tie (two top logits within `tie`), computed in-process, and whether the
    whole reply is tie-free. A batch rounds differently from a lone sequence, so past a near-tie greedy decoding may
    legitimately go either way (docs/SERVER.md); before it, any difference would be a real mix-up."""
    import numpy as np

    from localseek.chat.generation import template_for

    text = template_for(engine).render(body["messages"], add_generation_prompt=True)  # type: ignore[arg-type]
    dc = engine.decoder  # type: ignore[attr-defined]
    dc.clear()
    dc.decode(engine.tokenize(text), logits="last")  # type: ignore[attr-defined]
    out: list[int] = []
    for _ in range(int(body["max_tokens"])):  # type: ignore[call-overload]
        row = np.array(dc.logits_row(-1))
        top2 = np.partition(row, -2)[-2:]
        if abs(float(top2[1] - top2[0])) < tie:
            # (less its last character, which may be a byte of one the next token completes)
            return engine.llm.detokenize(out).decode("utf-8", "replace")[:-1].lstrip("\n"), False  # type: ignore
        token = int(np.argmax(row))
        if engine.is_eog(token):  # type: ignore[attr-defined]
            break
        out.append(token)
        dc.decode([token])
    return engine.llm.detokenize(out).decode("utf-8", "replace").lstrip("\n"), True  # type: ignore[attr-defined]


def test_concurrent_streams_equal_the_same_requests_alone(server: Server, tiny_random_gguf: Path) -> None:
    from localseek.runtime.engine import Engine
    from localseek.runtime.options import LoadOptions

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    alone = [_stream(client, _request(i)) for i in range(N_CLIENTS)]
    assert len(set(alone)) == N_CLIENTS  # the prompts really give different replies
    start = threading.Barrier(N_CLIENTS)

    def together(i: int) -> tuple[str, str, int]:
        start.wait(30)
        return _stream(client, _request(i))

    with ThreadPoolExecutor(N_CLIENTS) as pool:
        concurrent = list(pool.map(together, range(N_CLIENTS), timeout=120))
    engine = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=1024, n_threads=1))
    try:
        stable = [_stable_prefix(engine, _request(i)) for i in range(N_CLIENTS)]
    finally:
        engine.close()
    compared = 0
    for i, ((r1, c1, n1), (r2, c2, n2), (prefix, whole)) in enumerate(zip(alone, concurrent, stable)):
        assert (r1 + c1).startswith(prefix) and (r2 + c2).startswith(prefix), i
        if whole:
            assert (r1, c1, n1) == (r2, c2, n2), i  # no near-tie at all: exactly the same reply
        assert n2 == 48 or c2  # complete: to max_tokens or to the end of generation
        compared += len(prefix)
    assert compared > 0.6 * sum(len(r + c) for r, c, _ in alone)  # most of the text is beyond doubt
    assert sum(whole for _, whole in stable) >= N_CLIENTS // 2


def _hang_up(server: Server, i: int) -> None:
    """Stream a long reply and close the connection after a random number of lines (0: before the first)."""
    rng = random.Random(i)
    body = {"model": "tiny-loop", "messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 4000,
            "stream": True, "temperature": 0}
    if rng.random() < 0.2:
        body = {"model": "tiny-loop", "prompt": f"<｜User｜>hi {i}<｜Assistant｜>", "max_tokens": 4000,
                "stream": True}
        path = "/v1/completions"
    else:
        path = "/v1/chat/completions"
    keep = rng.randint(0, 30)
    with httpx.Client(timeout=60) as http, http.stream("POST", server.url + path, json=body) as response:
        assert response.status_code == 200
        for n, _ in enumerate(response.iter_lines()):
            if n >= keep:
                break


def _idle(server: Server, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(server.url + "/localseek/ps").json()
        busy = [(m["name"], m["requests"], [s for s in m["slots"] if s["busy"]]) for m in status["models"]
                if m["requests"] or any(s["busy"] for s in m["slots"]) or m["waiting"]]
        if not busy or time.monotonic() > deadline:
            assert not busy, busy
            return status
        time.sleep(0.05)


def test_clients_that_hang_up_stop_their_generation(server: Server) -> None:
    def round_of_50() -> None:
        with ThreadPoolExecutor(25) as pool:
            list(pool.map(lambda i: _hang_up(server, i), range(50), timeout=120))
        _idle(server)

    round_of_50()  # warm: every slot, batch shape and thread pool has been used once
    before = server.rss()
    started = time.monotonic()
    round_of_50()
    after = server.rss()
    # Each reply would be 4000 tokens; stopped at the hang-up, 50 of them take a moment, not minutes.
    assert time.monotonic() - started < 30
    assert after - before < 16 * 2**20, (before, after)
    reply = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "tiny-scripted", "messages": [{"role": "user", "content": "hello"}], "temperature": 0})
    assert reply.json()["choices"][0]["message"]["content"] == SCRIPT_ANSWER
    assert "Traceback" not in server.log()
