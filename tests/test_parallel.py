"""Several sequences in one llama.cpp context (runtime/parallel.py) and grammar-constrained answers (decode.Sampler):
the same tokens as the engine's own single-sequence loop, cancellation within a token, the reasoning left free."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING
from tuimodels import loop_model

from localseek.chat.generation import Done, respond
from localseek.runtime.decode import prompt_phase
from localseek.runtime.engine import Engine
from localseek.runtime.options import Grammar, LoadOptions, Sampling
from localseek.runtime.parallel import Cancelled, FairQueue, ParallelDecoder, SequenceEngine

PROMPTS = [f"question {i}: " + "tell me about the tiny model " * (1 + i % 3) for i in range(8)]


def _answer(engine: Engine, i: int, sampling: Sampling) -> tuple[str, str, int]:
    done = list(respond(engine, [{"role": "user", "content": PROMPTS[i]}], sampling))[-1]
    assert isinstance(done, Done)
    return done.reasoning, done.answer, done.stats.generated_tokens


def _sampling(i: int) -> Sampling:
    # Half greedy, half seeded sampling: both must come out as they do alone.
    return Sampling(temperature=0.0, max_tokens=24) if i % 2 else Sampling(temperature=0.9, seed=100 + i, max_tokens=24)


def test_parallel_sequences_equal_the_single_sequence_loop(tiny_random_gguf: Path) -> None:
    alone = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=1024, n_threads=1))
    try:
        expected = [_answer(alone, i, _sampling(i)) for i in range(len(PROMPTS))]
    finally:
        alone.close()
    engine = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=1024, n_threads=1, n_seq_max=4))
    decoder = ParallelDecoder(engine, 4)
    results: list[tuple[str, str, int] | None] = [None] * len(PROMPTS)

    def worker(i: int) -> None:
        view = SequenceEngine(engine, decoder, threading.Event())
        try:
            results[i] = _answer(view, i, _sampling(i))
        finally:
            view.close()

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == expected
        assert decoder.batched_tokens > decoder.steps  # sequences really shared batches
        # A second turn of the same conversation reuses its slot's cache (prefix match), not a fresh prefill.
        slots, waiting = decoder.info()
        assert waiting == 0 and not any(s.busy for s in slots) and all(s.cached_tokens for s in slots)
    finally:
        decoder.close()
        engine.close()


def test_cancel_stops_a_sequence_within_a_token_and_frees_its_slot(model_dir: Path) -> None:
    engine = Engine.load(loop_model(model_dir), LoadOptions(n_ctx=4096, n_threads=1, n_seq_max=2))
    decoder = ParallelDecoder(engine, 2)
    cancel = threading.Event()
    view = SequenceEngine(engine, decoder, cancel)
    try:
        tokens = view.generate_tokens(engine.tokenize("<｜User｜>hi<｜Assistant｜>"), Sampling(temperature=0))
        for n, _ in enumerate(tokens):
            if n == 5:
                cancel.set()
                steps = decoder.steps
            if n > 5:
                pytest.fail("tokens kept coming after the cancel was read")
        pytest.fail("the stream ended instead of raising Cancelled")
    except Cancelled:
        assert decoder.steps - steps <= 2  # the decoder stopped the sequence at its next step
    finally:
        view.close()
    deadline = time.monotonic() + 5
    while any(s.busy for s in decoder.info()[0]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(s.busy for s in decoder.info()[0])
    # The slot serves the next request normally.
    other = SequenceEngine(engine, decoder, threading.Event())
    try:
        budget = list(respond(other, [{"role": "user", "content": "hi"}], Sampling(temperature=0), think_budget=4))
        assert budget[-1].answer == SCRIPT_ANSWER
    finally:
        other.close()
        decoder.close()
        engine.close()


def test_fair_queue_serves_in_order_on_the_engines_own_loop(tiny_gguf: Path) -> None:
    engine = Engine.load(tiny_gguf, LoadOptions(n_ctx=512, n_threads=1))
    queue = FairQueue(engine)
    order: list[int] = []

    def worker(i: int) -> None:
        view = SequenceEngine(engine, queue, threading.Event())
        try:
            done = list(respond(view, [{"role": "user", "content": "hello"}], Sampling(temperature=0)))[-1]
            assert done.answer == SCRIPT_ANSWER and done.reasoning == SCRIPT_REASONING
            order.append(i)
        finally:
            view.close()

    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=worker, args=(i,)))
        threads[-1].start()
        time.sleep(0.05)
    for t in threads:
        t.join(30)
    engine.close()
    assert sorted(order) == [0, 1, 2]


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green"]}},
          "required": ["ok", "color"], "additionalProperties": False}


def test_grammar_constrains_the_answer_and_leaves_the_reasoning_free(tiny_gguf: Path) -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    engine = Engine.load(tiny_gguf, LoadOptions(n_ctx=512, n_threads=1))
    try:
        grammar = Grammar(json_schema_to_gbnf(json.dumps(SCHEMA)))
        done = list(respond(engine, [{"role": "user", "content": "hi"}],
                            Sampling(temperature=0, max_tokens=60, grammar=grammar)))[-1]
        assert done.reasoning == SCRIPT_REASONING  # the model reasoned as it always does …
        value = json.loads(done.answer)  # … then answered in the schema
        assert set(value) == {"ok", "color"} and value["color"] in ("red", "green")
        plain = list(respond(engine, [{"role": "user", "content": "hi"}], Sampling(temperature=0)))[-1]
        assert plain.answer == SCRIPT_ANSWER  # no grammar: unchanged
    finally:
        engine.close()


def test_prompt_phase() -> None:
    think = (1, 2)
    assert prompt_phase([5, 6, 7], think) == "start"
    assert prompt_phase([5, 1, 9], think) == "thinking"
    assert prompt_phase([5, 1, 2], think) == "answer"
    assert prompt_phase([5, 1, 8, 2, 9, 9], think) == "answer"  # the forced "\n</think>\n\n"
    assert prompt_phase([1, 8, 2, 9, 9, 9, 9, 9, 9], think) == "start"  # an old turn's block
