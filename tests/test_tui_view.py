"""The renderer, on Rich's recording console: reasoning apart from the answer, the collapse line,
Markdown answers, bounded live rendering, plain output for pipes."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from localseek.chat.commands import Reply
from localseek.runtime.options import Stats
from localseek.chat.generation import Done, ThinkingDone
from localseek.chat.reasoning import Answer, Reasoning
from localseek.chat.session import ContextTrimmed
from localseek.tui import THEME, ChatView, PlainView, stats_line, thought_line
from localseek.tui.markdown import BlockSplitter, render_block

ANSWER = """Here is the plan.

1. Read the file.
2. Sum the **numbers**.

```python
def total(xs):

    return sum(xs)
```

| a | b |
|---|---|
| 1 | 2 |

Done."""


def console(color: bool = True, width: int = 80) -> Console:
    return Console(file=io.StringIO(), record=True, width=width, height=30, force_terminal=color,
                   color_system="truecolor" if color else None, theme=THEME, highlight=False)


def stats(**kw: object) -> Stats:
    base = {"prompt_tokens": 12, "generated_tokens": 40, "generation_seconds": 2.0, "time_to_first_token": 0.25,
            "stop_reason": "eos", "n_ctx": 4096}
    base.update(kw)
    return Stats(**base)  # type: ignore[arg-type]


def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def play(view: ChatView, reasoning: str, answer: str, *, think_seconds: float = 8.2, think_tokens: int = 412) -> Done:
    st = stats()
    view.begin_turn()
    for p in pieces(reasoning):
        view.handle(Reasoning(p))
    if reasoning:
        view.handle(ThinkingDone(think_seconds, think_tokens))
    for p in pieces(answer):
        view.handle(Answer(p))
    done = Done(st, reasoning, answer, reasoning_tokens=think_tokens, reasoning_seconds=think_seconds)
    view.end_turn(done)
    return done


def test_reasoning_collapses_to_one_line_and_the_answer_is_markdown() -> None:
    con = console(color=False)
    play(ChatView(con, animate=False), "I should list the steps first. " * 3, ANSWER)
    text = con.export_text()
    assert "Thought for 8.2 s · 412 tokens" in text
    assert "I should list the steps" not in text  # the live block is gone once the answer starts
    assert " 1 Read the file." in text and " 2 Sum the numbers." in text  # Markdown: no ** left
    assert "def total(xs):" in text and "return sum(xs)" in text  # code block with a blank line inside
    assert "```" not in text and "|---|" not in text
    assert " a  b " in text and " 1  2 " in text  # a table
    assert text.index("Thought for") < text.index("Here is the plan.") < text.index("Done.")
    assert stats_line(stats()) in text


def test_code_is_highlighted_and_reasoning_is_dimmed_while_live() -> None:
    con = console()
    view = ChatView(con, animate=False, stats=lambda: stats(generated_tokens=5))
    view.begin_turn()
    view.handle(Reasoning("Let me think about the user's question."))
    live = console()
    live.print(view.region())
    plain = live.export_text(clear=False)
    shown = live.export_text(styles=True)
    assert "Thinking… " in plain and "5 tokens" in plain and "│ Let me think about the user's question." in plain
    assert "\x1b[2;3m" in shown or "\x1b[2m" in shown  # dim (italic) reasoning
    view.handle(ThinkingDone(1.0, 9))
    for p in pieces("```python\nimport os\nprint(os.getcwd())\n```\n\n"):
        view.handle(Answer(p))
    view.end_turn(Done(stats(), "", ""))
    out = con.export_text(styles=True)
    for word in ("import", "print"):  # keyword and builtin, highlighted
        line = next(line for line in out.splitlines() if word in line and "Thinking" not in line)
        assert f"m{word}\x1b[0m" in line


def test_show_reasoning_reopens_the_block() -> None:
    con = console(color=False)
    view = ChatView(con, animate=False)
    view.show_reply(Reply(reasoning={"role": "assistant", "content": "x", "reasoning": "Step one.\nStep two."}))
    text = con.export_text()
    assert "Thinking" in text and "│ Step one." in text and "│ Step two." in text


def test_interrupted_while_thinking() -> None:
    con = console(color=False)
    view = ChatView(con, animate=False)
    view.begin_turn()
    view.handle(Reasoning("a long thought"))
    view.end_turn(Done(stats(stop_reason="interrupted"), "a long thought", "", reasoning_tokens=3), interrupted=True)
    text = con.export_text()
    assert "Thought for" in text and "3 tokens · interrupted" in text and "[interrupted]" in text


def test_interrupted_answer_keeps_partial_text() -> None:
    con = console(color=False)
    view = ChatView(con, animate=False)
    view.begin_turn()
    view.handle(Answer("The answer is"))
    view.end_turn(Done(stats(), "", "The answer is"), interrupted=True)
    text = con.export_text()
    assert "The answer is" in text and text.index("The answer is") < text.index("[interrupted]")


def test_budget_and_skip_lines() -> None:
    assert thought_line(1.25, 100, forced=True) == "Thought for 1.2 s · 100 tokens · budget reached"
    assert thought_line(0.0, 0, forced=True) == "Thinking skipped (reasoning budget 0)"
    assert thought_line(3.0, 1) == "Thought for 3.0 s · 1 token"
    assert stats_line(stats(stop_reason="length")).endswith("stopped at max tokens")
    assert stats_line(stats()) == "first token 250 ms · 19.5 tok/s · 40 tokens · context 52/4096"


def test_context_trimmed_notice() -> None:
    con = console(color=False)
    view = ChatView(con, animate=False)
    view.begin_turn()
    view.handle(ContextTrimmed(2, 4))
    view.end_turn(None)
    assert "2 oldest messages are no longer sent" in con.export_text()


def test_control_characters_from_the_model_never_reach_the_terminal() -> None:
    con = console(color=False)
    play(ChatView(con, animate=False), "", "safe \x1b[2J\x1b]0;pwned\x07 text\r\n")
    text = con.export_text()
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "safe �[2J�]0;pwned� text" in text


def test_no_color_console_writes_no_colour_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from localseek.tui import make_console

    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    con = make_console(out, force_terminal=True, width=80)
    play(ChatView(con, animate=False), "thinking", ANSWER)
    assert "Thought for" in out.getvalue()
    assert "\x1b[3" not in out.getvalue() and "\x1b[38;" not in out.getvalue()  # no foreground colours


# -- streaming Markdown stays cheap --------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_block_splitter_is_independent_of_piece_size(size: int) -> None:
    splitter = BlockSplitter()
    blocks = [b for p in pieces(ANSWER, size) for b in splitter.feed(p)]
    tail = splitter.flush()
    assert blocks == [
        "Here is the plan.",
        "1. Read the file.\n2. Sum the **numbers**.",
        "```python\ndef total(xs):\n\n    return sum(xs)\n```",
        "| a | b |\n|---|---|\n| 1 | 2 |",
    ]
    assert tail == "Done."


def test_tilde_fence_and_longer_fences() -> None:
    splitter = BlockSplitter()
    text = "~~~\na\n\n```\nb\n~~~\n````md\n```\nc\n````\n"
    assert splitter.feed(text) == ["~~~\na\n\n```\nb\n~~~", "````md\n```\nc\n````"]


def test_live_region_of_a_huge_code_block_stays_small() -> None:
    con = console(color=False)
    view = ChatView(con, animate=False)
    view.begin_turn()
    view.handle(Answer("```python\n"))
    for i in range(3000):
        view.handle(Answer(f"x_{i} = {i}\n"))
    region = view.region()
    probe = console(color=False)
    probe.print(region)
    lines = probe.export_text().splitlines()
    assert len(lines) <= con.size.height and "x_2999 = 2999" in lines[-1] + "".join(lines)
    assert len(view._splitter.pending(max_lines=26)) < 500  # only the tail is re-rendered
    view.end_turn(None)
    text = con.export_text()
    assert text.count("x_0 = 0") == 1 and "x_2999 = 2999" in text  # printed once, in full


def test_list_continuation_keeps_its_code_fence() -> None:
    con = console(color=False)
    play(ChatView(con, animate=False), "", "1. Install it:\n\n   ```bash\n   pip install x\n   ```\n\n2. Run it.\n")
    text = con.export_text()
    assert "pip install x" in text and "```" not in text and " 2 Run it." in text
    assert render_block("   indented", after_list=False) is not None


# -- pipes -----------------------------------------------------------------------------------------
def test_plain_view_answer_only_by_default() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out=out, err=err)
    view.begin_turn()
    for event in [Reasoning("\nthinking..."), ThinkingDone(1, 2), Answer("\n\nThe "), Answer("answer.")]:
        view.handle(event)
    view.end_turn(None)
    assert out.getvalue() == "The answer.\n" and err.getvalue() == ""


def test_plain_view_show_thinking_goes_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out=out, err=err, show_thinking=True)
    view.begin_turn()
    for event in [Reasoning("\nthinking"), Reasoning(" hard"), Answer("\n\nok\n")]:
        view.handle(event)
    view.end_turn(None)
    assert out.getvalue() == "ok\n" and err.getvalue() == "thinking hard\n"


def test_blocks_are_spaced_like_the_source() -> None:
    con = console(color=False)
    play(ChatView(con, animate=False), "", ANSWER)
    lines = [line.rstrip() for line in con.export_text().splitlines()]
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("first token"))]
    assert "" not in [lines[0], lines[-1]]
    assert "\n\n\n" not in "\n".join(lines)  # never two blank lines in a row
    assert lines.count("") == 4 + 1  # five blocks: four blank lines between them, plus the one inside the code
