#!/usr/bin/env python3
"""localseek vs llama.cpp's own `llama-bench`, measured in one run on the same GGUF with the same threads.

    python bench/vs_llamacpp.py                    # generate a ~1.3B-param qwen2 model at Q4_0, compare, delete it
    python bench/vs_llamacpp.py --model X.gguf     # any GGUF (MTP models / --draft: also acceptance and speed-up)

What it does:
1. builds `llama-bench` (CPU, Release, llama.cpp's defaults — as the llama-cpp-python wheel is built) from the
   llama.cpp sources vendored in the installed llama-cpp-python's sdist (pip downloads it), in a cache directory
   outside the repository (LOCALSEEK_BENCH_CACHE, default ~/.cache/localseek-bench);
2. without --model, writes an F16 qwen2-layout model (Qwen2.5-1.5B shapes, the test vocabulary) with gguf-py and
   quantizes it to Q4_0 with llama.cpp's own quantizer (≈0.8 GB), deleted at the end unless --keep-model;
3. measures the machine's memory bandwidth (a compiled STREAM-like read and copy kernel, numpy as fallback);
4. runs `llama-bench` and `localseek bench` alternately (A B, B A, …) for --rounds rounds: ppN and tgN, and a short
   prompt (pp32) for the warm time to first token; reports each round's ratio and their median and spread;
5. reports generation speed as a share of the roofline (read bandwidth ÷ bytes of weights read per token);
6. with an MTP model (or --draft), also runs `localseek bench` with the drafter: acceptance rate and speed-up.

Exit status: 0 when it measured (whatever the numbers), 1 when it could not (build failed, a tool crashed, no output).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llamacpp_build import build_tools, cache_dir, llama_cpp_python_version


def log(msg: str) -> None:
    print(f"[vs_llamacpp] {msg}", file=sys.stderr, flush=True)


class CouldNotMeasure(Exception):
    pass


# -- 1. the test model ----------------------------------------------------------------------------------------------
def write_test_model(out: Path, *, n_layer: int = 28, d: int = 1536, n_ff: int = 8960, n_head: int = 12,
                     n_head_kv: int = 2, qtype: str = "Q4_0") -> Path:
    """Qwen2.5-1.5B shapes (1.3 B parameters with the small test vocabulary) → F16 GGUF → `qtype` with llama.cpp."""
    import gguf
    import llama_cpp
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from factory import _write_vocab, build_vocab

    vocab = build_vocab()
    n_vocab, hd = len(vocab.tokens), d // n_head
    f16 = out.with_name(out.stem + "-f16.gguf")
    w = gguf.GGUFWriter(str(f16), "qwen2")
    w.add_name("localseek-bench-qwen2-1.3b")
    w.add_context_length(4096)
    w.add_embedding_length(d)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _write_vocab(w, vocab, "deepseek-r1-qwen")
    shapes: list[tuple[str, tuple[int, ...], type]] = [("token_embd.weight", (n_vocab, d), np.float16)]
    for i in range(n_layer):
        p = f"blk.{i}."
        shapes += [
            (p + "attn_norm.weight", (d,), np.float32),
            (p + "attn_q.weight", (n_head * hd, d), np.float16), (p + "attn_q.bias", (n_head * hd,), np.float32),
            (p + "attn_k.weight", (n_head_kv * hd, d), np.float16), (p + "attn_k.bias", (n_head_kv * hd,), np.float32),
            (p + "attn_v.weight", (n_head_kv * hd, d), np.float16), (p + "attn_v.bias", (n_head_kv * hd,), np.float32),
            (p + "attn_output.weight", (d, n_head * hd), np.float16),
            (p + "ffn_norm.weight", (d,), np.float32),
            (p + "ffn_gate.weight", (n_ff, d), np.float16), (p + "ffn_up.weight", (n_ff, d), np.float16),
            (p + "ffn_down.weight", (d, n_ff), np.float16),
        ]
    shapes += [("output_norm.weight", (d,), np.float32), ("output.weight", (n_vocab, d), np.float16)]
    for name, shape, dt in shapes:
        w.add_tensor_info(name, shape, np.dtype(dt), int(np.prod(shape)) * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, shape, dt in shapes:
        if name.endswith("norm.weight"):
            arr = np.ones(shape, dtype=dt)
        else:
            arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dt)
        w.write_tensor_data(arr)
    w.close()
    from localseek.runtime.engine import _install_log_capture

    _install_log_capture()  # llama.cpp's quantizer log goes to localseek's capture, not the terminal
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.nthread = os.cpu_count() or 2
    part = out.with_name(out.name + ".part")
    rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(part).encode(), params)
    f16.unlink()
    if rc != 0:
        raise CouldNotMeasure(f"llama_model_quantize failed with {rc}")
    part.replace(out)
    return out


# -- 2. memory bandwidth --------------------------------------------------------------------------------------------
_STREAM_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
#include <string.h>
#include <stdint.h>
int main(int argc, char **argv) {
    size_t n = (size_t)atol(argv[1]) / sizeof(double); int reps = atoi(argv[2]);
    double *a = aligned_alloc(64, n * sizeof(double)), *b = aligned_alloc(64, n * sizeof(double));
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) { a[i] = 1.0; b[i] = 0.0; }
    double best_read = 1e30, best_copy = 1e30, sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime(), s = 0;
        #pragma omp parallel for reduction(+:s)
        for (size_t i = 0; i < n; i++) s += a[i];
        double t1 = omp_get_wtime();
        #pragma omp parallel for
        for (size_t i = 0; i < n; i++) b[i] = a[i];
        double t2 = omp_get_wtime();
        sink += s + b[n / 2];
        if (t1 - t0 < best_read) best_read = t1 - t0;
        if (t2 - t1 < best_copy) best_copy = t2 - t1;
    }
    printf("%.6e %.6e %g\n", n * sizeof(double) / best_read, 2.0 * n * sizeof(double) / best_copy, sink > 0 ? 0.0 : 1.0);
    return 0;
}
"""


