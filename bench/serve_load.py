#!/usr/bin/env python3
"""`localseek serve` vs llama.cpp's own `llama-server` under the same load: total generated tokens per second for
1, 4 and 16 concurrent streaming clients, on the same GGUF, with the same threads, slots and context.

    python bench/serve_load.py                       # a generated Qwen2.5-0.5B-shaped model at Q4_0 (≈0.3 GB)
    python bench/serve_load.py --model X.gguf --clients 1,4,16 --parallel 4 --rounds 2

What it does:
1. builds `llama-server` (CPU, Release) from the llama.cpp sources vendored in the installed llama-cpp-python's sdist,
   in a cache outside the repository (bench/_llamacpp_build.py; several minutes on two cores, once);
2. without --model, writes a random-weight qwen2 model (Qwen2.5-0.5B shapes, the test vocabulary) and quantizes it
   to Q4_0 with llama.cpp's quantizer (bench/vs_llamacpp.py's writer), deleted at the end unless --keep-model;
3. starts each server in turn on a free loopback port (`localseek serve MODEL --parallel P --ctx C --threads T`;
   `llama-server -m MODEL -np P -c C -t T -fa on -kvu`: flash attention and a unified KV cache, as localseek);
4. for each client count N, N clients each stream R raw completions one after another (their own prompt, greedy,
   max_tokens M) through /v1/completions with usage; total tokens/s = completion tokens ÷ wall time of the
   whole load, after one warm-up request. Servers alternate (A B, B A) for --rounds rounds; the table gives
   each server's median and range and the same-round ratios (localseek ÷ llama-server) with their median.

Only 127.0.0.1 is ever contacted. Exit status 0 when it measured, 1 when it could not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
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
    print(f"[serve_load] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, kind: str, cmd: list[str], port: int, env: dict[str, str], logfile: Path) -> None:
        self.kind, self.port = kind, port
        self.url = f"http://127.0.0.1:{port}"
        self._log = logfile.open("w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env)

    def wait(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} did not become healthy")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def start(kind: str, model: Path, args: argparse.Namespace, bin_dir: Path, workdir: Path, rnd: int) -> Server:
    port = free_port()
    env = dict(os.environ)
    if kind == "localseek":
        env["LOCALSEEK_HOME"] = str(workdir / "home")
        cmd = [sys.executable, "-m", "localseek", "serve", str(model), "--port", str(port), "--ctx", str(args.ctx),
               "--threads", str(args.threads), "--parallel", str(args.parallel), "--keep-alive", "-1"]
    else:
        cmd = [str(bin_dir / "llama-server"), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-c", str(args.ctx), "-t", str(args.threads), "-tb", str(args.threads), "-np", str(args.parallel),
               "-fa", "on", "-kvu", "--no-webui"]
    server = Server(kind, cmd, port, env, workdir / f"{kind}-{rnd}.log")
    server.wait()
    return server


def decoder_counters(server: Server) -> dict[str, float]:
    import httpx

    return httpx.get(server.url + "/localseek/ps", timeout=30).json()["models"][0]["decoder"]


async def one_client(client: object, url: str, model: str, client_id: int, requests: int, max_tokens: int) -> int:
    """Raw completions (the same prompt text for both servers: no chat template of either side in the way)."""
    tokens = 0
    for r in range(requests):
        body = {"model": model, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
                "max_tokens": max_tokens, "prompt": f"<｜User｜>client {client_id} request {r}: tell me a story"
                                                    "<｜Assistant｜>"}
        # A connection per request: llama-server (cpp-httplib) may close a kept-alive connection after a stream,
        # and a POST on a connection the server just closed fails instead of being retried.
        async with client.stream("POST", url + "/v1/completions", json=body,  # type: ignore
                                 headers={"Connection": "close"}) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    data = json.loads(line[6:])
                    if data.get("usage"):
                        tokens += int(data["usage"]["completion_tokens"])
    return tokens


async def load(url: str, model: str, clients: int, requests: int, max_tokens: int) -> tuple[int, float]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one_client(client, url, model, 999, 1, 8)  # warm-up
        started = time.perf_counter()
        counts = await asyncio.gather(*(one_client(client, url, model, i, requests, max_tokens)
                                        for i in range(clients)))
        return sum(counts), time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep-model", action="store_true")
    args = ap.parse_args()
    try:
        bin_dir = build_tools(llama_cpp_python_version(), ("llama-server",), log=log)
    except Exception as exc:  # noqa: BLE001
        log(f"could not build llama-server: {exc}")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="serve-load-"))
    model = args.model
    generated = model is None
    if generated:
        from vs_llamacpp import write_test_model

        model = cache_dir() / "serve-load-qwen2-0.5b-q4_0.gguf"
        if not model.exists():
            log(f"writing {model.name} (Qwen2.5-0.5B shapes, random weights, Q4_0)")
            write_test_model(model, n_layer=24, d=896, n_ff=4864, n_head=14, n_head_kv=2, qtype="Q4_0")
    clients = [int(c) for c in args.clients.split(",")]
    results: dict[str, dict[int, list[float]]] = {"localseek": {}, "llama-server": {}}
    overhead: dict[int, list[float]] = {}
    try:
        for rnd in range(args.rounds):
            order = ["llama-server", "localseek"] if rnd % 2 else ["localseek", "llama-server"]
            for kind in order:
                server = start(kind, model, args, bin_dir, workdir, rnd)
                try:
                    name = model.stem if kind == "localseek" else "model"
                    for n in clients:
                        before = decoder_counters(server) if kind == "localseek" else None
                        tokens, seconds = asyncio.run(load(server.url, name, n, args.requests, args.max_tokens))
                        rate = tokens / seconds
                        results[kind].setdefault(n, []).append(rate)
                        extra = ""
                        if before is not None:
                            after = decoder_counters(server)
                            step = after["step_s"] - before["step_s"]
                            outside = 1 - (after["decode_s"] - before["decode_s"]) / step if step else 0.0
                            overhead.setdefault(n, []).append(outside)
                            per_step = (after["batched_tokens"] - before["batched_tokens"]) / max(
                                1, after["steps"] - before["steps"])
                            extra = (f"; decoder: {per_step:.1f} tokens/step, {100 * outside:.1f}% of step time "
                                     "outside llama_decode")
                        log(f"round {rnd + 1} {kind:12s} {n:2d} clients: {tokens} tokens in {seconds:.1f}s = "
                            f"{rate:.1f} tok/s{extra}")
                finally:
                    server.stop()
    except Exception as exc:  # noqa: BLE001
        log(f"could not measure: {exc} (logs in {workdir})")
        return 1
    finally:
        if generated and not args.keep_model and model.exists():
            model.unlink()
    print(f"\nmodel {model.name}, {args.threads} threads, {args.parallel} slots, ctx {args.ctx}, "
          f"{args.requests} requests × {args.max_tokens} tokens per client, {args.rounds} rounds\n")
    print("| clients | localseek tok/s (median, range) | llama-server tok/s (median, range) | ratio per round | "
          "median ratio |")
    print("|---:|---:|---:|---|---:|")
    for n in clients:
        a, b = results["localseek"][n], results["llama-server"][n]
        ratios = [x / y for x, y in zip(a, b)]
        print(f"| {n} | {statistics.median(a):.1f} ({min(a):.1f}–{max(a):.1f}) | {statistics.median(b):.1f} "
              f"({min(b):.1f}–{max(b):.1f}) | {', '.join(f'{r:.2f}' for r in ratios)} | "
              f"{statistics.median(ratios):.2f} |")
    print("\nlocalseek's decoding thread, share of its step time outside llama_decode (batch building, sampling, "
          "hand-over to the request threads): " + ", ".join(
              f"{n} clients {100 * statistics.median(v):.1f}%" for n, v in sorted(overhead.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
