"""MTP self-speculative decoding on localseek-nano: time to answer real problems with and without the MTP block.

    python bench/nano_mtp.py                       # 40 held-out problems, 1 and 2 threads, Q8_0
    python bench/nano_mtp.py --n 100 --threads 1 --quant Q4_0
    python bench/nano_mtp.py --threads 1 --draft-max 2 --fixed      # a fixed draft length instead of the tuned one

The bundled checkpoint is converted (MTP kept) as `localseek run nano` does, then loaded twice the way `run` loads
it: once plain (`--no-mtp`: no MTP block, no hidden-state feed) and once with MTP on, draft length tuned online
(the default). Each held-out problem is answered greedily by both, to the end of the reply, alternating which goes
first; the replies must be identical token for token. Reported per thread count: generation speed (tokens after the
first / time after the first token, summed over problems), whole-answer time, the per-problem speed-up (median and
range) and the MTP drafts accepted. Exits 1 if a reply differs, 2 if nothing could be measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localseek.runtime import speculative
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions, Sampling, SpecStats
from localseek.nano import install
from localseek.nano.problems import eval_problems, render_prompt

GREEDY = Sampling(temperature=0.0)
MAX_NEW = 400


def answer(engine: Engine, prompt: list[int], spec: SpecStats | None = None) -> tuple[list[int], float, float]:
    """Greedy reply tokens, seconds to the first token, seconds for the whole reply."""
    out: list[int] = []
    t0 = time.perf_counter()
    first = 0.0
    gen = engine.generate_tokens(prompt, GREEDY, spec_stats=spec)
    for token in gen:
        if not out:
            first = time.perf_counter() - t0
        if engine.is_eog(token) or len(out) >= MAX_NEW:
            break
        out.append(token)
    total = time.perf_counter() - t0
    gen.close()
    return out, first, total


def measure(path: Path, threads: int, n: int, draft_max: int | None = None, fixed: bool = False) -> dict:
    opts = LoadOptions(n_ctx=1024, n_threads=threads, n_threads_batch=threads)
    plain = Engine.load(path, opts)
    mtp = Engine.load(path, LoadOptions(n_ctx=1024, n_threads=threads, n_threads_batch=threads, load_mtp=True),
                      drafter=speculative.mtp_drafter(draft_max, fixed=fixed))
    counted = SpecStats()
    try:
        problems = eval_problems(n)
        prompts = [plain.tokenize(render_prompt(p.question)) for p in problems]
        for engine in (plain, mtp):  # warm up both (first decodes build graphs, fault pages in)
            answer(engine, prompts[0])
        rows = []
        for i, prompt in enumerate(prompts):
            order = (plain, mtp) if i % 2 == 0 else (mtp, plain)
            got = {id(e): answer(e, prompt, counted if e is mtp else None) for e in order}
            (p_out, p_first, p_total), (m_out, m_first, m_total) = got[id(plain)], got[id(mtp)]
            if p_out != m_out:
                print(f"problem {i}: replies differ with and without MTP", file=sys.stderr)
                raise SystemExit(1)
            rows.append((len(p_out), p_first, p_total, m_first, m_total))
    finally:
        plain.close()
        mtp.close()
    gen_tokens = sum(r[0] - 1 for r in rows)
    plain_gen = sum(r[2] - r[1] for r in rows)
    mtp_gen = sum(r[4] - r[3] for r in rows)
    per_problem = [(r[2] - r[1]) / (r[4] - r[3]) for r in rows if r[4] > r[3]]
    return {
        "threads": threads, "problems": len(rows), "tokens": sum(r[0] for r in rows),
        "plain_tps": gen_tokens / plain_gen, "mtp_tps": gen_tokens / mtp_gen,
        "speedup": plain_gen / mtp_gen,
        "answer_speedup": sum(r[2] for r in rows) / sum(r[4] for r in rows),
        "median": statistics.median(per_problem), "min": min(per_problem), "max": max(per_problem),
        "accepted": counted.accepted, "drafted": counted.drafted,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="held-out problems to answer")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quant", default="Q8_0")
    ap.add_argument("--draft-max", type=int, default=None, help="most drafts per round (default: run's, 3)")
    ap.add_argument("--fixed", action="store_true", help="always draft --draft-max tokens (default: tuned)")
    args = ap.parse_args()
    path = install(args.quant).primary
    drafting = f"fixed {args.draft_max or speculative.DEFAULT_MTP_DRAFT}" if args.fixed else "tuned"
    print(f"localseek-nano {args.quant} ({path.name}), {args.n} held-out problems, greedy, draft length {drafting}, "
          "each reply compared with and without MTP\n")
    print("| threads | reply tokens | plain → MTP (gen. t/s) | speed-up (gen.) | per problem median (min–max) "
          "| whole answer | drafts accepted |")
    print("|---|---|---|---|---|---|---|")
    compared = 0
    for t in args.threads:
        r = measure(path, t, args.n, args.draft_max, args.fixed)  # exits 1 at the first reply that differs
        if not r["problems"]:
            return 2
        compared += r["problems"]
        acc = r["accepted"] / r["drafted"] if r["drafted"] else 0.0
        print(f"| {t} | {r['tokens']} | {r['plain_tps']:.0f} → {r['mtp_tps']:.0f} | **×{r['speedup']:.2f}** "
              f"| ×{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f}) | ×{r['answer_speedup']:.2f} "
              f"| {acc:.0%} ({r['accepted']}/{r['drafted']}) |", flush=True)
    print(f"\nreplies identical with and without MTP: {compared} of {compared} compared")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
