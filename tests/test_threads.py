"""Adaptive thread counts (runtime/threads.py): the controller's decisions on synthetic timings — including the traps
a simpler controller falls into — then on a real tiny model: it calls llama_set_n_threads, ends on the faster count
when one count is made slow, and the output does not depend on any of it."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from deepseek_factory import TinyDeepseekConfig, write_deepseek2_gguf

from localseek.planning.plan import Request
from localseek.runtime import engine as engine_module
from localseek.runtime import speculative
from localseek.runtime.engine import Engine
from localseek.runtime.open import open_model
from localseek.runtime.options import LoadOptions, Sampling
from localseek.runtime.threads import (
    MAX_WAIT,
    ThreadPolicy,
    ThreadTuner,
    first_due,
    ladder,
    machine_load,
    size_class,
)

US = 1e-6
Cost = Callable[[int, int, random.Random], float]  # (threads, decode number, rng) → seconds


def drive(tuner: ThreadTuner, cost: Cost, steps: int, seed: int = 1) -> tuple[float, list[int]]:
    """Feed `steps` decodes to the tuner; the total seconds and the count each decode ran at."""
    rng = random.Random(seed)
    total, picks = 0.0, []
    for i in range(steps):
        n = tuner.pick()
        seconds = cost(n, i, rng)
        tuner.update(n, seconds)
        total += seconds
        picks.append(n)
    return total, picks


def fixed(n: int, cost: Cost, steps: int, seed: int = 1) -> float:
    rng = random.Random(seed)
    return sum(cost(n, i, rng) for i in range(steps))


# Nano on this machine, per decode: idle, 2 threads 200 µs and 1 thread 275 µs.
def idle(n: int, i: int, rng: random.Random) -> float:
    return {2: 200, 1: 275}[n] * US * rng.uniform(0.95, 1.05)


def stalls(n: int, i: int, rng: random.Random) -> float:
    """Busy machine: 2 threads have the *lower* median, but one decode in ten waits 60 ms for the paused thread; 1
    thread is slowed now and then by its own share of the CPU. Mean: 2 threads ~6 ms, 1 thread ~350 µs."""
    if n == 1:
        return 250 * US * rng.uniform(0.9, 1.1) + (2000 * US if rng.random() < 0.05 else 0.0)
    return 200 * US * rng.uniform(0.9, 1.1) + (60000 * US if rng.random() < 0.1 else 0.0)


def test_ladder() -> None:
    assert ladder(1) == (1,) and ladder(2) == (1, 2) and ladder(4) == (1, 2, 3, 4)
    assert ladder(16) == (1, 2, 4, 8, 12, 14, 15, 16)


def test_idle_machine_stays_on_the_faster_count_and_probes_rarely() -> None:
    tuner = ThreadTuner(2)
    total, picks = drive(tuner, idle, 5000)
    assert tuner.best == 2 and tuner.adopted == []
    assert picks.count(1) / len(picks) < 0.02  # probes of the slower count: a few decodes every few hundred
    assert total <= 1.01 * fixed(2, idle, 5000)
    # Probes back off: far fewer in the second half than in the first.
    first, second = picks[:2500], picks[2500:]
    switches = lambda p: sum(a != b for a, b in itertools.pairwise(p))
    assert switches(second) < switches(first)


def test_stalls_trap_a_robust_average_but_not_this_one() -> None:
    """The trap: a median (or an average that clips outliers, as the draft tuner once did) sees 2 threads as faster
    and stays on them while they cost 17× more on average."""
    steps = 5000
    assert fixed(2, stalls, steps) > 10 * fixed(1, stalls, steps)
    rng = random.Random(2)
    assert np.median([stalls(2, 0, rng) for _ in range(1000)]) < np.median([stalls(1, 0, rng) for _ in range(1000)])
    tuner = ThreadTuner(2)
    total, picks = drive(tuner, stalls, steps)
    assert tuner.best == 1 and picks[-1000:].count(1) >= 990
    assert total <= 1.1 * fixed(1, stalls, steps)


@pytest.mark.parametrize("lucky", [4, 24])
def test_a_lucky_probe_is_not_kept(lucky: int) -> None:
    """Probes of 2 threads that happen to miss the stalls for a while. A short streak: the probe runs on while it
    wins (to 16 decodes) and the stall that ends the streak ends it. A streak long enough to put 2 threads in place:
    the first stall sends it back at once (the budget for probing does not hold it there)."""
    tuner = ThreadTuner(2, start=1)
    streak = iter([200 * US] * lucky)

    def cost(n: int, i: int, rng: random.Random) -> float:
        if n == 2:
            return next(streak, 60000 * US)  # the first decodes at 2 threads are lucky, every later one stalls
        return 250 * US

    _, picks = drive(tuner, cost, 300)
    assert tuner.adopted == ([] if lucky < 16 else [2, 1])
    assert picks[:60].count(2) <= lucky + 2 and picks[-200:].count(2) == 0


def test_load_comes_and_goes() -> None:
    """Idle → busy → idle: fewer threads within a few decodes of the load, back to more within MAX_WAIT seconds of
    decoding after it went (the stale, terrible measurement of 2 threads does not keep it on 1)."""
    tuner = ThreadTuner(2)
    busy = range(4000, 14000)

    def cost(n: int, i: int, rng: random.Random) -> float:
        return stalls(n, i, rng) if i in busy else idle(n, i, rng)

    rng = random.Random(3)
    picks, clock_at = [], {}
    for i in range(30000):
        n = tuner.pick()
        tuner.update(n, cost(n, i, rng))
        picks.append(n)
        clock_at[i] = tuner.clock
    assert picks[3990:4000].count(2) == 10
    assert picks[4100:14000].count(1) > 0.99 * 9900
    back = next(i for i in range(14000, 30000) if picks[i:i + 50].count(2) == 50)
    assert clock_at[back] - clock_at[14000] < MAX_WAIT + 0.5
    assert picks[-2000:].count(2) > 0.98 * 2000


def test_the_first_decode_is_not_blamed_on_the_count() -> None:
    """The first decode of a context builds graphs and touches the weights (here 1000× a normal one): not counted."""
    tuner = ThreadTuner(2)
    drive(tuner, lambda n, i, rng: (0.3 if i == 0 else 0.0) + idle(n, i, rng), 500)
    assert tuner.best == 2 and tuner.adopted == []


def test_waking_threads_does_not_hide_the_faster_count() -> None:
    """Switching to 2 threads costs a slow first decode (OpenMP wakes its sleeping thread); 2 is still faster."""
    tuner = ThreadTuner(2, start=1)
    last = [1]

    def cost(n: int, i: int, rng: random.Random) -> float:
        wake = 2000 * US if n == 2 and last[0] != 2 else 0.0
        last[0] = n
        return idle(n, i, rng) + wake

    _, picks = drive(tuner, cost, 2000)
    assert tuner.best == 2 and picks[-500:].count(2) > 480


def test_climbs_down_the_ladder_to_the_best_count() -> None:
    """16 cores, 4 of them busy: 12 threads is fastest, each thread more stalls more, fewer are slower (a valley,
    found step by step)."""
    def cost(n: int, i: int, rng: random.Random) -> float:
        return (1000 / min(n, 12) + 1000 * max(0, n - 12)) * US * rng.uniform(0.97, 1.03)

    tuner = ThreadTuner(16)
    _, picks = drive(tuner, cost, 3000)
    assert tuner.best == 12 and tuner.adopted[:3] == [15, 14, 12]
    assert picks[-500:].count(12) > 480


def test_one_core_has_nothing_to_choose() -> None:
    for cost in (idle, stalls):  # also when the one count struggles: nothing to probe, nothing breaks
        tuner = ThreadTuner(1, due=first_due(1, 1))
        _, picks = drive(tuner, cost, 300)
        assert set(picks) == {1} and tuner.switches == 0


def test_policy_tunes_single_tokens_and_batches_apart() -> None:
    applied: list[tuple[int, int]] = []
    policy = ThreadPolicy(2, lambda n, nb: applied.append((n, nb)))
    assert applied == [(2, 2)]

    def decode(n_tokens: int, seconds: Callable[[int], float]) -> None:
        policy.before(n_tokens)
        threads = policy.n_threads if n_tokens == 1 else policy.n_threads_batch
        policy.after(n_tokens, seconds(threads))

    # Single tokens: 1 thread is faster; batches of 2–3 tokens: 2 threads are (steadily: found by the probes that
    # come after MAX_WAIT seconds of decoding, here after ~100 of each).
    for _ in range(300):
        decode(1, lambda n: {1: 10e-3, 2: 30e-3}[n])
        decode(2, lambda n: {1: 40e-3, 2: 25e-3}[n])
    assert (policy.n_threads, policy.n_threads_batch) == (1, 2)
    assert policy.tuners[1].best == 1 and policy.tuners[2].best == 2
    assert all(a != b for a, b in itertools.pairwise(applied))  # llama.cpp is told only about changes
    # A new size starts where the nearest one ended up.
    decode(300, lambda n: 1e-3)
    assert policy.tuners[size_class(300)].best == 2
    assert [size_class(n) for n in (1, 2, 3, 4, 7, 8, 512, 4096)] == [1, 2, 2, 3, 3, 4, 10, 10]


def test_first_probes_fewer_soon_and_more_late_unless_the_count_struggles() -> None:
    """A context's first tuner probes fewer threads soon after the start (the planner's count is not always the
    fastest, even on an idle machine) and more threads than a start the load lowered only after MAX_WAIT seconds
    of decoding — unless the start count struggles: its decodes wait more than they compute (load that was there
    from the start: every other decode stalls), or it slows down."""
    one_faster = ThreadTuner(2, due=first_due(2, 2))
    _, picks = drive(one_faster, lambda n, i, rng: {1: 200, 2: 280}[n] * US, 200)
    assert one_faster.best == 1 and picks.index(1) < 8
    lowered = ThreadTuner(2, 1, due=first_due(2, 1))
    _, picks = drive(lowered, lambda n, i, rng: {1: 280, 2: 200}[n] * US, 2000)  # 0.56 s of decoding
    assert set(picks) == {1}
    _, picks = drive(lowered, lambda n, i, rng: {1: 280, 2: 200}[n] * US, 20000)  # past MAX_WAIT
    assert lowered.best == 2
    struggling = ThreadTuner(2, due={1: MAX_WAIT})
    _, picks = drive(struggling, lambda n, i, rng: 250 * US if n == 1 else (200 if i % 2 else 3200) * US, 200)
    assert struggling.best == 1 and picks.index(1) < 10
    slowing = ThreadTuner(2, due={1: MAX_WAIT})
    _, picks = drive(slowing, lambda n, i, rng: 250 * US if n == 1 else (200 if i < 500 else 600) * US, 1000)
    assert slowing.best == 1 and 500 < picks.index(1) < 520
    # More threads than where the first tuner starts wait; fewer do not.
    policy = ThreadPolicy(4, lambda n, nb: None, start=2)
    assert policy._new(1).due == {n: pytest.approx(MAX_WAIT) for n in (3, 4)}


def test_a_lost_probe_holds_off_the_same_probe_in_the_other_tuners() -> None:
    """Single tokens and verification batches each have a tuner; when one has found 1 thread slower, the other
    does not pay for the same probe again soon."""
    policy = ThreadPolicy(2, lambda n, nb: None)
    counts: list[tuple[int, int]] = []
    for _ in range(40):
        for size in (1, 2):
            policy.before(size)
            n = policy.n_threads if size == 1 else policy.n_threads_batch
            counts.append((size, n))
            policy.after(size, {1: 300e-6, 2: 200e-6}[n] * size)
    probes = {size: sum(1 for s, n in counts if s == size and n == 1) for size in (1, 2)}
    assert sorted(probes.values()) == [0, 3]  # one tuner probed 1 thread (3 decodes), the other did not


def test_a_probe_whose_decodes_stop_coming_does_not_block_the_others() -> None:
    """One probe at a time per context — but a probe of verification batches that stop coming (the draft tuner
    turned drafting off) must not keep the single-token tuner from probing: given up after ABANDONED seconds."""
    policy = ThreadPolicy(2, lambda n, nb: None)

    def decode(size: int, seconds: Callable[[int], float]) -> int:
        policy.before(size)
        n = policy.n_threads if size == 1 else policy.n_threads_batch
        policy.after(size, seconds(n))
        return n

    for _ in range(7):  # batches settle and start probing 1 thread, which wins: it runs on to be confirmed …
        decode(2, lambda n: {1: 100e-6, 2: 200e-6}[n])
    assert policy.tuners[2]._probing == 1
    singles = [decode(1, lambda n: {1: 2e-3, 2: 6e-3}[n]) for _ in range(400)]  # … and never come again
    assert policy.tuners[1].best == 1 and singles.index(1) < 200


@pytest.mark.parametrize("busy_jiffies,own_seconds,spare", [(150, 0.05, 3), (50, 0.05, 4), (390, 0.0, 1)])
def test_the_start_leaves_out_what_others_used_while_it_loaded(
        monkeypatch: pytest.MonkeyPatch, busy_jiffies: int, own_seconds: float, spare: int) -> None:
    """4 CPUs, nobody else running at the moment the context is made; over the 0.1 s the model loaded, the machine
    was busy for `busy_jiffies` of 400, this process for `own_seconds` of it. Others' share, rounded up from a
    tenth of a CPU, is left out."""
    from localseek.planning import hardware
    from localseek.runtime import threads

    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(hardware, "usable_cpus", lambda: 4)
    monkeypatch.setattr(threads, "_procs_running", lambda: 1)
    monkeypatch.setattr(threads, "_own_running", lambda: 1)
    monkeypatch.setattr(threads, "cpu_sample", lambda: threads.CpuSample((busy_jiffies, 400), own_seconds, 0.1))
    since = threads.CpuSample((0, 0), 0.0, 0.0)
    assert threads.spare_cpus(4, since) == spare
    assert threads.spare_cpus(4) == 4  # the moment alone: nobody running
    monkeypatch.setattr(threads, "_procs_running", lambda: 3)  # two others runnable now
    assert threads.spare_cpus(4) == 2


def test_machine_load_reads_the_machine() -> None:
    load = machine_load(0.05)
    assert load.cpus >= load.usable >= 1 and load.busy >= 0 and load.running >= 0
    assert "CPUs" in load.describe()


# -- on a real model ----------------------------------------------------------------------------------------------
@pytest.fixture
def slow_count(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Make llama_decode slower at chosen thread counts (`slow`: count → seconds, or a function of the decode
    number), and record every llama_set_n_threads and every decode with its thread count. With `virtual`, llama.cpp
    itself always runs one thread and the counts asked for only decide the delay: the machine's own load (these
    tests share 2 cores) cannot make a count slow."""
    import llama_cpp

    state: dict = {"slow": {}, "set": [], "decodes": [], "virtual": False, "asked": {}}
    decode, set_threads = llama_cpp.llama_decode, llama_cpp.llama_set_n_threads
    key = lambda ctx: getattr(ctx, "value", ctx)  # a c_void_p or an int, as llama_cpp returns it

    def slow_decode(ctx: object, batch: llama_cpp.llama_batch) -> int:
        if state["virtual"]:
            n_gen, n_batch = state["asked"].get(key(ctx), (0, 0))
            n = n_gen if batch.n_tokens == 1 else n_batch
        else:
            n = int(llama_cpp.llama_n_threads(ctx) if batch.n_tokens == 1 else llama_cpp.llama_n_threads_batch(ctx))
        delay = state["slow"].get(n, 0.0)
        if callable(delay):
            delay = delay(len(state["decodes"]))
        if delay:
            time.sleep(delay)
        state["decodes"].append((batch.n_tokens, n))
        return decode(ctx, batch)

    def spy(ctx: object, n: int, n_batch: int) -> None:
        state["set"].append((n, n_batch))
        state["asked"][key(ctx)] = (n, n_batch)
        return set_threads(ctx, 1, 1) if state["virtual"] else set_threads(ctx, n, n_batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", slow_decode)
    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", spy)
    monkeypatch.setattr(engine_module, "spare_cpus", lambda n, since=None: n)  # start at the planner's count: idle
    yield state


GREEDY = Sampling(temperature=0.0)


def _generate(engine: Engine, prompt: list[int], n: int) -> list[int]:
    out = []
    for token in engine.generate_tokens(prompt, GREEDY):
        out.append(token)
        if len(out) >= n:
            break
    return out


def stalls_every_other(i: int) -> float:
    """Every other decode waits 8 ms, as for a thread the OS paused."""
    return 0.008 * (i % 2)


@pytest.mark.parametrize("slow,fast", [(2, 1), (1, 2)])
def test_real_model_ends_on_the_faster_count(tiny_random_gguf: Path, slow_count: dict, slow: int, fast: int) -> None:
    slow_count["virtual"] = True
    engine = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=512, n_threads=2, adapt_threads=True))
    try:
        slow_count["slow"] = {slow: stalls_every_other}
        _generate(engine, engine.tokenize("hello there"), 150)
        assert engine.threads is not None and engine.threads.n_threads == fast
        assert slow_count["set"][0] == (2, 2) and slow_count["set"][-1][0] == fast  # llama_set_n_threads, as chosen
        singles = [n for size, n in slow_count["decodes"] if size == 1]
        assert singles[-50:].count(fast) >= 45  # probes of the slow count are rare
        if fast == 1:
            assert singles.index(1) < 12  # the stalls set off a probe of fewer threads at once
    finally:
        engine.close()


