"""The chat page of `localseek serve` in a real browser: Debian's Chromium, headless, driven by Playwright (the
system browser; nothing downloaded), against a running server with scripted tiny models.

What a person would check: the reasoning streams live in its block, which folds to "Thought for N s · M tokens" when
the answer starts and opens again on click; the answer is Markdown with highlighted code; nothing the model writes
becomes HTML; Stop keeps the partial answer, marked, and the server stops generating; a reload finds the
conversation; the export is byte for byte what the terminal chat's /save writes; the model picker switches models;
with --api-key the key is asked for once per tab. Console errors are counted (none allowed), every control has an
accessible name, text and field edges meet WCAG AA contrast in the light and the dark theme (computed from the
colours the browser rendered), and a phone-sized screen has no sideways scrolling. Screenshots of every step go to
the test's temp dir.

Skipped when Playwright or Chromium is missing, unless LOCALSEEK_REQUIRE_BROWSER=1 (CI), which makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from factory import (
    EOS,
    SCRIPT_ANSWER,
    SCRIPT_REASONING,
    THINK_CLOSE,
    THINK_OPEN,
    TinyConfig,
    write_qwen2_gguf,
)
from serve_helpers import Server, server_env
from tuimodels import loop_model

from localseek.chat.conversation import Conversation

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

# As /work/.library/env/machines/python.md found to work on these machines: no sandbox as root, no GPU, and none of
# Chromium's own connections (the network is closed; each attempt would be a wait). Playwright adds --headless and
# a fresh profile directory of its own for every launch.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
KEY = "sk-page-3c9d41e0"
DESKTOP = {"width": 1200, "height": 800}
PHONE = {"width": 390, "height": 844}

# Scripted replies (tests/factory.py: greedy decoding follows these token pieces; Ġ is a space, Ċ a newline).
CODE_REASONING = "The user wants code."
CODE_ANSWER = "Here is **Python**:\n\n```python\ndef main():\n    print('hi')\n```\n\nRun it with `python3 main.py`."
CODE_SCRIPT = (THINK_OPEN, "Ċ", "The", "Ġuser", "Ġwants", "Ġcode", ".", THINK_CLOSE, "ĊĊ",
               "Here", "Ġis", "Ġ**", "Python", "**:", "ĊĊ```", "python", "Ċdef", "Ġmain", "():", "ĊĠĠĠ", "Ġprint",
               "('", "hi", "')", "Ċ```", "ĊĊRun", "Ġit", "Ġwith", "Ġ`", "python3", "Ġmain.py", "`.", EOS)
# A model that writes HTML, a javascript: link and an image from elsewhere, in its reasoning and its answer.
HOSTILE_REASONING = "<b>not bold</b>"
HOSTILE_ANSWER = ("<img src=x onerror=alert(1)><script>alert(2)</script> [click](javascript:alert(3)) "
                  "![pic](http://192.0.2.1/x.png)")
HOSTILE_SCRIPT = (THINK_OPEN, "Ċ", "<b>", "not", "Ġbold", "</b>", THINK_CLOSE, "ĊĊ",
                  "<img", "Ġsrc", "=x", "Ġonerror", "=alert(1)>", "<script>", "alert(2)", "</script>", "Ġ[click]",
                  "(javascript:", "alert(3))", "Ġ![pic]", "(http://192.0.2.1/x.png)", EOS)


# -- the browser -------------------------------------------------------------------------------------------------
def _require_browser(reason: str) -> None:
    if os.environ.get("LOCALSEEK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (LOCALSEEK_REQUIRE_BROWSER=1: CI must run the browser tests)", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str | None:
    """LOCALSEEK_CHROMIUM if set (another build, or a path that is not there to see the skip), else Debian's."""
    given = os.environ.get("LOCALSEEK_CHROMIUM")
    for candidate in [given] if given else [shutil.which("chromium"), "/usr/bin/chromium"]:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require_browser("Playwright is missing: pip install -e '.[test]'")
    path = _chromium()
    if path is None:
        _require_browser("Chromium is missing: apt-get install chromium (Debian's package; nothing is downloaded)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@dataclass
class Tab:
    """A page in a fresh browser context (its own localStorage and sessionStorage), with what it logged."""

    context: BrowserContext
    page: Page
    shots: Path
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture
def open_tab(browser: Browser, tmp_path: Path) -> Iterator[Callable[..., Tab]]:
    tabs: list[Tab] = []
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def make(url: str, *, scheme: str = "light", viewport: dict[str, int] = DESKTOP, go: bool = True) -> Tab:
        context = browser.new_context(viewport=viewport, color_scheme=scheme, accept_downloads=True)  # type: ignore[arg-type]
        page = context.new_page()
        page.set_default_timeout(15_000)
        tab = Tab(context, page, shots)
        page.on("console", lambda m: tab.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: tab.errors.append(f"page error: {e}"))
        page.on("dialog", lambda d: (tab.errors.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("request", lambda r: tab.requests.append(r.url))
        tabs.append(tab)
        if go:
            page.goto(url)
        return tab

    yield make
    for tab in tabs:
        tab.context.close()


# -- the server and its models -------------------------------------------------------------------------------------
def _model(model_dir: Path, name: str, cfg: TinyConfig) -> Path:
    path = model_dir / f"{name}.gguf"
    return path if path.exists() else write_qwen2_gguf(path, cfg)


@pytest.fixture(scope="module")
def models(model_dir: Path) -> dict[str, Path]:
    return {
        "code": _model(model_dir, "tiny-code", TinyConfig(script=CODE_SCRIPT)),
        "hostile": _model(model_dir, "tiny-hostile", TinyConfig(script=HOSTILE_SCRIPT)),
        # The answer never ends ("Hello! How can I help?" again and again), until the context is full or Stop.
        "long": _model(model_dir, "tiny-long", TinyConfig(loop=("?", "Hello"), context_length=32768)),
        "loop": loop_model(model_dir),  # reasons until a budget closes the block, then SCRIPT_ANSWER
    }


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("page")
    srv = Server([*(str(p) for p in models.values()), "--ctx", "32768"], work, env=server_env(work))
    yield srv
    srv.stop()


def model_id(server: Server, path: Path) -> str:
    """The name /v1/models gives the model of `path` (a file is named after itself)."""
    ids = [m["id"] for m in httpx.get(server.url + "/v1/models", headers=server.headers, timeout=10).json()["data"]]
    return next(i for i in ids if i.removesuffix(".gguf") == path.stem)


# -- driving the page ----------------------------------------------------------------------------------------------
LAST = "document.querySelector('.msg.assistant:last-of-type')"
SAMPLER = """
window.__samples = [];
const sample = () => {
  const all = document.querySelectorAll('.msg.assistant');
  const last = all[all.length - 1];
  if (last) {
    const details = last.querySelector('details.thinking');
    window.__samples.push({reasoning: last.querySelector('.reasoning').textContent.length,
                           open: details.open && !details.hidden,
                           answer: last.querySelector('.answer').textContent.length});
  }
  requestAnimationFrame(sample);
};
requestAnimationFrame(sample);
"""


def wait_ready(page: Page) -> None:
    # Functions, not expression strings: Playwright would eval() a string, which the page's CSP forbids.
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 0 && "
                           "!document.querySelector('#model option').textContent.startsWith('no models')")


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_done(page: Page, timeout: float = 30_000) -> None:
    """The reply is over and drawn (the page says so with aria-busy on the conversation, and hides Stop)."""
    page.wait_for_function("() => document.querySelector('#messages').getAttribute('aria-busy') === 'false' && "
                           "document.querySelectorAll('.msg.assistant').length > 0", timeout=timeout)


def last_answer(page: Page) -> str:
    return page.evaluate(f"{LAST}.querySelector('.answer').textContent").strip()


def no_errors(tab: Tab) -> None:
    """No console error, no uncaught exception, no alert; and the page asked nothing of any other address."""
    assert tab.errors == [], tab.errors
    origin = re.match(r"https?://[^/]+", tab.page.url)
    assert origin is not None
    elsewhere = [u for u in tab.requests if not u.startswith((origin.group(0) + "/", "blob:", "data:"))]
    assert elsewhere == [], elsewhere


# -- the tests -------------------------------------------------------------------------------------------------------
def test_reasoning_streams_folds_and_the_answer_is_markdown(server: Server, models: dict[str, Path],
                                                            open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(server.url + "/")
    page = tab.page
    page.add_init_script(SAMPLER)
    page.reload()
    wait_ready(page)
    tab.shot("01-empty")
    loop, code = model_id(server, models["loop"]), model_id(server, models["code"])
    # The picker lists every model with what it needs and whether it fits.
    options = page.eval_on_selector_all("#model option", "os => os.map(o => [o.value, o.textContent])")
    assert {v for v, _ in options} >= {loop, code}
    assert all(re.search(r"\d+(\.\d+)? [KMG]iB · loaded", text) for _, text in options), options

    # A reasoning budget makes the looping model reason for 3000 tokens, then answer.
    page.select_option("#model", loop)
    page.select_option("#thinking", "budget")
    page.fill("#budget", "3000")
    page.dispatch_event("#budget", "change")
    assert re.search(r"needs [\d.]+ [KMG]iB RAM · context 32768 · .* loaded", page.text_content("#model-info") or "")
    page.fill("#prompt", "hello")
    page.press("#prompt", "Shift+Enter")  # a new line, not a send
    page.type("#prompt", "there")
    assert page.input_value("#prompt") == "hello\nthere"
    assert page.locator(".msg").count() == 0
    page.press("#prompt", "Enter")
    page.wait_for_function(f"() => {LAST}.querySelector('.reasoning').textContent.length > 0")
    tab.shot("02-streaming")
    wait_done(page)
    samples = page.evaluate("window.__samples")
    thinking = [s for s in samples if s["open"] and s["answer"] == 0 and s["reasoning"] > 0]
    assert len({s["reasoning"] for s in thinking}) >= 3, "the reasoning did not stream into an open block"
    first_answer = next(i for i, s in enumerate(samples) if s["answer"] > 0)
    assert not any(s["open"] for s in samples[first_answer:]), "the block did not fold when the answer started"
    summary = page.text_content(".msg.assistant:last-of-type summary") or ""
    assert re.fullmatch(r"Thought for \d+(\.\d)? s · 3000 tokens", summary), summary
    assert last_answer(page) == SCRIPT_ANSWER
    assert page.text_content(".msg.user .bubble") == "hello\nthere"
    reasoning = page.locator(".msg.assistant:last-of-type .reasoning")
    assert not reasoning.is_visible()
    page.click(".msg.assistant:last-of-type summary")  # opens again on click
    assert reasoning.is_visible() and (reasoning.text_content() or "").startswith(SCRIPT_REASONING)
    tab.shot("03-reasoning-reopened")
    page.click(".msg.assistant:last-of-type summary")  # and folds again
    assert not reasoning.is_visible()

    # Another model from the picker, default thinking: the reply is the code model's, rendered as Markdown.
    page.select_option("#model", code)
    page.select_option("#thinking", "default")
    send(page, "Show me some code")
    wait_done(page)
    answer = page.locator(".msg.assistant:last-of-type .answer")
    assert answer.locator("strong").text_content() == "Python"
    block = answer.locator("pre code.hljs.language-python")
    assert block.text_content() == "def main():\n    print('hi')\n"
    assert block.locator(".hljs-keyword").first.text_content() == "def"
    assert block.locator(".hljs-string").first.text_content() == "'hi'"
    assert answer.locator(":not(pre) > code").text_content() == "python3 main.py"
    colours = page.evaluate("[...document.querySelectorAll('.msg.assistant:last-of-type pre code span')]"
                            ".map(s => getComputedStyle(s).color)")
    assert len(set(colours)) >= 3, "the code is not coloured"
    summary = page.text_content(".msg.assistant:last-of-type summary") or ""
    assert re.fullmatch(r"Thought for \d+(\.\d)? s · 6 tokens", summary), summary
    assert page.text_content(".msg.assistant:last-of-type .meta") == code
    status = page.text_content("#status") or ""
    assert re.fullmatch(rf"{re.escape(code)} · first token \d+\.\d\d s · [\d.]+ tokens/s · "
                        r"context \d+ / 32768 \(\d+ %\)", status), status
    tab.shot("04-markdown-answer")
    no_errors(tab)


def test_nothing_the_model_writes_becomes_html(server: Server, models: dict[str, Path],
                                               open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(server.url + "/")
    page = tab.page
    wait_ready(page)
    page.select_option("#model", model_id(server, models["hostile"]))
    send(page, "<script>alert(4)</script> say <b>hi</b>")
    wait_done(page)
    message = page.locator(".msg.assistant:last-of-type")
    # Shown as text; images are off, so the picture is only a link (not fetched).
    assert last_answer(page) == HOSTILE_ANSWER.replace("![pic](http://192.0.2.1/x.png)", "!pic")
    assert message.locator("a[href='http://192.0.2.1/x.png']").text_content() == "pic"
    assert message.locator("img, script, b, [onerror]").count() == 0
    assert message.locator("a[href^='javascript']").count() == 0
    assert page.text_content(".msg.assistant:last-of-type .reasoning") == HOSTILE_REASONING
    assert page.text_content(".msg.user .bubble") == "<script>alert(4)</script> say <b>hi</b>"
    assert page.locator("#messages script, #chats b, #messages b").count() == 0
    assert page.text_content("#chats button") == "<script>alert(4)</script> say <b>hi</b>"
    assert all(url.startswith(server.url) for url in tab.requests), tab.requests  # nothing from elsewhere
    tab.shot("05-hostile-output-escaped")
    no_errors(tab)


def _running(server: Server) -> int:
    ps = httpx.get(server.url + "/localseek/ps", headers=server.headers, timeout=10).json()
    return sum(len(m["requests"]) for m in ps["models"])


def test_stop_keeps_the_partial_answer_and_a_reload_keeps_the_conversation(
        server: Server, models: dict[str, Path], open_tab: Callable[..., Tab], tmp_path: Path) -> None:
    tab = open_tab(server.url + "/")
    page = tab.page
    wait_ready(page)
    long = model_id(server, models["long"])
    page.select_option("#model", long)
    send(page, "hello")
    page.wait_for_function(f"() => {LAST} && {LAST}.querySelector('.answer').textContent.length > 200")
    page.click("#stop")
    wait_done(page)
    partial = last_answer(page)
    assert partial.startswith(SCRIPT_ANSWER + SCRIPT_ANSWER)
    assert page.text_content(".msg.assistant:last-of-type .meta .stopped") == "stopped"
    assert (page.text_content("#status") or "").endswith("· stopped")
    time.sleep(0.5)
    assert last_answer(page) == partial  # nothing arrives after Stop
    assert partial.count(SCRIPT_ANSWER) < 4000  # the reply had not ended: the context holds ~4680 of them
    deadline = time.monotonic() + 5
    while _running(server) and time.monotonic() < deadline:  # the server stopped generating too
        time.sleep(0.05)
    assert _running(server) == 0
    tab.shot("06-stopped")

    page.reload()
    wait_ready(page)
    assert page.eval_on_selector_all("#chats button", "bs => bs.map(b => b.textContent)") == ["hello"]
    assert last_answer(page) == partial
    assert page.text_content(".msg.assistant:last-of-type .meta .stopped") == "stopped"
    assert page.text_content(".msg.assistant:last-of-type summary", timeout=1000) is not None
    tab.shot("07-after-reload")

    # Exported, it is exactly what the terminal chat's /save writes for the same turns, and /load reads it.
    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "exported.json"
    download.value.save_as(exported)
    expected = Conversation()
    expected.add_user("hello")
    expected.add_assistant(partial, SCRIPT_REASONING, interrupted=True)
    saved = tmp_path / "saved.json"
    expected.save(saved)
    assert exported.read_bytes() == saved.read_bytes()
    assert Conversation.load(exported).turns == expected.turns

    # And /save JSON imports as a conversation of its own.
    page.set_input_files("#import", str(saved))
    page.wait_for_function("() => document.querySelectorAll('#chats button').length === 2")
    assert last_answer(page) == partial

    # Escape stops too; a reload while a reply streams keeps what came, marked stopped.
    for how in ("escape", "reload"):
        page.click("#new-chat")
        send(page, how)
        page.wait_for_function(f"() => {LAST} && {LAST}.querySelector('.answer').textContent.length > 200")
        if how == "escape":
            page.keyboard.press("Escape")
            wait_done(page)
        else:
            page.reload()
            wait_ready(page)
        assert last_answer(page).startswith(SCRIPT_ANSWER)
        assert page.text_content(".msg.assistant:last-of-type .meta .stopped") == "stopped"
    deadline = time.monotonic() + 5
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(server) == 0
    no_errors(tab)


def test_the_api_key_is_asked_for_once_per_tab(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                                              open_tab: Callable[..., Tab]) -> None:
    """This server also sends the reasoning inline (`<think>` in the content): the page still shows it apart."""
    work = tmp_path_factory.mktemp("page-key")
    srv = Server([str(models["code"]), "--reasoning-field", "inline"], work, key=KEY,
                 env=server_env(work, LOCALSEEK_API_KEY=KEY))
    try:
        assert httpx.get(srv.url + "/v1/models", timeout=10).status_code == 401
        tab = open_tab(srv.url + "/")
        page = tab.page
        page.wait_for_selector("#key-dialog[open]")
        assert not [u for u in tab.requests if "/v1/" in u or "/localseek/" in u]  # asked before any API call
        check_labels(page)
        tab.shot("08-key-prompt")
        page.fill("#key", KEY)
        page.press("#key", "Enter")
        wait_ready(page)
        send(page, "hi")
        wait_done(page)
        assert page.text_content(".msg.assistant:last-of-type pre code") == "def main():\n    print('hi')\n"
        assert page.text_content(".msg.assistant:last-of-type .reasoning") == CODE_REASONING
        assert "think>" not in last_answer(page)
        page.reload()  # the same tab keeps the key (sessionStorage)
        wait_ready(page)
        assert not page.locator("#key-dialog").get_attribute("open")
        no_errors(tab)

        other = open_tab(srv.url + "/")  # another session asks again; a wrong key is refused and asked again
        other.page.wait_for_selector("#key-dialog[open]")
        other.page.fill("#key", "wrong")
        other.page.press("#key", "Enter")
        other.page.wait_for_selector("#key-note.refused")
        other.page.fill("#key", KEY)
        other.page.press("#key", "Enter")
        wait_ready(other.page)
        assert all("401" in e for e in other.errors) and other.errors, other.errors  # the refusal, and nothing else
    finally:
        srv.stop()


SPLIT = """async (deltas) => {
  const { DeltaSplitter } = await import('/ui/api.js');
  const splitter = new DeltaSplitter();
  const out = { reasoning: '', content: '' };
  for (const d of deltas) {
    const piece = splitter.push(d);
    out.reasoning += piece.reasoning;
    out.content += piece.content;
  }
  return out;
}"""


@pytest.mark.parametrize("deltas", [
    [{"reasoning_content": "Hmm, "}, {"reasoning_content": "ok."}, {"content": "Hi "}, {"content": "<think>"}],
    [{"reasoning": "Hmm, "}, {"reasoning": "ok."}, {"content": "Hi <think>"}],
    [{"reasoning_content": "Hmm, ok.", "reasoning": "Hmm, ok."}, {"content": "Hi <think>"}],  # `both`
    [{"content": "<thi"}, {"content": "nk>\nHmm, "}, {"content": "ok.\n</th"}, {"content": "ink>\n\nHi "},
     {"content": "<think>"}],  # `inline`, tags split across chunks
], ids=["reasoning_content", "reasoning", "both", "inline"])
def test_the_reasoning_is_found_whatever_the_field(deltas: list[dict[str, str]], server: Server,
                                                  open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(server.url + "/")
    assert tab.page.evaluate(SPLIT, deltas) == {"reasoning": "Hmm, ok.", "content": "Hi <think>"}
    no_errors(tab)


# -- accessibility -------------------------------------------------------------------------------------------------
CONTROL_ROLES = {"button", "textbox", "combobox", "PopUpButton", "checkbox", "radio", "spinbutton", "slider", "switch",
                 "searchbox", "link", "menuitem", "tab", "DisclosureTriangle", "ListBox", "listbox"}


def check_labels(page: Page) -> int:
    """Every control in the browser's own accessibility tree has a name (Chromium's name computation)."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    controls = [n for n in nodes if not n.get("ignored") and n.get("role", {}).get("value") in CONTROL_ROLES]
    nameless = [n for n in controls if not str(n.get("name", {}).get("value", "")).strip()]
    assert controls and not nameless, nameless
    return len(controls)


CHECKS = (Path(__file__).parent / "page_checks.js").read_text(encoding="utf-8")


def _stored_conversation() -> dict[str, Any]:
    """A conversation as the page keeps it in localStorage: a reply with reasoning and code, one stopped, one that
    failed — every kind of text the page draws."""
    now = int(time.time() * 1000)
    return {"id": "a11y", "title": "Contrast check", "created": now, "updated": now, "system": None, "messages": [
        {"role": "user", "content": "Show me some code"},
        {"role": "assistant", "content": CODE_ANSWER + "\n\n> a quote\n\n[a link](http://127.0.0.1/)\n\n"
                                                       "```python\n# a comment\nx = [1, 2.5, None, 'text']\n```",
         "reasoning": CODE_REASONING, "model": "tiny-code",
         "stats": {"thought_s": 0.4, "reasoning_tokens": 6, "reasoning_tokens_exact": True, "finish": "stop"}},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hello! How", "reasoning": "", "model": "tiny-long", "interrupted": True,
         "stats": {}},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "", "reasoning": "", "model": "tiny-long", "error": "The model is busy.",
         "stats": {}},
    ]}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_labels_contrast_and_phone_layout(scheme: str, server: Server, open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(server.url + "/", scheme=scheme, go=False)
    page = tab.page
    page.add_init_script(f"if (!localStorage.getItem('localseek.conversations')) localStorage.setItem("
                         f"'localseek.conversations', JSON.stringify([{json.dumps(_stored_conversation())}]))")
    page.goto(server.url + "/")
    wait_ready(page)
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
    page.select_option("#thinking", "budget")  # the budget field shows
    page.click(".msg.assistant summary")  # the dimmed reasoning shows
    page.fill("#prompt", "")
    assert page.locator("pre code.hljs .hljs-comment").count() == 1
    controls = check_labels(page)
    assert controls >= 12
    result = page.evaluate(CHECKS)
    assert result["unlabelled"] == []
    assert result["checked"] > 40 and result["failures"] == [], result["failures"]
    tab.shot(f"09-{scheme}")

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
    assert page.locator("#menu").is_visible() and not page.locator("#side").is_visible()
    assert page.locator("#prompt").is_visible() and page.locator("#send").is_visible()
    tab.shot(f"10-phone-{scheme}")
    page.click("#menu")
    assert page.locator("#side").is_visible() and page.get_attribute("#menu", "aria-expanded") == "true"
    result = page.evaluate(CHECKS)
    assert result["failures"] == [], result["failures"]
    tab.shot(f"11-phone-menu-{scheme}")
    page.click("#close-side")
    assert not page.locator("#side").is_visible()
    no_errors(tab)
