#!/usr/bin/env python3
"""What sharing a cached prompt prefix between slots saves: time to first token of a request whose long system
prompt another slot (still busy) has already read, against one whose system prompt is new.

    python bench/serve_prefix.py [--model X.gguf] [--system-words 600] [--threads 1]

Starts `localseek serve` on a free loopback port (the model of bench/serve_load.py unless --model), then for each
of --rounds rounds: request A (system prompt S, a long streamed reply) runs; while it runs, B (system prompt S, its
own question) and C (a new system prompt of the same length) are sent one after the other; their times to first
token are compared. B reads only its question (its prefix is shared from A's slot with llama_memory_seq_cp).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import Server, free_port


def ttft(url: str, model: str, system: str, question: str, max_tokens: int,
         first: threading.Event | None = None) -> float:
    import httpx

    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"] and \
                    json.loads(line[6:])["choices"][0]["delta"].get("content") is not None and \
                    json.loads(line[6:])["choices"][0]["delta"].get("role") is None:
                took = time.perf_counter() - started
                if first is None:
                    return took
                first.set()
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--system-words", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model = args.model
    if model is None:
        from _llamacpp_build import cache_dir

        model = cache_dir() / "serve-load-qwen2-0.5b-q4_0.gguf"
        if not model.exists():
            print("run bench/serve_load.py --keep-model first, or pass --model", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="serve-prefix-"))
    port = free_port()
    import os

    env = {**os.environ, "LOCALSEEK_HOME": str(work / "home")}
    server = Server("localseek", [sys.executable, "-m", "localseek", "serve", str(model), "--port", str(port),
                                  "--ctx", "8192", "--threads", str(args.threads), "--keep-alive", "-1"],
                    port, env, work / "localseek.log")
    shared, fresh = [], []
    try:
        server.wait()
        name = model.stem
        for r in range(args.rounds):
            # Words the test vocabulary has merges for, so that a word is about one token.
            words = ["the", "answer", "model", "hello", "think", "step", "test", "numbers", "problem", "tiny"]
            system = f"Rules {r}: " + " ".join(words[(i * 7 + r) % len(words)] for i in range(args.system_words))
            other = f"Other {r}: " + " ".join(words[(i * 3 + r + 1) % len(words)] for i in range(args.system_words))
            read = threading.Event()
            a = threading.Thread(target=ttft, args=(server.url, name, system, "first", 300, read))
            a.start()
            read.wait(600)  # A has read its prompt and is generating: its slot holds the system prompt
            shared.append(ttft(server.url, name, system, "second", 1))
            fresh.append(ttft(server.url, name, other, "third", 1))
            a.join()
            print(f"round {r + 1}: shared prefix {shared[-1]:.2f}s, new prefix {fresh[-1]:.2f}s", file=sys.stderr)
    finally:
        server.stop()
    print(f"time to first token behind a {args.system_words}-word system prompt another (busy) slot has read: "
          f"{statistics.median(shared):.2f} s; with a new one of the same length: {statistics.median(fresh):.2f} s "
          f"(median of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
