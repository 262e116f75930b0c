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

from localseek.chat.generation import Done, respond, template_for
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
        assert waiting == 0 and not any(s.busy for s in slots) and any(s.cached_tokens for s in slots)
    finally:
        decoder.close()
        engine.close()


def test_nothing_is_decoded_past_max_tokens(model_dir: Path) -> None:
    """A sequence's last token is its `max_tokens`-th: the decoder does not sample ahead for a reader that will stop
    there (at 16 clients that was up to LOOKAHEAD wasted tokens per request), and its slot is free at once, not when
    the reader has finished its response."""
    engine = Engine.load(loop_model(model_dir), LoadOptions(n_ctx=4096, n_threads=1, n_seq_max=2))
    decoder = ParallelDecoder(engine, 2)
    view = SequenceEngine(engine, decoder, threading.Event())
    try:
        prompt = engine.tokenize("<｜User｜>hi<｜Assistant｜>")
        tokens = view.generate_tokens(prompt, Sampling(temperature=0, max_tokens=5))
        got = [next(tokens) for _ in range(5)]
        time.sleep(0.5)  # the reader dawdles: a decoder that samples ahead would have decoded more by now
        slot = max(decoder.slots, key=lambda s: len(s.tokens))
        assert len(got) == 5 and len(slot.tokens) == len(prompt) + 4  # the 5th token was sampled, never decoded
        assert slot.job is None and slot.reserved_by is None  # the slot is free for the next request already
        assert list(tokens) == []  # and the stream ends there
    finally:
        view.close()
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


def test_a_cached_prefix_is_reused_and_shared_between_slots(tiny_gguf: Path) -> None:
    """A long system prompt read once: the next requests that start with it decode only their own part, also when
    they run at the same time in other slots (llama_memory_seq_cp shares the cells)."""
    engine = Engine.load(tiny_gguf, LoadOptions(n_ctx=4096, n_threads=1, n_seq_max=4))
    decoder = ParallelDecoder(engine, 4)
    system = "You are a helpful assistant who says hello. " * 60

    def messages(i: int) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": f"hello {i}"}]

    def ask(i: int) -> Done:
        view = SequenceEngine(engine, decoder, threading.Event())
        try:
            return list(respond(view, messages(i), Sampling(temperature=0)))[-1]  # type: ignore[return-value]
        finally:
            view.close()

    try:
        first = ask(0)
        prompt = first.stats.prompt_tokens
        assert prompt > 500 and first.answer == SCRIPT_ANSWER
        before = decoder.batched_tokens
        # Three more requests at once: each reader takes its first token before the next one starts, so all three
        # hold a slot together (the first lands in the slot that read the system prompt, the others share it).
        template = template_for(engine)
        streams = [decoder.tokens(i, engine.tokenize(template.render(messages(i), add_generation_prompt=True)),
                                  Sampling(temperature=0), threading.Event()) for i in (1, 2, 3)]
        replies = [[next(s)] for s in streams]
        assert sum(1 for s in decoder.info()[0] if s.busy) == 3
        for stream, reply in zip(streams, replies):
            for token in stream:
                reply.append(token)
                if engine.is_eog(token):
                    break
            stream.close()
        for reply in replies:
            assert engine.llm.detokenize(reply).decode().endswith(SCRIPT_ANSWER)
        decoded = decoder.batched_tokens - before
        # Three replies of 18 tokens and three short suffixes, not three more copies of the system prompt.
        assert decoded < 3 * (18 + 20), decoded
        assert sum(1 for s in decoder.info()[0] if s.cached_tokens > prompt // 2) >= 3
    finally:
        decoder.close()
        engine.close()
