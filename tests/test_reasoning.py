from __future__ import annotations

import pytest

from localseek.chat.reasoning import Answer, Reasoning, ReasoningParser


def run(pieces: list[str], opened: bool = False) -> tuple[str, str, list]:
    parser = ReasoningParser(prompt_opened_think=opened)
    events = []
    for p in pieces:
        events += parser.feed(p)
    events += parser.flush()
    thinking = "".join(e.text for e in events if isinstance(e, Reasoning))
    answer = "".join(e.text for e in events if isinstance(e, Answer))
    return thinking, answer, events


def test_plain_think_then_answer() -> None:
    assert run(["<think>", "\nabc", "</think>", "\n\nDone."])[:2] == ("abc", "Done.")


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_tags_split_across_pieces(size: int) -> None:
    text = "<think>\nstep one</think>\n\nThe answer is 4."
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    assert run(pieces)[:2] == ("step one", "The answer is 4.")


def test_prompt_already_opened_think() -> None:
    thinking, answer, _ = run(["Let me", " see.", "</th", "ink>", "\n\n42"], opened=True)
    assert (thinking, answer) == ("Let me see.", "42")


def test_model_skips_thinking() -> None:
    assert run(["Hello", " there"])[:2] == ("", "Hello there")


def test_leading_whitespace_before_think_is_not_answer() -> None:
    assert run(["\n", "<think>x</think>y"])[:2] == ("x", "y")


def test_answer_starting_with_angle_bracket_is_not_swallowed() -> None:
    assert run(["<", "b>bold</b>"])[:2] == ("", "<b>bold</b>")
    assert run(["<thi", "s is fine"])[:2] == ("", "<this is fine")


def test_unclosed_think_flushes_as_reasoning() -> None:
    thinking, answer, _ = run(["<think>still thinking </th"])
    assert thinking == "still thinking </th" and answer == ""


def test_partial_close_tag_not_emitted_early() -> None:
    parser = ReasoningParser(prompt_opened_think=True)
    events = parser.feed("abc</")
    assert [e.text for e in events] == ["abc"]
    events = parser.feed("think>rest")
    assert events == [Answer("rest")]


def test_text_after_close_is_answer_even_if_it_mentions_tags() -> None:
    assert run(["<think>a</think>Use <think> tags"])[:2] == ("a", "Use <think> tags")


def test_prompt_ends_in_think_detection() -> None:
    assert ReasoningParser.prompt_ends_in_think("<｜Assistant｜><think>\n")
    assert not ReasoningParser.prompt_ends_in_think("<｜Assistant｜>")
    assert not ReasoningParser.prompt_ends_in_think("<think>a</think>b<｜Assistant｜>")


def test_whitespace_only_output_is_answer() -> None:
    assert run(["  "])[:2] == ("", "  ")
