"""Greedy tokens and logits of one GGUF through localseek's engine, on whatever machine runs it (x86 or emulated ARM).

    python bench/aarch64/probe.py MODEL --prompt TEXT -n 48 --out DIR [--path RESULT.json] [--no-repack]

Writes DIR/result.json (system info, the load log's repack and buffer lines, prompt and greedy tokens) and two
float32 arrays of logits along one token path — the machine's own greedy path, or `--path` (another machine's, so
that both are compared on the same inputs even where greedy decoding would part ways):
- `step.npy`: one decode per token, as `run` generates (row k predicts path[k]);
- `batch.npy`: the prompt and the path in one batch with logits for every row (prompt processing kernels).
Run by `run.py`; it uses only the repository and llama-cpp-python, so it runs under qemu unchanged.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from itertools import islice
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from localseek.runtime.engine import Engine, captured_log
from localseek.runtime.options import LoadOptions, Sampling


def step_logits(engine: Engine, prompt: list[int], path: list[int]) -> np.ndarray:
    dc = engine.decoder
    dc.clear()
    dc.decode(prompt)
    rows = [dc.logits_row(-1).copy()]
    for tok in path[:-1]:
        dc.decode((tok,))
        rows.append(dc.logits_row(-1).copy())
    return np.stack(rows).astype(np.float32)


def batch_logits(engine: Engine, prompt: list[int], path: list[int]) -> np.ndarray:
    dc = engine.decoder
    dc.clear()
    dc.decode(prompt + path[:-1], logits="all")
    first = len(prompt) - 1
    return np.stack([dc.logits_row(i).copy() for i in range(first, first + len(path))]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("-n", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", type=Path, help="a result.json whose greedy tokens are the path to read logits along")
    ap.add_argument("--no-repack", action="store_true",
                    help="load without llama.cpp's extra buffer types (no weight repacking: the plain kernels)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import llama_cpp

    if args.no_repack:  # `Llama` reads the defaults through this module attribute when it loads
        default_params = llama_cpp.llama_cpp.llama_model_default_params

        def without_repack():
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = without_repack

    engine = Engine.load(args.model, LoadOptions(n_ctx=512, n_batch=512, n_ubatch=512, n_threads=args.threads,
                                                 n_threads_batch=args.threads))
    load_log = captured_log()
    prompt = engine.tokenize(args.prompt)
    # Exactly n tokens, past an end-of-sentence too: random weights end early, and every token compared counts.
    greedy = list(islice(engine.generate_tokens(prompt, Sampling(temperature=0.0)), args.n))
    path = json.loads(args.path.read_text())["greedy"] if args.path else greedy
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "step.npy", step_logits(engine, prompt, path))
    np.save(args.out / "batch.npy", batch_logits(engine, prompt, path))
    result = {
        "model": args.model.name,
        "system_info": llama_cpp.llama_print_system_info().decode(),
        # llama.cpp's load log: the buffer each weight went to (CPU_REPACK = rearranged for this CPU's kernels)
        "buffers": sorted({m.strip() for m in re.findall(r"load_tensors:\s+(\S+ model buffer size .*)", load_log)}),
        "repacked": re.findall(r"repack tensor (\S+) with (\S+)", load_log),
        "prompt": prompt,
        "greedy": greedy,
        "greedy_text": "".join(engine.token_text(t) for t in greedy),
        "path_from": str(args.path) if args.path else "own greedy",
        "repack": not args.no_repack,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
