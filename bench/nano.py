"""localseek-nano through llama.cpp: exact-answer accuracy per GGUF type and the MTP head's acceptance.

    python bench/nano.py                          # F16 Q8_0 Q6_K Q4_K_M Q4_0 Q2_K, 500 held-out problems
    python bench/nano.py --types Q8_0 --n 100 --mtp-n 50

For each type the bundled FP8 checkpoint is converted with our own FP8 path (`quantize.convert`, MTP kept),
the GGUF answers the held-out problems greedily (the same harness as the torch evaluation), and the MTP block
is run in llama.cpp's MTP context (LLAMA_CONTEXT_TYPE_MTP) teacher-forced over the model's own greedy replies:
acceptance = share of reply tokens t[i+2] that the MTP head's argmax predicts from (t[i+1], hidden state h[i]) —
the acceptance of the first draft token under greedy speculative decoding. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localseek.nano import CHECKPOINT
from localseek.nano.evaluate import MAX_NEW_TOKENS, evaluate, llama_generate
from localseek.nano.problems import eval_problems, render_prompt

TYPES = ["F16", "Q8_0", "Q6_K", "Q4_K_M", "Q4_0", "Q2_K"]


class _Batch:
    """A llama_batch with token ids and (optionally) one hidden-state row per entry."""

    def __init__(self, lib, capacity: int, n_embd: int = 0) -> None:
        self.lib = lib
        self.raw = lib.llama_batch_init(capacity, n_embd, 1)
        self.tokens = None
        if n_embd:
            self.tokens = (lib.llama_token * capacity)()  # llama_batch_init allocates embd *or* token
            self.raw.token = self.tokens
            self.embd = np.ctypeslib.as_array(self.raw.embd, shape=(capacity, n_embd))
        for i in range(capacity):
            self.raw.n_seq_id[i] = 1
            self.raw.seq_id[i][0] = 0

    def fill(self, tokens: list[int], embd: np.ndarray | None = None) -> None:
        for i, t in enumerate(tokens):
            self.raw.token[i] = t
            self.raw.pos[i] = i
            self.raw.logits[i] = True
        if embd is not None:
            self.embd[: len(tokens)] = embd
        self.raw.n_tokens = len(tokens)

    def close(self) -> None:
        if self.tokens is not None:
            self.raw.token = ctypes.POINTER(self.lib.llama_token)()
        self.lib.llama_batch_free(self.raw)


def mtp_acceptance(path: Path, n: int, threads: int) -> float:
    """Teacher-forced top-1 acceptance of the MTP head in llama.cpp over greedy replies to n held-out problems."""
    import llama_cpp
    from llama_cpp import llama_cpp_ext

    mp = llama_cpp.llama_model_default_params()
    mp.load_mtp = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
    if not model or llama_cpp.llama_model_n_layer_nextn(model) != 1:
        raise SystemExit(f"{path}: no MTP block loaded")
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    n_embd = int(llama_cpp.llama_model_n_embd(model))
    cap = 1024

    def context(kind: int):
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = cap
        cp.n_threads = cp.n_threads_batch = threads
        cp.ctx_type = kind
        return llama_cpp.llama_init_from_model(model, cp)

    main, mtp = context(llama_cpp.LLAMA_CONTEXT_TYPE_DEFAULT), context(llama_cpp.LLAMA_CONTEXT_TYPE_MTP)
    llama_cpp_ext.llama_set_embeddings_nextn(main, True, False)
    plain, with_h = _Batch(llama_cpp, cap), _Batch(llama_cpp, cap, n_embd)
    hits = total = 0
    try:
        for p in eval_problems(n, seed=11):
            text = render_prompt(p.question).encode()
            prompt = [0] * (len(text) + 8)
            arr = (llama_cpp.llama_token * len(prompt))()
            k = llama_cpp.llama_tokenize(vocab, text, len(text), arr, len(prompt), False, True)
            seq = list(arr[:k])
            n_prompt = len(seq)
            # greedy reply, one token at a time
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(main), True)
            plain.fill(seq)
            for _ in range(MAX_NEW_TOKENS):
                assert llama_cpp.llama_decode(main, plain.raw) == 0
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(main, -1), shape=(n_vocab,))
                tok = int(logits.argmax())
                if llama_cpp.llama_vocab_is_eog(vocab, tok):
                    break
                seq.append(tok)
                plain.raw.token[0], plain.raw.pos[0], plain.raw.n_tokens = tok, len(seq) - 1, 1
            # hidden states h[0..N-1] of the whole sequence in one batch
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(main), True)
            plain.fill(seq)
            assert llama_cpp.llama_decode(main, plain.raw) == 0
            h = np.ctypeslib.as_array(llama_cpp_ext.llama_get_embeddings_nextn(main), shape=(len(seq), n_embd))
            # MTP entry i: token t[i+1] with h[i] → predicts t[i+2]
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(mtp), True)
            with_h.fill(seq[1:], h[:-1])
            assert llama_cpp.llama_decode(mtp, with_h.raw) == 0
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(mtp), shape=(len(seq) - 1, n_vocab))
            pred = rows[:-1].argmax(-1)
            target = np.array(seq[2:])
            reply = slice(max(0, n_prompt - 2), None)  # predictions of reply tokens only
            hits += int((pred[reply] == target[reply]).sum())
            total += int(target[reply].size)
    finally:
        plain.close()
        with_h.close()
        llama_cpp.llama_free(mtp)
        llama_cpp.llama_free(main)
        llama_cpp.llama_model_free(model)
    return hits / max(1, total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--n", type=int, default=500, help="held-out problems for accuracy")
    ap.add_argument("--mtp-n", type=int, default=100, help="held-out problems for MTP acceptance")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="keep the GGUFs here (default: a temp dir)")
    args = ap.parse_args()

    import llama_cpp

    from quantize import convert

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="nano-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = eval_problems(args.n)
    print(f"localseek-nano, {args.n} held-out problems, greedy, {args.threads} thread(s)\n")
    print("| type | GGUF bytes | accuracy | + | - | × | MTP acceptance | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for qtype in args.types.split(","):
        t0 = time.perf_counter()
        path = out_dir / f"localseek-nano-{qtype}.gguf"
        convert(CHECKPOINT, path, qtype=qtype, force=True, threads=args.threads)
        llm = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads,
                              verbose=False)
        result = evaluate(llama_generate(llm), problems)
        del llm
        acc = mtp_acceptance(path, args.mtp_n, args.threads) if args.mtp_n else float("nan")
        ops = {op: f"{c}/{t}" for op, (c, t) in result.by_op.items()}
        print(f"| {qtype} | {path.stat().st_size:,} | {100 * result.accuracy:.1f}% | {ops.get('+')} | "
              f"{ops.get('-')} | {ops.get('×')} | {100 * acc:.2f}% | {time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