def test_fixed_threads_never_change(tiny_random_gguf: Path, slow_count: dict) -> None:
    slow_count["virtual"] = True
    engine = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=512, n_threads=2, adapt_threads=True))
    try:
        engine.set_threads(2)  # what --threads 2 amounts to
        slow_count["set"].clear()
        slow_count["slow"] = {2: 0.002}
        _generate(engine, engine.tokenize("hello there"), 40)
        assert slow_count["set"] == [] and engine.threads is None
        assert {n for _, n in slow_count["decodes"]} == {2}
    finally:
        engine.close()


class Flipper:
    """A pacer that changes both thread counts every few decodes, whatever the timings: switching mid-generation,
    at real thread counts, exactly as the adaptive policy does (through the engine's own apply)."""

    sync = False

    def __init__(self, apply: Callable[[int, int], None], every: int = 3) -> None:
        self.apply, self.every, self.decodes, self.counts = apply, every, 0, set()

    def before(self, n_tokens: int) -> None:
        n = 1 + (self.decodes // self.every) % 2
        self.apply(n, 3 - n)
        self.counts.add(n)

    def after(self, n_tokens: int, seconds: float) -> None:
        self.decodes += 1


def test_greedy_output_does_not_depend_on_the_threads(tiny_random_gguf: Path) -> None:
    """Fixed 1, fixed 2, and switching between them every 3 decodes: the same tokens; and the logits of 1 and 2
    threads are bit for bit the same."""
    n_gen = 64  # 2 threads on a busy shared machine stall: keep it short
    engine = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=512, n_threads=2))
    try:
        prompt = engine.tokenize("the quick brown fox jumps over the lazy dog " * 3)
        runs, logits = {}, {}
        for n in (1, 2):
            engine.set_threads(n)
            engine.decoder.clear()
            runs[n] = _generate(engine, prompt, n_gen)
            engine.decoder.clear()
            engine.decoder.decode(prompt, logits="all")
            logits[n] = np.array([engine.decoder.logits_row(i).copy() for i in range(len(prompt))])
        flipper = Flipper(engine._apply_threads)
        engine.decoder.pacer = flipper
        engine.decoder.clear()
        runs["switching"] = _generate(engine, prompt, n_gen)
        assert flipper.decodes >= n_gen and flipper.counts == {1, 2}
    finally:
        engine.close()
    assert runs[1] == runs[2] == runs["switching"]
    assert np.array_equal(logits[1], logits[2])