def memory_bandwidth(threads: int, nbytes: int = 1 << 30, reps: int = 7) -> dict:
    """Best-of-reps read and copy bandwidth (bytes/s) with `threads` OpenMP threads (numpy, 1 thread, as fallback)."""
    exe = cache_dir() / "stream-bw"
    if not exe.exists() and shutil.which("cc"):
        src = cache_dir() / "stream-bw.c"
        src.write_text(_STREAM_C)
        subprocess.run(["cc", "-O3", "-march=native", "-ffast-math", "-fopenmp", str(src), "-o", str(exe)], check=False)
    if exe.exists():
        out = subprocess.run([str(exe), str(nbytes), str(reps)], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(threads)), check=True).stdout.split()
        return {"read": float(out[0]), "copy": float(out[1]), "method": f"C/OpenMP, {threads} threads, best of {reps}"}
    import numpy as np

    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    best_r = best_c = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        a.sum()
        t1 = time.perf_counter()
        np.copyto(b, a)
        t2 = time.perf_counter()
        best_r, best_c = min(best_r, t1 - t0), min(best_c, t2 - t1)
    return {"read": a.nbytes / best_r, "copy": 2 * a.nbytes / best_c, "method": "numpy, 1 thread"}


def bytes_per_token(model: Path) -> int:
    """Weight bytes a decode step reads: every tensor, except the token embedding (one row) and, for MoE, the experts
    a token is not routed to (the used share of each expert tensor)."""
    from localseek.ggufinfo import read_gguf

    info = read_gguf(model)
    names = {t.name for t in info.tensors}
    nextn = int(info.get("nextn_predict_layers", 0) or 0)
    mtp_prefix = f"blk.{int(info.get('block_count', 0)) - nextn}." if nextn else None
    n_expert = int(info.get("expert_count", 0) or 0)
    n_used = int(info.get("expert_used_count", 0) or 0)
    total = 0
    for t in info.tensors:
        if mtp_prefix and t.name.startswith(mtp_prefix):
            continue  # the MTP block is not read by plain decoding
        if "_exps." in t.name and n_expert and n_used:
            total += t.n_bytes * n_used // n_expert  # MoE: only the routed experts a token uses
            continue
        if t.name == "token_embd.weight" and "output.weight" in names:
            n_rows = t.shape[-1] if len(t.shape) > 1 else 1  # gguf-py shapes are ggml's ne: (n_embd, n_vocab)
            total += t.n_bytes // max(n_rows, 1)
        else:
            total += t.n_bytes
    return total


