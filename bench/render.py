"""How much does showing a reply cost? Streams a simulated answer through the real terminal display.

    python bench/render.py                     # 4,000 answer tokens at 50 tok/s (80 s), plus the comparisons
    python bench/render.py --tokens 1000 --rate 0   # unpaced: per-token cost only
    python bench/render.py --rate 0 --refresh-every-token --skip-naive   # the cost of one refresh, by quarter

The display is localseek's `ChatView` (Rich), writing to a terminal-like console (truecolor, 100x40)
whose output goes to /dev/null, so what is measured is localseek's own work: parsing, Markdown, layout,
escape codes. "overhead" is the process CPU time spent while streaming (all threads, including the live
region's refresh thread) divided by the generation time the rate implies. "per token" columns are the
CPU time (main thread) of the display call for each token, refreshes included, averaged over each quarter
of the answer: flat means no quadratic re-rendering. The naive row re-renders the whole answer as Markdown on every refresh, which is
what streaming Markdown costs when done simply.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.markdown import Markdown

from localseek.runtime.options import Stats
from localseek.chat.generation import Done, ThinkingDone
from localseek.chat.reasoning import Answer, Reasoning
from localseek.tui import THEME, ChatView

_SECTION = """## Step {n}: handling the {what}

The function below reads the input, keeps a running total and returns the result. It works on
**any iterable** of numbers, and it is `O(n)` in time with `O(1)` extra memory. Note that the
*order* of the items does not matter, which makes it easy to parallelise later.

```python
def total_{n}(values):
    \"\"\"Sum the values, skipping None.\"\"\"
    result = 0
    for value in values:
        if value is None:
            continue
        result += value  # step {n}
    return result
```

1. Read the values from the file.
2. Call `total_{n}` on them.
3. Print the result with two decimals.

| case | input | expected |
|---|---|---|
| empty | `[]` | 0 |
| mixed | `[1, None, 2]` | 3 |

> A quote, to be sure that block quotes stream too: the {what} is done.

"""
_REASONING = (
    "Okay, so the user wants the sum of the numbers. Let me think step by step about what could go wrong: "
    "empty input, None values, very large numbers. Hmm, I should also check whether floats are allowed.\n\n"
)
_TOKEN = re.compile(r"\s?[A-Za-z]+|\s?\d|\s?[^\sA-Za-z\d]+|\s+")


def simulated(text_unit: str, n_tokens: int, kind: str) -> list[str]:
    pieces: list[str] = []
    n = 0
    while len(pieces) < n_tokens:
        n += 1
        unit = text_unit.format(n=n, what=["input", "output", "errors", "tests"][n % 4]) if kind == "answer" else text_unit
        pieces += _TOKEN.findall(unit)
    return pieces[:n_tokens]


SIZE = [100, 40]


def console() -> Console:
    return Console(file=open(os.devnull, "w"), force_terminal=True, color_system="truecolor", width=SIZE[0],
                   height=SIZE[1], theme=THEME, highlight=False)


REFRESH_HZ = [10.0]


def run_view(pieces: list[str], kind: str, rate: float) -> dict[str, object]:
    stats = Stats(prompt_tokens=20, n_ctx=8192)
    view = ChatView(console(), stats=lambda: stats, refresh_hz=REFRESH_HZ[0])
    interval = 1.0 / rate if rate else 0.0
    per_token: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    view.begin_turn()
    if kind == "answer":
        view.handle(Reasoning("Let me think."))
        view.handle(ThinkingDone(0.1, 3))
    next_at = time.perf_counter()
    for i, piece in enumerate(pieces):
        if interval:
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        stats.generated_tokens = i + 1
        stats.generation_seconds = max(1e-9, time.perf_counter() - wall0)
        t0 = time.thread_time()
        view.handle(Answer(piece) if kind == "answer" else Reasoning(piece))
        per_token.append(time.thread_time() - t0)
    t0 = time.perf_counter()
    view.end_turn(Done(stats, "", ""))
    end_turn = time.perf_counter() - t0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    gen_time = len(pieces) * interval if interval else wall
    return {"cpu": cpu, "wall": wall, "gen": gen_time, "per_token": per_token, "end_turn": end_turn}


def run_naive(pieces: list[str], refresh_hz: float, rate: float) -> dict[str, object]:
    """Re-render the whole answer as Markdown at each refresh (as a Live(Markdown(text)) would)."""
    con = console()
    text = ""
    per_token: list[float] = []
    # refreshes happen once per (rate / refresh_hz) tokens when paced; simulate the same ratio unpaced
    every = max(1, round((rate or 50.0) / refresh_hz))
    cpu0 = time.process_time()
    for i, piece in enumerate(pieces):
        t0 = time.thread_time()
        text += piece
        if i % every == 0:
            con.render_lines(Markdown(text), con.options, pad=False)
        per_token.append(time.thread_time() - t0)
    cpu = time.process_time() - cpu0
    gen = len(pieces) / (rate or 50.0)
    return {"cpu": cpu, "wall": cpu, "gen": gen, "per_token": per_token, "end_turn": 0.0}


def quarters(values: list[float]) -> list[float]:
    n = len(values)
    return [statistics.fmean(values[i * n // 4:(i + 1) * n // 4]) * 1e6 for i in range(4)]


def row(name: str, result: dict[str, object], n: int) -> str:
    q = quarters(result["per_token"])  # type: ignore[arg-type]
    overhead = 100.0 * result["cpu"] / result["gen"]  # type: ignore[operator]
    return (f"| {name} | {n} | {result['gen']:.1f} | {result['cpu']:.2f} | {overhead:.2f} % | "
            + " | ".join(f"{v:.0f}" for v in q) + f" | {result['end_turn'] * 1000:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--rate", type=float, default=50.0, help="tokens per second (0 = as fast as possible)")
    ap.add_argument("--size", default="100x40", help="terminal columns x rows")
    ap.add_argument("--refresh-every-token", action="store_true",
                    help="no refresh throttle: the per-token columns then show the cost of one refresh")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-reasoning", action="store_true")
    args = ap.parse_args()
    SIZE[:] = [int(v) for v in args.size.split("x")]
    if args.refresh_every_token:
        REFRESH_HZ[0] = 1e9
    answer = simulated(_SECTION, args.tokens, "answer")
    print(f"# {args.tokens} tokens at {args.rate or 'max'} tok/s; terminal {args.size}; "
          f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs", flush=True)
    print("| display | tokens | generation s | display CPU s | overhead | µs/token Q1 | Q2 | Q3 | Q4 | end of turn ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(row("answer (Markdown, streamed blocks)", run_view(answer, "answer", args.rate), len(answer)), flush=True)
    if not args.skip_reasoning:
        reasoning = simulated(_REASONING, args.tokens, "reasoning")
        print(row("reasoning (live dimmed block)", run_view(reasoning, "reasoning", args.rate), len(reasoning)),
              flush=True)
    if not args.skip_naive:
        print(row("naive: whole answer re-rendered per refresh", run_naive(answer, 12.0, args.rate), len(answer)),
              flush=True)


if __name__ == "__main__":
    main()
