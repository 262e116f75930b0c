#!/usr/bin/env python3
"""What a network hop costs: one model run here, split with one worker, and split with two workers on loopback.

    python bench/rpc.py                  # writes a ~0.8 GB Q4_0 qwen2 (Qwen2.5-1.5B shapes), measures, deletes it
    python bench/rpc.py --model X.gguf   # any GGUF
    python bench/rpc.py --tiny           # a 12-layer model of 0.4M parameters: compute ≈ 0, what is left is the hop

For each configuration — all layers here; half here and half on worker A; a third each here, on A and on B — it
measures prompt processing (ppN: N random tokens from an empty cache to the first sampled token) and generation
(tgN: N tokens one at a time, greedy), `--rounds` times, the configurations interleaved in every round so drift
hits all of them alike. All of them run with the same threads per process on the same machine: the compute is the
same work, so the difference is what the split adds — the RPC round trips (serialising the graph inputs, the
loopback TCP stack, the worker waking up) — per token and per worker. Bytes sent to and received from each worker
come from the kernel's TCP counters (TCP_INFO) around the timed runs.

The workers are `localseek worker` processes (llama.cpp's RPC server in-process), started and stopped here. Output:
a table on stderr, the numbers as JSON on stdout (or --json FILE). Exit 0 when it measured, 1 when it could not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def log(msg: str) -> None:
    print(f"[rpc] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_worker(threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "localseek", "worker", "--port", str(port), "--threads",
                             str(threads)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if line.startswith("listening on"):
            return proc, f"127.0.0.1:{port}"
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"worker on port {port} did not start")


def options(n_layer: int, threads: int, n_ctx: int, here: int, workers: list[str]):
    """LoadOptions for `here` layers on this machine and the rest shared evenly by `workers` (output head here)."""
    from localseek.planning.cluster import OUTPUT_OVERRIDE
    from localseek.runtime.options import LoadOptions

    base = LoadOptions(n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, n_ubatch=512,
                       flash_attn=True)
    if not workers:
        return base
    rest = n_layer - here
    counts = [rest // len(workers) + (1 if i < rest % len(workers) else 0) for i in range(len(workers))]
    counts[-1] += 1  # the output slot (its tensors come back here by override)
    from dataclasses import replace

    return replace(base, n_gpu_layers=n_layer + 1 - here, tensor_split=tuple(float(c) for c in counts),
                   rpc_devices=tuple((w, 0) for w in workers), tensor_overrides=((OUTPUT_OVERRIDE, "CPU"),))


@contextmanager
def no_repack():
    """Load without llama.cpp's CPU_REPACK buffer type (`use_extra_bufts = false`), as a worker's CPU runs: the RPC
    server allocates plain CPU buffers, so repackable types (Q4_0, …) use the slower kernels there."""
    import llama_cpp._internals as internals

    original = internals.LlamaModel

    class _Plain(original):  # type: ignore[misc, valid-type]
        def __init__(self, *, path_model: str, params, verbose: bool = True) -> None:
            params.use_extra_bufts = False
            super().__init__(path_model=path_model, params=params, verbose=verbose)

    internals.LlamaModel = _Plain
    try:
        yield
    finally:
        internals.LlamaModel = original


def measure(engine, endpoints: list[str], n_prompt: int, n_gen: int, rng: random.Random) -> dict:
    from localseek.runtime import rpc
    from localseek.runtime.bench import time_generation, time_prompt

    n_vocab = engine.llm.n_vocab()
    prompt = [engine.llm.token_bos()] + [rng.randrange(n_vocab) for _ in range(n_prompt - 1)]
    before = rpc.traffic(tuple(endpoints))
    pp = time_prompt(engine, prompt)
    mid = rpc.traffic(tuple(endpoints))
    tg = time_generation(engine, [engine.llm.token_bos()], n_gen)
    after = rpc.traffic(tuple(endpoints))

    def delta(a: dict, b: dict) -> dict:
        return {ep: (b.get(ep, (0, 0))[0] - a.get(ep, (0, 0))[0], b.get(ep, (0, 0))[1] - a.get(ep, (0, 0))[1])
                for ep in endpoints}

    return {"pp_s": pp, "tg_s": tg, "pp_bytes": delta(before, mid), "tg_bytes": delta(mid, after)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a GGUF (default: write a ~0.8 GB Q4_0 qwen2 and delete it after)")
    ap.add_argument("--tiny", action="store_true",
                    help="a tiny 12-layer qwen2 instead: per-token time is then almost all overhead and hops")
    ap.add_argument("--threads", type=int, default=2, help="threads of every process (default 2)")
    ap.add_argument("--n-prompt", type=int, default=256)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the results here instead of stdout")
    args = ap.parse_args()

    from localseek.models.gguf_info import read_gguf
    from localseek.runtime import rpc
    from localseek.runtime.engine import Engine

    if not rpc.available():
        log("this llama-cpp-python has no RPC backend (see `localseek doctor`)")
        return 1
    tmp = None
    model = args.model
    if model is None:
        tmp = Path(tempfile.mkdtemp(prefix="localseek-rpc-bench-"))
        if args.tiny:
            sys.path.insert(0, str(ROOT / "tests"))
            from factory import TinyConfig, write_qwen2_gguf

            model = write_qwen2_gguf(tmp / "tiny.gguf", TinyConfig(n_layer=12, weights="random", seed=1))
        else:
            from vs_llamacpp import write_test_model

            log("writing the test model (Qwen2.5-1.5B shapes, Q4_0)")
            model = write_test_model(tmp / "bench-q4_0.gguf")
    info = read_gguf(model)
    n_layer = int(info.get("block_count"))
    n_embd = int(info.get("embedding_length"))
    workers: list[subprocess.Popen] = []
    engines: dict[str, Engine] = {}
    try:
        a_proc, a = start_worker(args.threads)
        workers.append(a_proc)
        b_proc, b = start_worker(args.threads)
        workers.append(b_proc)
        configs = {
            "local": (n_layer, []),
            "local, no repack": (n_layer, []),
            "1 worker": (n_layer // 2, [a]),
            "2 workers": (n_layer // 3, [a, b]),
        }
        for name, (here, ws) in configs.items():
            log(f"loading: {name} ({here} layers here{', ' + ', '.join(ws) if ws else ''})")
            with no_repack() if "no repack" in name else nullcontext():
                engines[name] = Engine.load(model, options(n_layer, args.threads, 2048, here, ws))
        rng = random.Random(0)
        samples: dict[str, list[dict]] = {name: [] for name in configs}
        for name, engine in engines.items():  # warm-up
            measure(engine, configs[name][1], 32, 4, rng)
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for name in order:
                samples[name].append(measure(engines[name], configs[name][1], args.n_prompt, args.n_gen, rng))
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} tg {args.n_gen / samples[n][-1]['tg_s']:.1f} t/s" for n in engines))
        report = summarize(samples, configs, args, n_layer, n_embd, model)
    finally:
        for engine in engines.values():
            engine.close()
        for proc in workers:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            for f in tmp.glob("*"):
                f.unlink()
            tmp.rmdir()
    print_report(report)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


def summarize(samples: dict, configs: dict, args: argparse.Namespace, n_layer: int, n_embd: int,
              model: Path) -> dict:
    med = statistics.median
    out: dict = {"model": model.name, "size_bytes": model.stat().st_size, "n_layer": n_layer, "n_embd": n_embd,
                 "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen, "rounds": args.rounds,
                 "machine": os.uname().machine, "cpus": os.cpu_count(), "configs": {}}
    for name, runs in samples.items():
        here, ws = configs[name]
        tg = [args.n_gen / r["tg_s"] for r in runs]
        pp = [args.n_prompt / r["pp_s"] for r in runs]
        tg_bytes = {ep: [(r["tg_bytes"][ep][0] + r["tg_bytes"][ep][1]) / args.n_gen for r in runs] for ep in ws}
        pp_bytes = {ep: [(r["pp_bytes"][ep][0] + r["pp_bytes"][ep][1]) / args.n_prompt for r in runs] for ep in ws}
        out["configs"][name] = {
            "layers_here": here, "workers": ws,
            "tg_tps_median": round(med(tg), 3), "tg_tps": [round(x, 3) for x in tg],
            "pp_tps_median": round(med(pp), 3), "pp_tps": [round(x, 3) for x in pp],
            "tg_ms_per_token": round(1000 / med(tg), 4),
            "tg_ms_per_token_best": round(1000 / max(tg), 4),
            "tg_bytes_per_token_per_worker": {ep: round(med(v)) for ep, v in tg_bytes.items()},
            "pp_bytes_per_token_per_worker": {ep: round(med(v)) for ep, v in pp_bytes.items()},
        }
    base = out["configs"]["local"]["tg_ms_per_token"]
    one = out["configs"]["1 worker"]["tg_ms_per_token"]
    two = out["configs"]["2 workers"]["tg_ms_per_token"]
    out["added_ms_per_token_per_worker"] = {"1 worker": round(one - base, 4), "2 workers": round((two - base) / 2, 4)}
    best = {name: out["configs"][name]["tg_ms_per_token_best"] for name in ("local", "1 worker", "2 workers")}
    out["added_ms_per_token_per_worker_best"] = {
        "1 worker": round(best["1 worker"] - best["local"], 4),
        "2 workers": round((best["2 workers"] - best["local"]) / 2, 4)}
    # The layers on a worker run without repacking: expect each share at its own speed, the rest is the hop.
    plain = out["configs"]["local, no repack"]["tg_ms_per_token"]
    here1, here2 = configs["1 worker"][0] / n_layer, configs["2 workers"][0] / n_layer
    out["repack_loss_ms_per_token"] = round(plain - base, 4)
    out["hop_ms_per_token_per_worker"] = {
        "1 worker": round(one - (here1 * base + (1 - here1) * plain), 4),
        "2 workers": round((two - (here2 * base + (1 - here2) * plain)) / 2, 4)}
    return out


def print_report(rep: dict) -> None:
    log(f"{rep['model']} ({rep['size_bytes'] / 2**30:.2f} GiB, {rep['n_layer']} layers, n_embd {rep['n_embd']}), "
        f"{rep['threads']} threads per process, {rep['rounds']} rounds, loopback")
    log(f"{'config':<16} {'layers here':>11} {'pp t/s':>9} {'tg t/s':>9} {'tg ms/token':>12} {'best':>8} "
        f"{'tg B/token/worker':>18} {'pp B/token/worker':>18}")
    for name, c in rep["configs"].items():
        tgb = "/".join(str(v) for v in c["tg_bytes_per_token_per_worker"].values()) or "-"
        ppb = "/".join(str(v) for v in c["pp_bytes_per_token_per_worker"].values()) or "-"
        log(f"{name:<16} {c['layers_here']:>11} {c['pp_tps_median']:>9.2f} {c['tg_tps_median']:>9.2f} "
            f"{c['tg_ms_per_token']:>12.3f} {c['tg_ms_per_token_best']:>8.3f} {tgb:>18} {ppb:>18}")
    for key, what in (("added_ms_per_token_per_worker", "medians"), ("added_ms_per_token_per_worker_best", "best runs")):
        added = rep[key]
        log(f"added per token per worker ({what}): {added['1 worker']:.3f} ms (1 worker), "
            f"{added['2 workers']:.3f} ms (2 workers)")
    hop = rep["hop_ms_per_token_per_worker"]
    log(f"of which the worker's unrepacked kernels: {rep['repack_loss_ms_per_token']:.3f} ms per token for the whole "
        f"model; the hop itself: {hop['1 worker']:.3f} ms (1 worker), {hop['2 workers']:.3f} ms per worker (2 workers)")


if __name__ == "__main__":
    sys.exit(main())