# -- 3. the two benchmarks ------------------------------------------------------------------------------------------
def run_llama_bench(exe: Path, model: Path, *, threads: int, n_prompt: int, n_gen: int, reps: int,
                    batch: int) -> dict[str, list[float]]:
    """{test: samples in tokens/s} from llama-bench's JSON (its defaults, flash attention off like localseek's)."""
    cmd = [str(exe), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
           "-b", str(batch), "-ub", str(batch), "-fa", "0", "-o", "json"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise CouldNotMeasure(f"llama-bench failed ({r.returncode}): {r.stderr[-800:]}")
    out: dict[str, list[float]] = {}
    for row in json.loads(r.stdout):
        n = row["n_prompt"] or row["n_gen"]
        test = f"pp{n}" if row["n_prompt"] else f"tg{n}"
        out[test] = [n * 1e9 / ns for ns in row["samples_ns"]]
    return out


def run_localseek_bench(model: Path, *, threads: int, n_prompt: int, n_gen: int, reps: int, batch: int,
                        extra: tuple[str, ...] = ("--no-mtp",)) -> dict:
    cmd = [sys.executable, "-m", "localseek", "bench", str(model), "-t", str(threads), "-p", str(n_prompt),
           "-n", str(n_gen), "-r", str(reps), "-b", str(batch), "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if r.returncode != 0:
        raise CouldNotMeasure(f"localseek bench failed ({r.returncode}): {r.stderr[-800:]}")
    return json.loads(r.stdout)


def _samples(doc: dict) -> dict[str, list[float]]:
    return {x["test"]: x["samples_tps"] for x in doc["results"]}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def compare(exe: Path, model: Path, args: argparse.Namespace) -> dict:
    """Alternate llama-bench and localseek bench test by test (pp, tg, short pp for TTFT), swapping who goes first
    each round, so that each pair is measured under the same machine conditions; ratio = localseek ÷ llama.cpp."""
    rounds = []
    kw = {"threads": args.threads, "reps": args.reps, "batch": args.batch}
    tests = [(f"pp{args.n_prompt}", args.n_prompt, 0), (f"tg{args.n_gen}", 0, args.n_gen),
             (f"ttft{args.ttft_prompt}", args.ttft_prompt, 0)]
    bandwidth = []
    for i in range(args.rounds):
        bandwidth.append(memory_bandwidth(args.threads))
        got: dict[str, dict[str, list[float]]] = {"llama": {}, "localseek": {}}
        for j, (name, n_p, n_g) in enumerate(tests):
            order = ("llama", "localseek") if (i + j) % 2 == 0 else ("localseek", "llama")
            log(f"round {i + 1}/{args.rounds}, {name}: {' then '.join(order)}")
            for who in order:
                if who == "llama":
                    out = run_llama_bench(exe, model, n_prompt=n_p, n_gen=n_g, **kw)
                else:
                    doc = run_localseek_bench(model, n_prompt=n_p, n_gen=n_g, **kw)
                    out = _samples(doc)
                    got.setdefault("overhead", {})[name] = doc["results"][0].get("loop_overhead")
                got[who][name] = next(iter(out.values()))
        rounds.append(got)
    report: dict = {"rounds": rounds, "tests": {}, "bandwidth_rounds": bandwidth}
    for t, _, _ in tests:
        lo = [statistics.median(r["localseek"][t]) for r in rounds]
        ll = [statistics.median(r["llama"][t]) for r in rounds]
        ratios = [a / b for a, b in zip(lo, ll)]
        entry = {"localseek_tps": _spread(lo), "llamacpp_tps": _spread(ll), "ratio": _spread(ratios)}
        overheads = [r["overhead"][t] for r in rounds if r.get("overhead", {}).get(t) is not None]
        if overheads:  # localseek's wall time beyond llama.cpp's own decode time, inside the same runs
            entry["loop_overhead"] = _spread(overheads)
        if t.startswith("ttft"):  # as times: localseek TTFT ÷ llama.cpp TTFT (lower is better; goal ≤ 1.2)
            n = args.ttft_prompt
            entry["localseek_ms"] = _spread([n / x * 1000 for x in lo])
            entry["llamacpp_ms"] = _spread([n / x * 1000 for x in ll])
            entry["ttft_ratio"] = _spread([b / a for a, b in zip(lo, ll)])
        report["tests"][t] = entry
    return report


def speculative_report(model: Path, args: argparse.Namespace) -> dict | None:
    from localseek import speculative
    from localseek.ggufinfo import read_gguf

    info = read_gguf(model)
    extra: tuple[str, ...]
    if args.draft:
        extra = ("--draft", str(args.draft))
    elif speculative.mtp_layers(info):
        extra = ("--mtp",)
    else:
        return None
    if args.prompt:
        extra += ("--prompt", args.prompt)
    if args.draft_max:
        extra += ("--draft-max", str(args.draft_max))
    log(f"speculative decoding: localseek bench {' '.join(extra)}")
    doc = run_localseek_bench(model, threads=args.threads, n_prompt=0, n_gen=args.n_gen, reps=args.reps,
                              batch=args.batch, extra=extra)
    plain = next(x for x in doc["results"] if x["test"] == f"tg{args.n_gen}")
    spec = next(x for x in doc["results"] if "+" in x["test"])
    return {"drafter": doc["spec"]["drafter"], "plain_tps": plain["median_tps"], "spec_tps": spec["median_tps"],
            "speedup": spec["extra"]["speedup"], "acceptance": spec.get("acceptance"), "accepted": spec["accepted"],
            "drafted": spec["drafted"], "spec_samples": spec["samples_tps"], "plain_samples": plain["samples_tps"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="GGUF to measure (default: generate a ~0.8 GB Q4_0 qwen2 model)")
    ap.add_argument("--threads", "-t", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating A/B rounds")
    ap.add_argument("--reps", "-r", type=int, default=3, help="repetitions per test inside each tool")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-b", "--batch", type=int, default=512)
    ap.add_argument("--ttft-prompt", type=int, default=32, help="prompt tokens for the time-to-first-token test")
    ap.add_argument("--draft", type=Path, help="draft model for the speculative measurement")
    ap.add_argument("--draft-max", type=int)
    ap.add_argument("--prompt", help="text to generate after in the speculative measurement")
    ap.add_argument("--type", default="Q4_0", choices=["Q4_0", "Q8_0", "Q4_K_M", "Q6_K"],
                    help="type of the generated model (default Q4_0)")
    ap.add_argument("--keep-model", action="store_true", help="keep the generated model (in the cache directory)")
    ap.add_argument("--json", type=Path, help="also write the full report here")
    args = ap.parse_args()

    generated: Path | None = None
    try:
        exe = build_tools(llama_cpp_python_version(), ("llama-bench",), log=log) / "llama-bench"
        model = args.model
        if model is None:
            target = cache_dir() / f"bench-qwen2-1.3b-{args.type.lower()}.gguf"
            if not target.exists():
                log(f"writing the F16 test model and quantizing it to {args.type} (a few minutes)")
                write_test_model(target, qtype=args.type)
            model = generated = target
        if not model.exists():
            raise CouldNotMeasure(f"no model at {model}")
        report = compare(exe, model, args)
        reads = [b["read"] for b in report["bandwidth_rounds"]]
        bw = {"read": statistics.median(reads), "read_max": max(reads), "read_min": min(reads),
              "copy": statistics.median(b["copy"] for b in report["bandwidth_rounds"]),
              "method": report["bandwidth_rounds"][0]["method"] + ", measured before each round; median"}
        bpt = bytes_per_token(model)
        tg = report["tests"][f"tg{args.n_gen}"]
        roof = bw["read"] / bpt
        report.update(
            model=str(model), model_bytes=model.stat().st_size, bytes_per_token=bpt, bandwidth=bw,
            roofline_tps=roof, tg_share_of_roofline={
                "localseek": tg["localseek_tps"]["median"] / roof, "llamacpp": tg["llamacpp_tps"]["median"] / roof},
            threads=args.threads, llama_cpp_python=llama_cpp_python_version(),
        )
        report["speculative"] = speculative_report(model, args)
    except (CouldNotMeasure, RuntimeError, subprocess.CalledProcessError, OSError, KeyError, ValueError,
            StopIteration) as exc:
        log(f"could not measure: {exc}")
        return 1
    finally:
        if generated is not None and not args.keep_model:
            generated.unlink(missing_ok=True)
    print_report(report, args)
    if args.json:
        fd, tmp = tempfile.mkstemp(dir=args.json.parent or ".", suffix=".part")
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, args.json)
    return 0


def print_report(rep: dict, args: argparse.Namespace) -> None:
    def f(s: dict, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
        return f"{fmt.format(s['median'] * scale)} ({fmt.format(s['min'] * scale)}–{fmt.format(s['max'] * scale)})"

    print(f"model: {rep['model']} ({rep['model_bytes'] / 1e9:.2f} GB), threads {rep['threads']}, "
          f"{args.rounds} alternating rounds × {args.reps} repetitions; median (min–max) over rounds")
    print("| test | llama.cpp t/s | localseek t/s | localseek ÷ llama.cpp | localseek time outside llama.cpp |")
    print("|---|---|---|---|---|")
    for t, e in rep["tests"].items():
        if t.startswith("ttft"):
            continue
        ov = f(e["loop_overhead"], 100, "{:.3f}") + " %" if "loop_overhead" in e else "n/a"
        print(f"| {t} | {f(e['llamacpp_tps'])} | {f(e['localseek_tps'])} | {f(e['ratio'], fmt='{:.3f}')} | {ov} |")
    e = rep["tests"][f"ttft{args.ttft_prompt}"]
    print(f"| warm TTFT, {args.ttft_prompt}-token prompt (ms) | {f(e['llamacpp_ms'], fmt='{:.1f}')} | "
          f"{f(e['localseek_ms'], fmt='{:.1f}')} | {f(e['ttft_ratio'], fmt='{:.3f}')} (time ratio) |")
    bw = rep["bandwidth"]
    print(f"memory bandwidth: read {bw['read'] / 1e9:.2f} GB/s ({bw['read_min'] / 1e9:.2f}–{bw['read_max'] / 1e9:.2f}), "
          f"copy {bw['copy'] / 1e9:.2f} GB/s ({bw['method']}); "
          f"weights read per token {rep['bytes_per_token'] / 1e6:.1f} MB → roofline {rep['roofline_tps']:.2f} t/s; "
          f"tg share of roofline: localseek {rep['tg_share_of_roofline']['localseek']:.0%}, "
          f"llama.cpp {rep['tg_share_of_roofline']['llamacpp']:.0%}")
    s = rep.get("speculative")
    if s:
        acc = f"{s['acceptance']:.1%}" if s["acceptance"] is not None else "n/a"
        print(f"speculative ({s['drafter']}): acceptance {acc} ({s['accepted']}/{s['drafted']}), "
              f"tg {s['plain_tps']:.2f} → {s['spec_tps']:.2f} t/s, speed-up ×{s['speedup']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
