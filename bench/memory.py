"""Predicted vs measured memory: the planner's numbers against llama.cpp's reported buffers and the process's
peak RSS, on generated models of more than 1 GB (random weights, real layouts, quantized by llama.cpp).

    python bench/memory.py                 # generate, measure, print a markdown table, delete the models
    python bench/memory.py --keep          # keep the generated models in --workdir for reruns

Each configuration runs in its own process so that peak RSS (VmHWM) belongs to that load alone. The child
loads through the same path as `localseek run`: header → plan → LoadOptions → llama.cpp, then evaluates a
prompt of one micro-batch and generates a few tokens so that the compute buffer and the weights are touched.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

MiB = 1024**2


def models(workdir: Path) -> dict[str, Path]:
    import gguf
    from inventory import QWEN_1_5B, V2_LITE, quantize, write_random_weights

    # A small V2-Lite-shaped MoE: real deepseek2 layout (27 layers, MLA, 2 shared + routed experts).
    moe_shape = replace(V2_LITE, name="bench-deepseek2-moe", n_embd=1024, n_head=16, n_expert=32, n_ff=4096,
                        n_ff_exp=512, n_expert_used=6)
    out = {}
    for key, shape, ftype in [
        ("qwen2-1.5B-Q8_0", QWEN_1_5B, gguf.LlamaFileType.MOSTLY_Q8_0),
        ("qwen2-1.5B-Q4_0", QWEN_1_5B, gguf.LlamaFileType.MOSTLY_Q4_0),
        ("deepseek2-moe-Q8_0", moe_shape, gguf.LlamaFileType.MOSTLY_Q8_0),
    ]:
        dest = workdir / f"{key}.gguf"
        if not dest.exists():
            source = workdir / f"{shape.name}-F16.gguf"
            if not source.exists():
                t = time.time()
                write_random_weights(source, shape)
                print(f"wrote {source.name} ({source.stat().st_size / 1e9:.2f} GB) in {time.time() - t:.0f}s",
                      file=sys.stderr)
            quantize(source, dest, int(ftype))
            print(f"quantized {dest.name} ({dest.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)
        out[key] = dest
    for f16 in workdir.glob("*-F16.gguf"):
        f16.unlink()
    return out


def _mib(log: str, pattern: str) -> float:
    return sum(float(x) for x in re.findall(pattern, log))


def _status_kib(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(m[1]) if m else 0


def child(model: Path, n_ctx: int, mmap: bool, threads: int) -> dict:
    from localseek.runtime.engine import Engine, captured_log
    from localseek.runtime.options import Sampling
    from localseek.models.gguf_info import read_gguf
    from localseek.runtime.open import load_options, plan_for
    from localseek.planning.plan import Request

    baseline = _status_kib("VmRSS") * 1024
    info = read_gguf(model)
    plan = plan_for(info, Request(n_ctx=n_ctx, mmap=mmap, threads=threads))
    engine = Engine.load(model, load_options(plan))
    log = captured_log()
    prompt = engine.tokenize(" ".join(["hello world"] * (plan.n_ubatch // 2)))[: plan.n_ubatch]
    list(engine.stream(prompt, Sampling(temperature=0, max_tokens=8)))
    peak = _status_kib("VmHWM") * 1024
    anon, file_backed = _status_kib("RssAnon") * 1024, _status_kib("RssFile") * 1024
    reported = {
        "model_mib": _mib(log, r"model buffer size =\s*([\d.]+) MiB"),
        "kv_mib": _mib(log, r"KV buffer size =\s*([\d.]+) MiB"),
        "compute_mib": _mib(log, r"compute buffer size =\s*([\d.]+) MiB"),
        "output_mib": _mib(log, r"output buffer size =\s*([\d.]+) MiB"),
        "buffers": re.findall(r"(\S+) model buffer size =\s*([\d.]+) MiB", log),
    }
    engine.close()
    return {
        "model": model.name, "file_mib": model.stat().st_size / MiB, "n_ctx": plan.n_ctx, "n_ubatch": plan.n_ubatch,
        "mmap": mmap, "baseline_rss_mib": baseline / MiB, "peak_rss_mib": peak / MiB,
        "rss_anon_mib": anon / MiB, "rss_file_mib": file_backed / MiB,
        "predicted": {
            "weights_mib": plan.ram.weights / MiB, "kv_mib": plan.ram.kv_cache / MiB,
            "compute_mib": plan.ram.compute / MiB, "other_mib": plan.ram.other / MiB, "total_mib": plan.ram.total / MiB,
            "compute_reserved_mib": fp_compute(info, plan) / MiB,
        },
        "reported": reported,
    }


def fp_compute(info, plan) -> int:
    from localseek.planning.footprint import from_gguf

    return from_gguf(info).compute_bytes(plan.n_ctx, plan.n_ubatch, plan.flash_attn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/localseek-bench-memory"))
    ap.add_argument("--keep", action="store_true", help="keep the generated models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "CTX", "MMAP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, ctx, mmap = args.child
        print(json.dumps(child(Path(model), int(ctx), mmap == "1", args.threads)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        paths = models(args.workdir)
        rows = []
        for key, ctx, mmap in [
            ("qwen2-1.5B-Q8_0", 4096, True), ("qwen2-1.5B-Q8_0", 4096, False), ("qwen2-1.5B-Q4_0", 16384, True),
            ("qwen2-1.5B-Q4_0", 16384, False), ("deepseek2-moe-Q8_0", 4096, True),
            ("deepseek2-moe-Q8_0", 32768, False),
        ]:
            r = subprocess.run(
                [sys.executable, __file__, "--threads", str(args.threads), "--child", str(paths[key]), str(ctx),
                 "1" if mmap else "0"],
                check=True, capture_output=True, text=True,
            )
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(table(rows))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| model (file) | ctx | mmap | weights pred. / llama.cpp | KV pred. / llama.cpp | "
            "compute reserved pred. / llama.cpp | RAM pred. | peak RSS | repacked dup. | pred. / (RSS − dup.) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, rep = r["predicted"], r["reported"]
        repacked = sum(float(size) for name, size in rep["buffers"] if name == "CPU_REPACK")
        dup = repacked if r["mmap"] else 0.0  # the repacked tensors' file pages stay mapped (clean, reclaimable)
        lines.append(
            f"| {r['model']} ({r['file_mib']:.0f} MiB) | {r['n_ctx']} | {'on' if r['mmap'] else 'off'} "
            f"| {p['weights_mib']:.0f} / {rep['model_mib'] - dup:.0f} | {p['kv_mib']:.0f} / {rep['kv_mib']:.0f} "
            f"| {p['compute_reserved_mib']:.0f} / {rep['compute_mib']:.0f} | {p['total_mib']:.0f} "
            f"| {r['peak_rss_mib']:.0f} | {dup:.0f} | {p['total_mib'] / (r['peak_rss_mib'] - dup):.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
