"""Adaptive thread counts against fixed ones, measured in one process, interleaved answer by answer.

    python bench/threads.py                          # nano, 42 held-out problems, modes 1, 2 (the default), auto
    python bench/threads.py --hog 1                  # the same with one competing busy loop (python -c 'while 1: pass')
    python bench/threads.py --hog 1 --pin-hogs       # … kept on one CPU, as `stress --cpu 1` pinned to a core
    python bench/threads.py --model /tmp/mtp-ideal.gguf --n-gen 128 --problems 10    # any GGUF: N tokens after a prompt
    python bench/threads.py --spread 400             # how single-token decode times spread, per fixed count
    python bench/threads.py --problems 12 --wait-idle 600    # start when nothing else runs (a shared machine)

The model is opened as `localseek run` opens it (planned; MTP on when it has an MTP block — `--no-mtp` turns it
off). Each problem is answered greedily once per mode, the modes in every order in turn: `N` fixes N threads (what
`--threads N` does), `auto` adapts from a fresh start for every answer (what a one-shot `run` does, start-up probe
included; its start is judged from how busy the machine was during the answer before, as `run` judges it from the
load).
The cache is cleared before every answer, so each one is prompt + reply. Replies must be identical in
every mode (exit 1 otherwise). Reported: the machine's load before and after, per mode the whole-answer time summed
over problems and its tokens/s, and the ratios that matter — auto against the best fixed mode (time; ≤ 1.02 is
"within 2 %"), and the planner's fixed default against auto (speed-up) — with the per-problem median and range.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localseek.nano.problems import eval_problems, render_prompt
from localseek.planning.plan import Request
from localseek.runtime.engine import Engine
from localseek.runtime.open import Speculation, open_model
from localseek.runtime.options import Sampling
from localseek.runtime.threads import CpuSample, cpu_sample, machine_load

GREEDY = Sampling(temperature=0.0)


def answer(engine: Engine, prompt: list[int], n_gen: int, stop_at_eos: bool) -> tuple[list[int], float]:
    """Greedy reply (at most n_gen tokens) from an empty cache, and the seconds it took, prompt included."""
    engine.decoder.clear()
    out: list[int] = []
    t0 = time.perf_counter()
    gen = engine.generate_tokens(prompt, GREEDY)
    for token in gen:
        if stop_at_eos and engine.is_eog(token):
            break
        out.append(token)
        if len(out) >= n_gen:
            break
    seconds = time.perf_counter() - t0
    gen.close()
    return out, seconds


def set_mode(engine: Engine, mode: str, since: CpuSample) -> None:
    if mode == "auto":
        # As `run` starts: from how busy the machine was while the model loaded — here while the answer before this
        # one ran (this process's own work does not count; sleeping instead would let the CPU cool down first).
        engine.adapt_threads(since=since)
    else:
        engine.set_threads(int(mode))


def spread(engine: Engine, prompt: list[int], counts: list[int], n: int, rounds: int = 3) -> None:
    """Seconds of single-token decodes at each fixed count, in alternating blocks of n: where the time goes."""
    times: dict[int, list[float]] = {c: [] for c in counts}
    for _ in range(rounds):
        for c in counts:
            engine.set_threads(c)
            dc = engine.decoder
            dc.clear()
            dc.decode(prompt)
            for i in range(n):
                if len(dc.tokens) >= dc.n_ctx:
                    dc.clear()
                    dc.decode(prompt)
                t0 = time.perf_counter()
                dc.decode((prompt[i % len(prompt)],))
                times[c].append(time.perf_counter() - t0)
    print("| threads | median | p90 | p99 | max | mean (µs) |")
    print("|---|---|---|---|---|---|")
    for c, ts in times.items():
        q = statistics.quantiles(ts, n=100)
        print(f"| {c} | {statistics.median(ts) * 1e6:.0f} | {q[89] * 1e6:.0f} | {q[98] * 1e6:.0f} | "
              f"{max(ts) * 1e6:.0f} | {statistics.mean(ts) * 1e6:.0f} |")


def hogs(n: int, pin: bool = False) -> list[subprocess.Popen]:
    """n busy loops; with `pin`, each on one CPU of its own (the last ones), as `stress --cpu` on a core."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = "import os\nos.sched_setaffinity(0, {{{}}})\n"
    return [subprocess.Popen([sys.executable, "-c", (pinned.format(cpus[-1 - i]) if pin else "") + "while 1: pass"])
            for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="nano", help="nano (held-out problems) or a .gguf (N tokens after a prompt)")
    ap.add_argument("--problems", type=int, default=42, help="answers per mode (a multiple of 6 balances 3 modes)")
    ap.add_argument("--n-gen", type=int, default=400, help="most tokens per reply")
    ap.add_argument("--modes", default="", help="comma-separated: thread counts and/or auto (default: 1..planned,auto)")
    ap.add_argument("--hog", type=int, default=0, help="competing busy loops to run meanwhile")
    ap.add_argument("--pin-hogs", action="store_true", help="each busy loop on one CPU of its own")
    ap.add_argument("--no-mtp", action="store_true")
    ap.add_argument("--spread", type=int, default=0, help="only time N single-token decodes per fixed count")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="first wait (at most this many seconds) until other programs use under 0.1 CPU")
    args = ap.parse_args()

    nano = args.model == "nano"
    speculation = Speculation(mtp=False if args.no_mtp else None)
    opened = open_model(args.model, Request(n_ctx=1024 if nano else 2048), speculation=speculation)
    engine = opened.engine
    planned = opened.plan.threads
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] or [*map(str, range(1, planned + 1)), "auto"]
    if nano:
        prompts = [engine.tokenize(render_prompt(p.question)) for p in eval_problems(args.problems)]
    else:
        text = "<｜User｜>Write a long story about a lighthouse keeper.<｜Assistant｜>"
        prompts = [engine.tokenize(text + " " * i) for i in range(args.problems)]
    loops: list[subprocess.Popen] = []
    if args.spread:
        try:
            loops = hogs(args.hog, args.pin_hogs)
            print(f"load: {machine_load(1.0).describe()} · competing busy loops: {args.hog}")
            spread(engine, prompts[0], [int(m) for m in modes if m != "auto"], args.spread)
        finally:
            for p in loops:
                p.kill()
                p.wait()
            opened.close()
        return 0
    try:
        since = cpu_sample()
        for mode in modes:  # warm up: graphs built, pages faulted in, every count used once
            set_mode(engine, mode, since)
            answer(engine, prompts[0], args.n_gen, nano)
        deadline = time.monotonic() + args.wait_idle
        while args.wait_idle and time.monotonic() < deadline and machine_load(1.0).busy >= 0.1:
            time.sleep(2.0)
        loops = hogs(args.hog, args.pin_hogs)
        time.sleep(0.5 if loops else 0.0)
        before = machine_load(1.0)
        rows: list[dict[str, float]] = []
        tokens = 0
        # Every order of the modes in turn, so that each follows each other one equally often (what ran just
        # before matters on a loaded machine: OpenMP threads still spinning, the scheduler's memory of the process).
        orders = list(itertools.permutations(modes))
        for i, prompt in enumerate(prompts):
            order = orders[i % len(orders)]
            replies, row = {}, {}
            for mode in order:
                set_mode(engine, mode, since)
                since = cpu_sample()
                replies[mode], row[mode] = answer(engine, prompt, args.n_gen, nano)
            if len({tuple(r) for r in replies.values()}) != 1:
                print(f"problem {i}: replies differ between modes {sorted(replies)}", file=sys.stderr)
                return 1
            tokens += len(prompt) + len(replies[modes[0]])
            rows.append(row)
        after = machine_load(1.0)
    finally:
        for p in loops:
            p.kill()
            p.wait()
        opened.close()

    total = {m: sum(r[m] for r in rows) for m in modes}
    fixed = [m for m in modes if m != "auto"]
    print(f"model {opened.name} · planned threads {planned} · MTP {'on' if opened.drafter else 'off'} · "
          f"{len(rows)} answers, {tokens} tokens (prompt + reply) per mode · competing busy loops: {args.hog}"
          f"{' (pinned, one CPU each)' if args.pin_hogs and args.hog else ''}")
    print(f"load before: {before.describe()}")
    print(f"load after:  {after.describe()}")
    print("| mode | whole answers (s) | tokens/s |")
    print("|---|---|---|")
    for m in modes:
        print(f"| {'adaptive' if m == 'auto' else m + ' fixed'} | {total[m]:.3f} | {tokens / total[m]:.0f} |")
    if "auto" in modes and fixed:
        best = min(fixed, key=total.__getitem__)
        per = [r["auto"] / r[best] for r in rows]
        print(f"auto / best fixed ({best}) time: {total['auto'] / total[best]:.3f} "
              f"(per answer median {statistics.median(per):.3f}, {min(per):.3f}–{max(per):.3f})")
        default = str(planned)
        if default in fixed:
            per = [r[default] / r["auto"] for r in rows]
            print(f"fixed default ({default}) / auto time (speed-up of auto): {total[default] / total['auto']:.2f} "
                  f"(per answer median {statistics.median(per):.2f}, {min(per):.2f}–{max(per):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
