"""A chat session on real tiny models: reasoning budget (forced `</think>`), hybrid thinking flag,
context overflow, interrupted turns, and the engine's token injection underneath."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from tuimodels import hybrid_model, loop_model

from localseek.chat.conversation import Conversation
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions, Sampling, Stats
from localseek.errors import UsageError
from localseek.chat.generation import BUDGET_CLOSE, Done, ThinkingDone, Turn
from localseek.chat.reasoning import Answer, Reasoning
from localseek.chat.session import ChatSession, ChatSettings, ContextTrimmed

GREEDY = Sampling(temperature=0.0, max_tokens=200)


def load(path: Path, n_ctx: int = 512) -> Engine:
    return Engine.load(path, LoadOptions(n_ctx=n_ctx, n_threads=1))


@pytest.fixture(scope="module")
def scripted(tiny_gguf: Path) -> Engine:
    return load(tiny_gguf)


@pytest.fixture(scope="module")
def looping(model_dir: Path) -> Engine:
    return load(loop_model(model_dir), n_ctx=1024)


@pytest.fixture(scope="module")
def hybrid(model_dir: Path) -> Engine:
    return load(hybrid_model(model_dir))


def ask(session: ChatSession, text: str) -> tuple[list[object], Done]:
    events = list(session.ask(text, Turn()))
    assert isinstance(events[-1], Done)
    return events, events[-1]


def settings(**kw: object) -> ChatSettings:
    return ChatSettings(sampling=GREEDY, **kw)  # type: ignore[arg-type]


# -- engine.inject ------------------------------------------------------------------------------
def test_inject_forces_text_then_sampling_resumes(scripted: Engine) -> None:
    prompt = scripted.tokenize("<｜User｜>hi<｜Assistant｜>")
    pieces = []
    stats = Stats()
    for i, piece in enumerate(scripted.stream(prompt, GREEDY, stats)):
        pieces.append(piece)
        if i == 2:  # "<think>", "\n", "Hmm"
            scripted.inject(BUDGET_CLOSE)
    text = "".join(pieces)
    # The forced close comes right after "Hmm"; the scripted model then answers as after its own </think>.
    assert text == "<think>\nHmm" + BUDGET_CLOSE + SCRIPT_ANSWER
    assert stats.stop_reason == "eos"
    forced = scripted.llm.tokenize(BUDGET_CLOSE.encode(), add_bos=False, special=True)  # type: ignore[attr-defined]
    assert len(forced) == 3  # "\n", "</think>", "\n\n"
    assert stats.generated_tokens == 3 + len(forced) + 7  # forced tokens count as generated ones


def test_inject_is_consumed_once(scripted: Engine) -> None:
    prompt = scripted.tokenize("<｜User｜>hi<｜Assistant｜>")
    first = "".join(p for p in scripted.stream(prompt, GREEDY))
    assert first == f"<think>\n{SCRIPT_REASONING}</think>\n\n{SCRIPT_ANSWER}"


# -- reasoning budget ---------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [1, 7, 40])
def test_budget_caps_reasoning_then_the_model_answers(looping: Engine, budget: int) -> None:
    session = ChatSession(looping, settings(think_budget=budget))
    events, done = ask(session, "hello")
    thinking = [e for e in events if isinstance(e, ThinkingDone)]
    assert len(thinking) == 1 and thinking[0].forced and thinking[0].tokens == budget
    assert done.budget_hit and done.reasoning_tokens == budget
    assert done.answer == SCRIPT_ANSWER
    # The reasoning is "\n" then the 7-token cycle "Hmm|,| the| user| says| hello|.": exactly `budget` tokens.
    cycle = ["Hmm", ",", " the", " user", " says", " hello", "."]
    assert done.reasoning == "".join(cycle[i % 7] for i in range(budget - 1))
    # ThinkingDone comes before the first answer text
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ThinkingDone") < kinds.index("Answer")


def test_without_budget_the_loop_model_reasons_until_the_limit(looping: Engine) -> None:
    session = ChatSession(looping, ChatSettings(sampling=dataclasses.replace(GREEDY, max_tokens=60)))
    _, done = ask(session, "hello")
    assert done.answer == "" and not done.budget_hit
    assert done.stats.stop_reason == "length" and done.reasoning_tokens == 59


def test_budget_zero_with_template_that_opened_think(tiny_think_gguf: Path) -> None:
    session = ChatSession(load(tiny_think_gguf), settings(think_budget=0))
    events, done = ask(session, "hello")
    assert done.reasoning == "" and done.answer == SCRIPT_ANSWER and done.budget_hit
    assert ThinkingDone(0.0, 0, forced=True) in events


def test_budget_zero_when_the_model_opens_think_itself(scripted: Engine) -> None:
    _, done = ask(ChatSession(scripted, settings(think_budget=0)), "hello")
    assert done.reasoning == "" and done.answer == SCRIPT_ANSWER and done.budget_hit


def test_budget_larger_than_reasoning_changes_nothing(scripted: Engine) -> None:
    events, done = ask(ChatSession(scripted, settings(think_budget=50)), "hello")
    assert (done.reasoning, done.answer, done.budget_hit) == (SCRIPT_REASONING, SCRIPT_ANSWER, False)
    thinking = next(e for e in events if isinstance(e, ThinkingDone))
    assert thinking.tokens == done.reasoning_tokens == 8 and not thinking.forced


def test_template_that_opened_think_still_shows_the_block(tiny_think_gguf: Path) -> None:
    events, done = ask(ChatSession(load(tiny_think_gguf), settings()), "hello")
    assert done.prompt_opened_think
    assert "".join(e.text for e in events if isinstance(e, Reasoning)) == SCRIPT_REASONING
    assert any(isinstance(e, ThinkingDone) for e in events)


# -- hybrid models (V3.1): /think off flips the template flag ------------------------------------
def test_hybrid_thinking_flag_switches_reasoning(hybrid: Engine) -> None:
    session = ChatSession(hybrid, settings(think=True))
    assert session.hybrid
    _, on = ask(session, "hello")
    assert (on.reasoning, on.answer) == (SCRIPT_REASONING, SCRIPT_ANSWER)
    assert session.last_prompt is not None and session.last_prompt.text.endswith("<think>")
    session.settings.think = False
    events, off = ask(session, "hello again")
    assert session.last_prompt.text.endswith("<think></think>")
    assert off.reasoning == "" and off.answer == SCRIPT_ANSWER
    assert not any(isinstance(e, (Reasoning, ThinkingDone)) for e in events)


def test_r1_template_is_not_hybrid(scripted: Engine) -> None:
    session = ChatSession(scripted, settings(think=False))
    assert not session.hybrid and session.template_vars() == {}
    _, done = ask(session, "hello")
    assert done.reasoning == SCRIPT_REASONING  # R1 always reasons; /think off only hides it


# -- history and context -------------------------------------------------------------------------
def test_history_sent_back_without_reasoning(scripted: Engine) -> None:
    session = ChatSession(scripted, settings())
    ask(session, "first")
    ask(session, "second")
    prompt = session.last_prompt.text  # type: ignore[union-attr]
    assert SCRIPT_REASONING not in prompt
    assert f"<｜User｜>first<｜Assistant｜>{SCRIPT_ANSWER}<｜end▁of▁sentence｜><｜User｜>second" in prompt
    assert session.conversation.turns[1]["reasoning"] == SCRIPT_REASONING  # kept for /think show


def test_context_overflow_drops_oldest_turns_but_never_the_system_prompt(tiny_gguf: Path) -> None:
    engine = load(tiny_gguf, n_ctx=160)
    session = ChatSession(engine, settings(), system="SYSTEM-PROMPT")
    trims = []
    for i in range(8):
        events, done = ask(session, f"message number {i} " + "word " * 8)
        trims += [e for e in events if isinstance(e, ContextTrimmed)]
        assert done.answer == SCRIPT_ANSWER
        prompt = session.last_prompt.text  # type: ignore[union-attr]
        assert prompt.startswith("<｜begin▁of▁sentence｜>SYSTEM-PROMPT<｜User｜>")
        assert len(session.last_prompt.tokens) + session.reply_reserve() <= session.n_ctx  # type: ignore[union-attr]
    assert trims, "eight exchanges cannot fit (llama.cpp rounds n_ctx up to 256)"
    assert trims[-1].total_dropped == session.conversation.dropped > 0
    prompt = session.last_prompt.text  # type: ignore[union-attr]
    assert "message number 0" not in prompt and "message number 7" in prompt
    assert len(session.conversation.turns) == 16  # nothing is forgotten for /save


def test_a_message_larger_than_the_context_is_refused(tiny_gguf: Path) -> None:
    session = ChatSession(load(tiny_gguf, n_ctx=64), settings())
    with pytest.raises(UsageError, match=f"context holds {session.n_ctx}"):
        ask(session, "word " * 400)
    assert session.conversation.turns == []  # the refused message is not kept


def test_conversation_drop_oldest_keeps_exchanges_whole() -> None:
    conv = Conversation(system="s")
    for i in range(3):
        conv.add_user(f"u{i}")
        conv.add_assistant(f"a{i}", "r")
    conv.add_user("u3")
    assert conv.drop_oldest() == 2 and conv.drop_oldest() == 2 and conv.drop_oldest() == 2
    assert not conv.can_drop() and conv.drop_oldest() == 0
    assert conv.for_model() == [{"role": "system", "content": "s"}, {"role": "user", "content": "u3"}]


# -- interrupted turns ---------------------------------------------------------------------------
def test_interrupted_turn_keeps_partial_answer_and_the_session_continues(looping: Engine) -> None:
    session = ChatSession(looping, settings())
    turn = Turn()
    events = session.ask("hello", turn)
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(events):
            if i == 20:
                raise KeyboardInterrupt  # what Ctrl-C does in the middle of the display
    events.close()
    done = session.interrupted(turn)
    assert done.stats.stop_reason == "interrupted" and done.reasoning.startswith("Hmm")
    assert 0 < done.reasoning_tokens < 30
    last = session.conversation.turns[-1]
    assert last["interrupted"] == "true" and last["role"] == "assistant"
    session.settings.think_budget = 3
    _, after = ask(session, "again")
    assert after.answer == SCRIPT_ANSWER and session.totals.interrupted == 1 and session.totals.turns == 2


def test_interrupt_during_the_answer_keeps_it(scripted: Engine) -> None:
    session = ChatSession(scripted, settings())
    turn = Turn()
    events = session.ask("hello", turn)
    for event in events:
        if isinstance(event, Answer):
            break
    events.close()
    done = session.interrupted(turn)
    assert done.answer and SCRIPT_ANSWER.startswith(done.answer)
    assert done.reasoning == SCRIPT_REASONING and done.reasoning_tokens == 8
