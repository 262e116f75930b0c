"""Models on a server: loaded on first use, unloaded after --keep-alive, listed by `localseek ps`, unloaded by
`localseek stop`; a second model that does not fit beside the first evicts it when idle and waits while it is busy."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from factory import SCRIPT_ANSWER
from serve_helpers import Server, server_env
from tuimodels import loop_model

HELLO = [{"role": "user", "content": "hello"}]


def cli(server: Server, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", *args, "--port", str(server.port)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def ask(server: Server, model: str, **extra: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=120, headers=server.headers,
                      json={"model": model, "messages": HELLO, "temperature": 0, **extra})


def loaded(server: Server) -> list[str]:
    return [m["name"] for m in httpx.get(server.url + "/localseek/ps", headers=server.headers).json()["models"]]


def test_load_on_first_use_keep_alive_ps_and_stop(tiny_gguf: Path, tmp_path: Path) -> None:
    env = server_env(tmp_path, LOCALSEEK_API_KEY="k-123")  # `ps` and `stop` take the key from the environment too
    srv = Server(["--keep-alive", "2s", "--ctx", "512"], tmp_path, key="k-123", env=env)
    try:
        assert loaded(srv) == []
        assert ask(srv, str(tiny_gguf)).json()["choices"][0]["message"]["content"] == SCRIPT_ANSWER
        assert loaded(srv) == ["tiny-scripted"]
        shown = cli(srv, "ps", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "tiny-scripted" in shown.stdout and "plan: ctx 512" in shown.stdout and "unloads in" in shown.stdout
        deadline = time.monotonic() + 10
        while loaded(srv) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert loaded(srv) == []  # unloaded after 2 s idle
        # Known by its name once used, and `stop` unloads it at once.
        assert ask(srv, "tiny-scripted").status_code == 200
        stopped = cli(srv, "stop", "tiny-scripted", env=env)
        assert stopped.returncode == 0 and "Stopped tiny-scripted" in stopped.stdout
        assert loaded(srv) == []
        no_key = {k: v for k, v in env.items() if k != "LOCALSEEK_API_KEY"}
        refused = cli(srv, "stop", "tiny-scripted", env=no_key)
        assert refused.returncode == 2 and "API key" in refused.stderr
    finally:
        srv.stop()


# The tiny model plans ≈136 MB; with 750 MB of (simulated) RAM, less the planner's 512 MiB headroom, one fits and
# two do not.
ONE_FITS = "750000000"


def test_a_second_model_that_does_not_fit_evicts_the_idle_first(tiny_gguf: Path, tiny_random_gguf: Path,
                                                                 model_dir: Path, tmp_path: Path) -> None:
    env = server_env(tmp_path, LOCALSEEK_RAM_BYTES=ONE_FITS)
    loop = loop_model(model_dir)
    srv = Server(["--ctx", "4096"], tmp_path, env=env)
    try:
        assert ask(srv, str(tiny_gguf)).status_code == 200
        assert ask(srv, str(tiny_random_gguf), max_tokens=4).status_code == 200
        assert loaded(srv) == ["tiny-random"]  # the idle first model made room
        # While a model is busy, the other waits for it, then takes its place.
        finished: dict[str, float] = {}

        def long_request() -> None:
            response = ask(srv, str(loop), max_tokens=3000)
            finished["loop"] = time.monotonic()
            assert response.json()["usage"]["completion_tokens"] == 3000

        first = threading.Thread(target=long_request)
        first.start()
        deadline = time.monotonic() + 30
        while "tiny-loop" not in loaded(srv) and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = ask(srv, str(tiny_gguf))
        done = time.monotonic()
        first.join(60)
        assert reply.json()["choices"][0]["message"]["content"] == SCRIPT_ANSWER
        assert finished["loop"] <= done  # it waited for the busy model instead of failing or evicting it
        assert loaded(srv) == ["tiny-scripted"]
        assert "unloading tiny-loop to make room for tiny-scripted" in srv.log()
    finally:
        srv.stop()


def test_a_model_that_never_fits_is_a_507(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from localseek.planning.plan import Request
    from localseek.serve.app import ServerConfig, create_app
    from localseek.serve.manager import ModelManager

    monkeypatch.setenv("LOCALSEEK_RAM_BYTES", "600000000")
    with TestClient(create_app(ModelManager(Request(n_ctx=512)), ServerConfig())) as client:
        response = client.post("/v1/chat/completions", json={"model": str(tiny_gguf), "messages": HELLO})
        assert response.status_code == 507 and response.json()["error"]["code"] == "model_does_not_fit"
        assert "needs about" in response.json()["error"]["message"]
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300.0), ("30s", 30.0), ("1h", 3600.0), ("90", 90.0),
                                               ("-1", None), ("0", 0.0)])
def test_keep_alive_durations(text: str, seconds: float | None) -> None:
    from localseek.cli.serve import parse_keep_alive

    assert parse_keep_alive(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 minutes", ""])
def test_bad_keep_alive_is_a_usage_error(bad: str) -> None:
    from localseek.cli.serve import parse_keep_alive
    from localseek.errors import UsageError

    with pytest.raises(UsageError, match="--keep-alive"):
        parse_keep_alive(bad)


def test_a_model_with_mtp_is_served_speculatively_one_at_a_time(tmp_path: Path, model_dir: Path) -> None:
    from deepseek_factory import TinyDeepseekConfig, write_deepseek2_gguf

    from localseek.chat.generation import respond
    from localseek.runtime.engine import Engine
    from localseek.runtime.options import LoadOptions, Sampling

    path = model_dir / "tiny-ds-mtp.gguf"
    if not path.exists():
        write_deepseek2_gguf(path, TinyDeepseekConfig())
    plain = Engine.load(path, LoadOptions(n_ctx=512, n_threads=1))
    try:
        want = list(respond(plain, HELLO, Sampling(temperature=0, max_tokens=40)))[-1]
    finally:
        plain.close()
    srv = Server([str(path), "--ctx", "512"], tmp_path, env=server_env(tmp_path))
    try:
        reply = ask(srv, path.stem, max_tokens=40).json()
        message = reply["choices"][0]["message"]
        assert (message.get("reasoning_content") or "", message["content"]) == (want.reasoning, want.answer)
        assert reply["timings"]["draft_n"] > 0 and reply["timings"]["draft_n_accepted"] > 0
        status = httpx.get(srv.url + "/localseek/ps").json()["models"][0]
        assert status["speculation"] == "mtp" and len(status["slots"]) == 1
    finally:
        srv.stop()
