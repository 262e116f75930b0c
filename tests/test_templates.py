"""Chat templates are bounded: time, memory and output of a render (helper process), the prompt before llama.cpp's
tokenizer, and `run --template-file` to use a template from a file instead of the GGUF's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from factory import R1_TEMPLATE, SCRIPT_ANSWER, TinyConfig, write_qwen2_gguf

from localseek.chat import template_sandbox
from localseek.chat.conversation import ChatTemplate, Conversation, PromptTooLong, read_template_file
from localseek.chat.generation import MAX_BYTES_PER_TOKEN, build_prompt
from localseek.errors import UsageError

USER = [{"role": "user", "content": "hi"}]
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
FLOOD = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"  # ~100 MB: once killed llama.cpp's tokenizer


def test_a_runaway_loop_is_stopped_at_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_sandbox, "SECONDS", 1.0)
    start = time.monotonic()
    with pytest.raises(UsageError, match=r"took more than 1 s to render and was stopped.*--template-file"):
        ChatTemplate(LOOP).render(USER)
    assert time.monotonic() - start < 10
    assert ChatTemplate(R1_TEMPLATE).render(USER).endswith("<｜Assistant｜>")  # a fresh helper took its place


def test_output_is_capped() -> None:
    with pytest.raises(UsageError, match=r"rendered more than 4,194,304 characters"):
        ChatTemplate(FLOOD).render(USER)


def test_one_huge_value_hits_the_memory_limit() -> None:
    with pytest.raises(UsageError, match=r"needed more than 256 MB of memory"):
        ChatTemplate("{{ ('x' * 3000000000) | length }}").render(USER)
    assert ChatTemplate("{{ messages[0]['content'] }}").render(USER) == "hi"


def test_the_helper_interpreter_can_be_another_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A wrapper (as qemu-user is for an emulated Python) that starts Python without site-packages: jinja2 is found
    # only through the folders the caller passes, as when it came from PYTHONPATH.
    marker = tmp_path / "started"
    wrapper = f"sh -c 'touch {marker} && exec \"$0\" -S \"$@\"' {sys.executable}"
    monkeypatch.setenv("LOCALSEEK_TEMPLATE_PYTHON", wrapper)
    renderer = template_sandbox.Renderer()
    try:
        assert renderer.render("{{ messages[0]['content'] }}!", {"messages": USER}, seconds=30,
                               max_output=100) == "hi!"
    finally:
        renderer.close()
    assert marker.exists()


@pytest.mark.parametrize("command, says", [("/nonexistent/python3", "cannot start the template helper"),
                                           ("'unterminated", "LOCALSEEK_TEMPLATE_PYTHON is not a command line")])
def test_a_helper_interpreter_that_cannot_run_is_one_line(monkeypatch: pytest.MonkeyPatch, command: str,
                                                          says: str) -> None:
    monkeypatch.setenv("LOCALSEEK_TEMPLATE_PYTHON", command)
    renderer = template_sandbox.Renderer()
    with pytest.raises(template_sandbox.TemplateFailure, match=says) as err:
        renderer.render("{{ 1 }}", {}, seconds=5, max_output=10)
    assert err.value.kind == "helper"


def test_the_sandbox_and_the_template_s_own_errors() -> None:
    with pytest.raises(UsageError, match="rejected the conversation: roles must alternate"):
        ChatTemplate("{{ raise_exception('roles must alternate') }}").render(USER)
    with pytest.raises(UsageError, match="could not be rendered"):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}").render(USER)
    with pytest.raises(UsageError, match=r"could not be rendered \(ZeroDivisionError"):
        ChatTemplate("{{ 1 // 0 }}").render(USER)
    escape = ChatTemplate("{{ raise_exception('\x1b[31mred') }}", origin="The chat template in t.jinja")
    with pytest.raises(UsageError) as err:
        escape.render(USER)
    assert "\x1b" not in str(err.value) and str(err.value).startswith("The chat template in t.jinja")


def test_a_conversation_larger_than_any_prompt_is_refused_before_rendering() -> None:
    with pytest.raises(PromptTooLong, match="more than a prompt may be"):
        ChatTemplate(R1_TEMPLATE).render([{"role": "user", "content": "x" * (template_sandbox.MAX_OUTPUT + 1)}])


class _Engine:
    """What build_prompt needs of an engine; counts what reaches the tokenizer."""

    n_ctx = 1024
    bos_text = eos_text = ""

    def __init__(self) -> None:
        self.tokenized: list[int] = []

    def tokenize(self, text: str) -> list[int]:
        self.tokenized.append(len(text))
        return [0] * (len(text) // 4)


def test_the_prompt_is_bounded_before_the_tokenizer() -> None:
    engine = _Engine()
    conv = Conversation()
    conv.add_user("x" * (engine.n_ctx * MAX_BYTES_PER_TOKEN + 1))
    with pytest.raises(PromptTooLong, match=r"more than a 1,024-token context can hold \(at most 65,536 bytes"):
        build_prompt(engine, conv, template=ChatTemplate(R1_TEMPLATE))  # type: ignore[arg-type]
    assert engine.tokenized == []
    # an old turn that is too big is left out instead
    conv = Conversation()
    conv.add_user("y" * 100_000)
    conv.add_assistant("ok")
    conv.add_user("hello")
    prompt = build_prompt(engine, conv, template=ChatTemplate(R1_TEMPLATE))  # type: ignore[arg-type]
    assert prompt.dropped_turns == 2 and "hello" in prompt.text and engine.tokenized == [len(prompt.text)]


def test_read_template_file(tmp_path: Path) -> None:
    good = tmp_path / "t.jinja"
    good.write_text(R1_TEMPLATE, encoding="utf-8")
    assert read_template_file(good) == R1_TEMPLATE
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}\n{{ m ", encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad.jinja line 2: .*; fix the template"):
        read_template_file(bad)
    with pytest.raises(UsageError, match="No template file"):
        read_template_file(tmp_path / "none.jinja")
    big = tmp_path / "big.jinja"
    big.write_text("x" * (1024 * 1024 + 1))
    with pytest.raises(UsageError, match="over 1 MiB"):
        read_template_file(big)


# -- the command ----------------------------------------------------------------------------------------------
def _run(*args: str):
    return subprocess.run([sys.executable, "-m", "localseek", "run", *args], capture_output=True, text=True,
                          timeout=180, env=dict(os.environ), check=False)


def test_run_template_file_replaces_the_model_s_template(tiny_gguf: Path, tmp_path: Path) -> None:
    own = _run(str(tiny_gguf), "hello", "--temperature", "0", "--json")
    assert own.returncode == 0, own.stderr
    longer = tmp_path / "t.jinja"
    longer.write_text("{{ 'a b a b a b a b ' }}" + R1_TEMPLATE, encoding="utf-8")
    r = _run(str(tiny_gguf), "hello", "--temperature", "0", "--json", "--template-file", str(longer))
    assert r.returncode == 0, r.stderr
    import json

    mine, theirs = json.loads(r.stdout), json.loads(own.stdout)
    assert mine["answer"] == SCRIPT_ANSWER
    assert mine["stats"]["prompt_tokens"] > theirs["stats"]["prompt_tokens"]
    rejecting = tmp_path / "no.jinja"
    rejecting.write_text("{{ raise_exception('from the file') }}", encoding="utf-8")
    r = _run(str(tiny_gguf), "hello", "--template-file", str(rejecting))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: The chat template in no.jinja rejected the conversation: from the file"]
    r = _run(str(tiny_gguf), "hello", "--template-file", str(tmp_path / "missing.jinja"))
    assert r.returncode == 2 and "No template file" in r.stderr


def test_run_with_a_flooding_gguf_template_fails_in_one_line(tmp_path: Path) -> None:
    """The ~100 MB template that made llama.cpp's tokenizer abort the process (SIGABRT, native backtrace)."""
    model = write_qwen2_gguf(tmp_path / "flood.gguf", TinyConfig(template=FLOOD))
    r = _run(str(model), "hello")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "rendered more than 4,194,304 characters" in lines[0] and "--template-file" in lines[0]
