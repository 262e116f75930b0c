"""Download throughput: `localseek pull` (resumable, sha256-verified while streaming) vs huggingface_hub's own
`hf_hub_download` (no verification) of the same file from the same loopback Hub (tests/hub_server.py).

    .venv/bin/python bench/pull.py --size-mib 512 --runs 3

Each run is a fresh process and a fresh HF cache, so both tools transfer every byte. Prints a Markdown table
(wall time, CPU time, MB/s, and localseek/huggingface_hub ratios) plus hashlib's sha256 speed as the ceiling
verification can reach on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hub_server import FakeHub, make_repo

REPO = "bench/Bench-GGUF"
NAME = "Bench-Q4_K_M.gguf"


def _run(cmd: list[str], env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {r.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lspull-"))
    try:
        src = work / NAME
        with src.open("wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1 << 20))
        size = src.stat().st_size
        t0 = time.perf_counter()
        hashlib.sha256(src.read_bytes()).hexdigest()
        sha_speed = size / (time.perf_counter() - t0)
        hub = FakeHub()
        try:
            hub.add(make_repo(REPO, {NAME: src}))
            base = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1",
                        HF_HUB_DISABLE_PROGRESS_BARS="1", LOCALSEEK_HOME=str(work / "home"))
            cmds = {
                "localseek pull": [sys.executable, "-m", "localseek", "pull", f"{REPO}:{NAME}"],
                "hf_hub_download": [sys.executable, "-c",
                                    f"from huggingface_hub import hf_hub_download; hf_hub_download({REPO!r}, {NAME!r})"],
            }
            results: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
            for i in range(args.runs):
                for name, cmd in cmds.items():  # interleaved, so drift hits both alike
                    for d in ("hf", "home"):
                        shutil.rmtree(work / d, ignore_errors=True)
                    results[name].append(_run(cmd, dict(base, HF_HOME=str(work / "hf"))))
        finally:
            hub.stop()
        med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
        print(f"File: {size / 1e6:.0f} MB over 127.0.0.1, {args.runs} runs each (median), "
              f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; hashlib sha256 alone: "
              f"{sha_speed / 1e6:.0f} MB/s.\n")
        print("| tool | wall | CPU | throughput | vs hf_hub_download |")
        print("|---|---|---|---|---|")
        ref_wall, ref_cpu = med["hf_hub_download"]
        for name, (wall, cpu) in med.items():
            ratio = "" if name == "hf_hub_download" else f"{wall / ref_wall:.2f}× wall, {cpu / ref_cpu:.2f}× CPU"
            print(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {size / wall / 1e6:.0f} MB/s | {ratio} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
