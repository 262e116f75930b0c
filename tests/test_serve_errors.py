"""Bad input is a 4xx with an OpenAI-style error object (never a 500, never a dead server); the API key is required
when set and never logged; prompts are not logged by default; CORS only for named origins; loopback by default."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from factory import SCRIPT_ANSWER
from serve_helpers import Server, server_env

KEY = "sk-local-7f3a9c1e55d04b2b"
PROMPT = "a very private prompt about tulips"


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve-errors")
    srv = Server([str(tiny_gguf), "--ctx", "256", "--cors", "http://allowed.test"], work, key=KEY,
                 env=server_env(work, LOCALSEEK_API_KEY=KEY))
    yield srv
    srv.stop()


def chat(server: Server, **body: object) -> httpx.Response:
    payload = {"model": "tiny-scripted", "messages": [{"role": "user", "content": PROMPT}], **body}
    return httpx.post(server.url + "/v1/chat/completions", json=payload, headers=server.headers, timeout=60)


def test_the_key_is_required(server: Server) -> None:
    url = server.url + "/v1/models"
    assert httpx.get(url).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.post(server.url + "/api/chat", json={"model": "x"}).status_code == 401
    assert httpx.get(url, headers=server.headers).status_code == 200


BAD_REQUESTS = [
    ("malformed JSON", b'{"model": "tiny-scripted", "messages": [', 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("unknown model", {"model": "no-such-model"}, 404, "model_not_found"),
    ("negative max_tokens", {"max_tokens": -5}, 400, None),
    ("zero max_tokens", {"max_completion_tokens": 0}, 400, None),
    ("temperature not a number", {"temperature": "hot"}, 400, None),
    ("temperature out of range", {"temperature": 9}, 400, None),
    ("two choices", {"n": 2}, 400, None),
    ("no messages", {"messages": []}, 400, None),
    ("a message without a role", {"messages": [{"content": "hi"}]}, 400, None),
    ("an image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     None),
    ("context overflow", {"messages": [{"role": "user", "content": "hello there " * 400}]}, 400,
     "context_length_exceeded"),
    ("schema that cannot compile", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "pattern": "no anchors"}}}}, 400, None),
    ("schema with a remote ref", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"$ref": "https://example.invalid/schema.json"}}}}, 400, None),
    ("unknown response format", {"response_format": {"type": "yaml"}}, 400, None),
    ("bad tool_choice", {"tool_choice": "sometimes"}, 400, None),
    ("bad reasoning_effort", {"reasoning_effort": "extreme"}, 400, None),
]


@pytest.mark.parametrize(("what", "body", "status", "code"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_is_a_4xx_with_an_error_object(server: Server, what: str, body: object, status: int,
                                                 code: str | None) -> None:
    if isinstance(body, bytes):
        response = httpx.post(server.url + "/v1/chat/completions", content=body,
                              headers={**server.headers, "Content-Type": "application/json"})
    else:
        response = chat(server, **body)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and error["type"]
    if code:
        assert error["code"] == code


def test_a_10_mb_body_is_refused_and_the_server_lives_on(server: Server) -> None:
    big = b'{"model": "tiny-scripted", "messages": [{"role": "user", "content": "' + b"x" * (10 * 1024 * 1024) + b'"}]}'
    response = httpx.post(server.url + "/v1/chat/completions", content=big, headers=server.headers, timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    # The same without a Content-Length (chunked): counted as it arrives.
    response = httpx.post(server.url + "/v1/chat/completions", content=iter([big[i:i + 65536]
                                                                             for i in range(0, len(big), 65536)]),
                          headers=server.headers, timeout=60)
    assert response.status_code == 413
    assert chat(server, temperature=0).json()["choices"][0]["message"]["content"] == SCRIPT_ANSWER


def test_unknown_endpoints_and_methods_are_json_errors(server: Server) -> None:
    missing = httpx.get(server.url + "/v1/nothing", headers=server.headers)
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = httpx.get(server.url + "/v1/chat/completions", headers=server.headers)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_cors_only_for_named_origins(server: Server) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = httpx.options(server.url + "/v1/chat/completions", headers={"Origin": "http://allowed.test", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://allowed.test"
    other = httpx.options(server.url + "/v1/chat/completions", headers={"Origin": "http://evil.test", **preflight})
    assert "access-control-allow-origin" not in other.headers


def test_access_log_has_a_line_per_request_without_key_or_prompt(server: Server) -> None:
    assert chat(server, temperature=0).status_code == 200
    httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer wrong-key-not-logged"})
    time.sleep(0.2)
    log = server.log()
    assert KEY not in log and "wrong-key-not-logged" not in log and "Bearer" not in log
    assert PROMPT not in log and "tulips" not in log
    lines = [line for line in log.splitlines() if '"POST /v1/chat/completions"' in line]
    assert any("model=tiny-scripted" in line and "status=200" in line and "tokens=" in line for line in lines)
    assert any('"GET /v1/models" status=401' in line for line in log.splitlines())
    assert "Traceback" not in log


def test_loopback_by_default(server: Server) -> None:
    # /proc/net/tcp lists listening sockets as hex address:port; 0100007F is 127.0.0.1.
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    listening = [r[1] for r in rows if r[3] == "0A" and int(r[1].split(":")[1], 16) == server.port]
    assert listening == [f"0100007F:{server.port:04X}"]


def test_another_address_is_named_and_warned_about(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "localseek", "serve", "--host", "0.0.0.0", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=server_env(tmp_path))
    try:
        first = proc.stderr.readline() if proc.stderr else ""
        second = proc.stderr.readline() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(10)
    assert "listening on http://0.0.0.0:" in first
    assert "warning" in second and "anyone who can reach it" in second and "--api-key" in second


def test_health_is_503_while_a_model_loads() -> None:
    from starlette.testclient import TestClient

    from localseek.planning.plan import Request
    from localseek.serve.app import ServerConfig, create_app
    from localseek.serve.manager import ModelManager

    manager = ModelManager(Request())
    app = create_app(manager, ServerConfig())
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        manager.loading["some-model"] = asyncio.Future()  # what a load in progress looks like
        response = client.get("/health")
        assert response.status_code == 503 and response.json()["error"]["type"] == "unavailable_error"
        manager.loading.clear()
