"""`localseek bench`: prompt-processing and generation speed through the same engine and token loop as `run`.

The tests mirror llama.cpp's `llama-bench` so the numbers compare one to one:
- ppN: the cache is cleared, N random tokens (BOS first) are decoded in batches of n_batch, and the first token is
  sampled — so the time is also the warm time to first token for an N-token prompt;
- tgN: the cache is cleared, then N tokens are generated one at a time (BOS first), each sampled (greedy) and fed back.
Each test runs once as warm-up, then `repetitions` times; results are tokens per second per repetition with their
median and spread. With a drafter (MTP block, draft model) there is a further test: tgN with speculative decoding,
with the drafts' acceptance rate and the speed-up over plain tgN measured in the same run.

Thread counts are swept as given; `AUTO` (0) is what `run` does — counts that adapt as it runs (runtime/threads.py),
from a fresh start for each sweep entry, reported with the counts they ended on.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from localseek.errors import UsageError
from localseek.runtime.engine import Engine
from localseek.runtime.options import Sampling, SpecStats

GREEDY = Sampling(temperature=0.0)
AUTO = 0  # in BenchSpec.threads: adaptive thread counts, as `run` uses


@dataclass(frozen=True)
class BenchSpec:
    n_prompt: int = 512
    n_gen: int = 128
    repetitions: int = 5
    threads: tuple[int, ...] = ()  # thread counts to sweep (AUTO: adaptive); () → AUTO
    batches: tuple[int, ...] = (512,)
    warmup: bool = True
    gen_prompt: str = ""  # text to generate after (default: BOS only, as llama-bench)

    def check(self) -> None:
        """Raise UsageError for a spec that measures nothing (before anything is loaded)."""
        if self.n_prompt < 0 or self.n_gen < 0 or (self.n_prompt == 0 and self.n_gen == 0):
            raise UsageError("Nothing to measure: give -p and/or -n a positive number of tokens.")
        if self.repetitions < 1:
            raise UsageError("Repetitions must be at least 1.")


@dataclass
class Result:
    test: str  # "pp512", "tg128", "tg128+mtp", …
    n_threads: int
    n_batch: int
    tokens: int
    samples_tps: list[float]
    seconds: list[float]
    accepted: int = 0
    drafted: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    llama_seconds: list[float] = field(default_factory=list)  # llama.cpp's own decode time inside each run
    adaptive: bool = False  # thread counts adapted as it ran; n_threads is where they ended

    @property
    def median(self) -> float:
        return statistics.median(self.samples_tps)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.samples_tps) if len(self.samples_tps) > 1 else 0.0

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            median_tps=round(self.median, 3),
            min_tps=round(min(self.samples_tps), 3),
            max_tps=round(max(self.samples_tps), 3),
            stdev_tps=round(self.stdev, 3),
            median_seconds=round(statistics.median(self.seconds), 6),
        )
        d["samples_tps"] = [round(x, 3) for x in self.samples_tps]
        # nanoseconds, as perf_counter gives them: a pp16 of a tiny model takes 0.3 ms, and figures derived from
        # microseconds would be off by 0.1 %
        d["seconds"] = [round(x, 9) for x in self.seconds]
        d["llama_seconds"] = [round(x, 9) for x in self.llama_seconds]
        if self.llama_seconds:  # time outside llama.cpp's decode calls: the Python loop, sampling, bookkeeping
            # from the figures as printed, so that anyone can recompute it from the JSON
            d["loop_overhead"] = round(statistics.median(
                (w - c) / c for w, c in zip(d["seconds"], d["llama_seconds"]) if c > 0), 5)
        if self.drafted:
            d["acceptance"] = round(self.accepted / self.drafted, 4)
        return d


def _random_prompt(engine: Engine, n: int, rng: random.Random) -> list[int]:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(engine.llm._model.model)
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    first = int(llama_cpp.llama_vocab_bos(vocab)) if llama_cpp.llama_vocab_get_add_bos(vocab) else -1
    tokens = [rng.randrange(n_vocab) for _ in range(n)]
    if first >= 0:
        tokens[0] = first
    return tokens


def time_prompt(engine: Engine, prompt: Sequence[int]) -> float:
    """Seconds from an empty cache to the first sampled token after `prompt` (prefill + one sample)."""
    engine.decoder.clear()
    gen = engine.generate_tokens(list(prompt), GREEDY, speculate=False)
    t0 = time.perf_counter()
    next(gen)
    seconds = time.perf_counter() - t0
    gen.close()
    return seconds


def time_generation(engine: Engine, start: Sequence[int], n_gen: int, spec: SpecStats | None = None) -> float:
    """Seconds to generate n_gen tokens after `start` (an empty cache first). Without `spec` this is n_gen decodes
    of one token, like llama-bench's tg test; with it, the engine's speculative loop (counting into `spec`)."""
    engine.decoder.clear()
    gen = engine.generate_tokens(list(start), GREEDY, speculate=spec is not None, spec_stats=spec)
    t0 = time.perf_counter()
    for i, _ in enumerate(gen, 1):
        if i >= n_gen:
            break
    seconds = time.perf_counter() - t0
    gen.close()
    return seconds


def _llama_seconds(engine: Engine) -> float:
    import llama_cpp

    data = llama_cpp.llama_perf_context(engine.llm._ctx.ctx)
    return (float(data.t_p_eval_ms) + float(data.t_eval_ms)) / 1000.0


def _repeat(fn: Callable[[], float], spec: BenchSpec, engine: Engine) -> tuple[list[float], list[float]]:
    """Wall seconds of each measured run, and the part llama.cpp itself spent decoding (its perf counters)."""
    import llama_cpp

    if spec.warmup:
        fn()
    wall, inside = [], []
    for _ in range(spec.repetitions):
        llama_cpp.llama_perf_context_reset(engine.llm._ctx.ctx)
        wall.append(fn())
        inside.append(_llama_seconds(engine))
    return wall, inside


def run_benchmarks(
    load: Callable[[int, int], Engine],
    spec: BenchSpec,
    *,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[Result]:
    """Load the model once per batch size (n_batch is fixed when a context is made) and run every test for every
    thread count. `load(n_ctx, n_batch)` opens the model (the CLI passes the same `open_model` as `run`), with the
    drafter it should speculate with, if any: then generation is also measured with speculation."""
    spec.check()
    rng = random.Random(1234)
    results: list[Result] = []
    n_ctx = max(spec.n_prompt, len(spec.gen_prompt) + spec.n_gen + 32, 256)
    for n_batch in spec.batches:
        engine = load(n_ctx, n_batch)
        try:
            prompt = _random_prompt(engine, spec.n_prompt, rng) if spec.n_prompt else []
            start = engine.tokenize(spec.gen_prompt) if spec.gen_prompt else _random_prompt(engine, 1, rng)
            for n_threads in spec.threads or (AUTO,):
                if n_threads == AUTO:
                    engine.adapt_threads()
                else:
                    engine.set_threads(n_threads)
                label = "auto" if n_threads == AUTO else n_threads
                if spec.n_prompt:
                    progress(f"pp{spec.n_prompt} threads={label} batch={n_batch}")
                    secs, inside = _repeat(functools.partial(time_prompt, engine, prompt), spec, engine)
                    results.append(_ended_on(engine, Result(
                        f"pp{spec.n_prompt}", n_threads, n_batch, spec.n_prompt, [spec.n_prompt / s for s in secs],
                        secs, llama_seconds=inside), batch=spec.n_prompt > 1))
                if spec.n_gen:
                    progress(f"tg{spec.n_gen} threads={label} batch={n_batch}")
                    secs, inside = _repeat(functools.partial(time_generation, engine, start, spec.n_gen), spec, engine)
                    plain = _ended_on(engine, Result(f"tg{spec.n_gen}", n_threads, n_batch, spec.n_gen,
                                                     [spec.n_gen / s for s in secs], secs, llama_seconds=inside))
                    results.append(plain)
                    if engine.drafter is not None:
                        res = _speculative_result(engine, spec, start, n_threads, n_batch, plain, progress)
                        results.append(_ended_on(engine, res, batch=True))
        finally:
            engine.close()
    return results


def _ended_on(engine: Engine, result: Result, *, batch: bool = False) -> Result:
    """With adaptive threads: mark the result, with the count it ended on (batches' or single tokens')."""
    if engine.threads is not None:
        result.adaptive = True
        result.n_threads = engine.threads.n_threads_batch if batch else engine.threads.n_threads
    return result


def _speculative_result(engine: Engine, spec: BenchSpec, start: list[int], n_threads: int, n_batch: int,
                        plain: Result, progress: Callable[[str], None]) -> Result:
    assert engine.drafter is not None
    label = f"tg{spec.n_gen}+{'mtp' if engine.drafter.kind == 'mtp' else 'draft'}"
    progress(f"{label} threads={n_threads} batch={n_batch}")
    counted = SpecStats()
    if spec.warmup:
        time_generation(engine, start, spec.n_gen, SpecStats())
    secs = [time_generation(engine, start, spec.n_gen, counted) for _ in range(spec.repetitions)]
    res = Result(label, n_threads, n_batch, spec.n_gen, [spec.n_gen / s for s in secs], secs, counted.accepted,
                 counted.drafted)
    res.extra["speedup"] = round(res.median / plain.median, 4) if plain.median else 0.0
    return res
