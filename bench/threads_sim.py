"""The thread tuner (localseek/runtime/threads.py) on synthetic timings, against every fixed count.

    python bench/threads_sim.py

Seconds per decode are drawn from models of what was measured on nano on this 2-core machine (1 thread ~250 µs, 2
threads ~200 µs when idle): `idle` (2 threads faster, rare hiccups), `busy` (2 threads have the lower median but
one decode in ten waits 60 ms for a paused thread), `hog` (one competing busy loop: every other 2-thread decode
waits a 3 ms time slice), `comes-and-goes` (idle, busy, idle). No llama.cpp: this isolates what the controller's
decisions cost — its probes and its reaction times — from the machine's noise, which on a shared machine is larger
than the 2 % that matter on an idle one. Prints, per scenario and length, total time relative to the best fixed
count and the speed-up over the planner's fixed default (2); short runs are repeated with fresh tuners (a one-shot
`run` starts from scratch every time) and summed.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localseek.runtime.threads import ThreadTuner, first_due

US = 1e-6
Cost = Callable[[int, int, random.Random], float]


def idle(n: int, i: int, rng: random.Random) -> float:
    hiccup = 4000 * US if rng.random() < 0.002 else 0.0
    return {2: 200, 1: 275}[n] * US * rng.uniform(0.95, 1.05) + hiccup


def busy(n: int, i: int, rng: random.Random) -> float:
    if n == 1:
        return 250 * US * rng.uniform(0.9, 1.1) + (2000 * US if rng.random() < 0.05 else 0.0)
    return 200 * US * rng.uniform(0.9, 1.1) + (60000 * US if rng.random() < 0.1 else 0.0)


def hog(n: int, i: int, rng: random.Random) -> float:
    if n == 1:
        return 250 * US * rng.uniform(0.95, 1.05)
    return 200 * US + (3000 * US if rng.random() < 0.5 else 0.0)


def comes_and_goes(n: int, i: int, rng: random.Random) -> float:
    return busy(n, i, rng) if 20000 <= i < 40000 else idle(n, i, rng)


def run(cost: Cost, steps: int, seed: int, fixed: int = 0, start: int = 2) -> float:
    """Seconds for `steps` decodes with a fresh tuner as a context's first one starts (or a fixed count). `start`
    1: as `run` starts when other programs hold a core (`threads.spare_cpus`)."""
    rng = random.Random(seed)
    tuner = ThreadTuner(2, start, due=first_due(2, start))
    seconds = 0.0
    for i in range(steps):
        n = fixed or tuner.pick()
        s = cost(n, i, rng)
        if not fixed:
            tuner.update(n, s)
        seconds += s
    return seconds


def main() -> None:
    print("| scenario | start | decodes × runs | adaptive / best fixed (time) | fixed 2 / adaptive (speed-up) |")
    print("|---|---|---|---|---|")
    lengths = (130, 1000, 10000, 100000)
    scenarios: list[tuple[str, Cost, int, tuple[int, ...]]] = [
        ("idle", idle, 2, lengths),
        ("busy", busy, 1, lengths),
        ("busy", busy, 2, lengths),  # the load came right after the start
        ("hog", hog, 1, lengths),
        ("hog", hog, 2, lengths),
        ("comes-and-goes", comes_and_goes, 2, (60000,)),
    ]
    for name, cost, start, counts in scenarios:
        for steps in counts:
            seeds = range(max(1, 100000 // steps))  # short runs: many of them (one-shot answers), summed
            adaptive = sum(run(cost, steps, seed, start=start) for seed in seeds)
            fixed = {n: sum(run(cost, steps, seed, n) for seed in seeds) for n in (1, 2)}
            print(f"| {name} | {start} | {steps} × {len(seeds)} | {adaptive / min(fixed.values()):.3f} | "
                  f"{fixed[2] / adaptive:.2f} |")


if __name__ == "__main__":
    main()