def test_speculating_engine_adapts_its_drafter_too(tmp_path: Path, slow_count: dict) -> None:
    """With MTP, verification batches (n_threads_batch) adapt, the MTP context follows the main one, and the output
    is plain decoding's."""
    slow_count["virtual"] = True
    path = write_deepseek2_gguf(tmp_path / "ds.gguf", TinyDeepseekConfig())
    prompt_text = "<｜User｜>hello<｜Assistant｜>"
    plain = Engine.load(path, LoadOptions(n_ctx=512, n_threads=1))
    try:
        want = _generate(plain, plain.tokenize(prompt_text), 60)
    finally:
        plain.close()
    engine = Engine.load(path, LoadOptions(n_ctx=512, n_threads=2, load_mtp=True, adapt_threads=True),
                         drafter=speculative.mtp_drafter(2, fixed=True))
    try:
        slow_count["slow"] = {2: stalls_every_other}
        assert _generate(engine, engine.tokenize(prompt_text), 60) == want
        assert engine.threads is not None and engine.threads.n_threads_batch == 1
        assert any(size > 1 for size, _ in slow_count["decodes"])
        drafter = engine.drafter
        assert isinstance(drafter, speculative.MTPDrafter)
        asked = {getattr(ctx, "value", ctx): value for ctx, value in slow_count["asked"].items()}
        key = lambda ctx: getattr(ctx, "value", ctx)
        policy = engine.threads
        assert asked[key(drafter.ctx)] == asked[key(engine.llm._ctx.ctx)] == (policy.n_threads, 1)
    finally:
        engine.close()


def test_threads_flag_and_environment_fix_the_count(tiny_random_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALSEEK_THREADS")
    with open_model(str(tiny_random_gguf), Request(n_ctx=256)) as model:
        assert model.engine.threads is not None  # the default: adaptive
    with open_model(str(tiny_random_gguf), Request(n_ctx=256, threads=1)) as model:
        assert model.engine.threads is None and model.engine.n_threads == 1  # --threads 1
    monkeypatch.setenv("LOCALSEEK_THREADS", "1")
    with open_model(str(tiny_random_gguf), Request(n_ctx=256)) as model:
        assert model.engine.threads is None
