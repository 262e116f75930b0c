"""What the chat page needs from `localseek serve`, over plain HTTP (the browser test drives the page itself):
`GET /` is the page for browsers and `localseek is running` for everything else; its files come from the package
with a strict Content-Security-Policy, and nothing else is served under /ui/; the page and its files need no key
while the API still does; `/localseek/models` says what each model needs and whether it fits (loaded, unloaded,
too large), while `/v1/models` keeps OpenAI's shape; a stream's usage chunk carries llama-server's `timings`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_helpers import Server, server_env

from localseek.serve.page import STATIC

KEY = "sk-page-http-77e1"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, tiny_random_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve-page")
    srv = Server([str(tiny_gguf), str(tiny_random_gguf), "--ctx", "2048"], work, env=server_env(work))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def small_keyed(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a key, on a machine too small for any model (LOCALSEEK_RAM_BYTES)."""
    work = tmp_path_factory.mktemp("serve-page-small")
    srv = Server([str(tiny_gguf)], work, key=KEY,
                 env=server_env(work, LOCALSEEK_API_KEY=KEY, LOCALSEEK_RAM_BYTES="100000"))
    yield srv
    srv.stop()


def name_of(server: Server, path: Path) -> str:
    ids = [m["id"] for m in httpx.get(server.url + "/v1/models", headers=server.headers, timeout=10).json()["data"]]
    return next(i for i in ids if i.removesuffix(".gguf") == path.stem)


def test_root_is_the_page_for_browsers_and_plain_text_for_the_rest(server: Server) -> None:
    plain = httpx.get(server.url + "/", timeout=10)
    assert plain.status_code == 200 and plain.text == "localseek is running"
    page = httpx.get(server.url + "/", headers=HTML, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<meta name="localseek-key" content="none">' in page.text
    assert "__VERSION__" not in page.text and "__KEY__" not in page.text
    # Everything the page loads is served from the package, and nothing from elsewhere.
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert links and all(link.startswith("/ui/") for link in links), links
    for link in links:
        r = httpx.get(server.url + link, timeout=10)
        assert r.status_code == 200, link
        assert r.headers["content-security-policy"] == csp
    again = httpx.get(server.url + "/", headers={**HTML, "If-None-Match": page.headers["etag"]}, timeout=10)
    assert again.status_code == 304


def test_ui_serves_the_packaged_files_and_nothing_else(server: Server) -> None:
    for path, kind in [("app.js", "text/javascript"), ("api.js", "text/javascript"), ("style.css", "text/css"),
                       ("vendor/markdown-it.min.js", "text/javascript"), ("icon.svg", "image/svg+xml")]:
        r = httpx.get(f"{server.url}/ui/{path}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
        assert r.content == (STATIC / path).read_bytes()
        cached = httpx.get(f"{server.url}/ui/{path}", headers={"If-None-Match": r.headers["etag"]}, timeout=10)
        assert cached.status_code == 304
        assert httpx.head(f"{server.url}/ui/{path}", timeout=10).status_code == 200
    for path in ["nope.js", "../app.py", "%2e%2e/app.py", "..%2fpage.py", "vendor/../../page.py", "index.html", ""]:
        r = httpx.get(f"{server.url}/ui/{path}", timeout=10)
        assert r.status_code == 404, path
        assert r.json()["error"]["type"] == "not_found"


def test_the_page_needs_no_key_but_the_api_does(small_keyed: Server) -> None:
    page = httpx.get(small_keyed.url + "/", headers=HTML, timeout=10)
    assert page.status_code == 200 and '<meta name="localseek-key" content="required">' in page.text
    assert httpx.get(small_keyed.url + "/ui/app.js", timeout=10).status_code == 200
    for path in ["/localseek/models", "/v1/models", "/localseek/ps"]:
        assert httpx.get(small_keyed.url + path, timeout=10).status_code == 401, path
    assert httpx.post(small_keyed.url + "/ui/app.js", timeout=10).status_code == 401  # only reading is public
    assert KEY not in page.text


def test_models_says_what_each_needs_and_whether_it_fits(server: Server, tiny_gguf: Path,
                                                        tiny_random_gguf: Path) -> None:
    scripted, random = name_of(server, tiny_gguf), name_of(server, tiny_random_gguf)
    openai_shape = httpx.get(server.url + "/v1/models", timeout=10).json()
    assert all(set(m) == {"id", "object", "created", "owned_by"} for m in openai_shape["data"])
    data = httpx.get(server.url + "/localseek/models", timeout=30).json()
    assert data["machine"]["ram_bytes"] > 0
    models = {m["id"]: m for m in data["data"]}
    assert set(models) == {m["id"] for m in openai_shape["data"]}
    for name in (scripted, random):
        m = models[name]
        assert m["loaded"] and m["fits"] and m["fits_beside_loaded"] and m["problem"] == ""
        assert m["ram_bytes"] > m["size_bytes"] > 0 and m["n_ctx"] == 2048 and m["quant"] == "F32"
    loaded_plan = models[random]
    assert httpx.post(server.url + "/localseek/stop", json={"model": random}, timeout=30).status_code == 200
    unloaded = {m["id"]: m for m in httpx.get(server.url + "/localseek/models", timeout=30).json()["data"]}[random]
    # Planned as a request would load it: the same plan as when it was loaded, without loading it.
    assert not unloaded["loaded"] and unloaded["fits"] and unloaded["fits_beside_loaded"]
    assert {k: unloaded[k] for k in ("ram_bytes", "vram_bytes", "n_ctx", "size_bytes")} == \
        {k: loaded_plan[k] for k in ("ram_bytes", "vram_bytes", "n_ctx", "size_bytes")}
    ps = httpx.get(server.url + "/localseek/ps", timeout=10).json()
    assert random not in {m["name"] for m in ps["models"]}  # listing it did not load it


def test_a_model_too_large_for_the_machine_says_so(small_keyed: Server, tiny_gguf: Path) -> None:
    data = httpx.get(small_keyed.url + "/localseek/models", headers=small_keyed.headers, timeout=30).json()
    (m,) = [m for m in data["data"] if m["id"].removesuffix(".gguf") == tiny_gguf.stem]
    assert not m["loaded"] and not m["fits"] and not m["fits_beside_loaded"]
    assert m["ram_bytes"] > data["machine"]["ram_bytes"] == 100000
    assert "RAM" in m["problem"] or "memory" in m["problem"].lower(), m["problem"]


def test_the_usage_chunk_carries_timings(server: Server, tiny_gguf: Path) -> None:
    body = {"model": name_of(server, tiny_gguf), "messages": [{"role": "user", "content": "hello"}], "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 18
    assert last["timings"]["predicted_n"] == 18 and last["timings"]["predicted_per_second"] > 0
    assert all("timings" not in json.loads(e) for e in events[:-2])
