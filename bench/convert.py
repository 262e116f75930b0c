"""Benchmark: DeepSeek checkpoints → GGUF, localseek vs llama.cpp's convert_hf_to_gguf.py, in one run.

    python bench/convert.py --size-gb 2.3 --workdir /tmp/lsbench [--layouts v3 v4] [--write docs/PERFORMANCE.md]

1. Generates (once per layout) a random checkpoint sized by --size-gb:
   - `v3`: DeepSeek-V3's exact layout — FP8 e4m3 weights with 128×128 `weight_scale_inv` blocks (ragged expert
     rows), MLA with q-LoRA, 64 routed + 1 shared expert, one MTP layer, sharded safetensors; target Q8_0.
   - `v4`: DeepSeek-V4's own layout — FP8 with E8M0 block scales, MXFP4 routed experts (I8 packed + E8M0),
     hyper-connections, compressors + indexer, a hash-routed layer, BF16/F32 tensors where V4 has them, one
     MTP block; target MXFP4_MOE (experts kept as shipped, every other matrix Q8_0 — the types llama.cpp's
     converter writes, except that it keeps BF16 sources BF16), plus localseek decoding the experts to Q2_K.
2. Converts it with localseek (V3: with and without the MTP layer) and with llama.cpp's converter (which needs
   torch; it drops V3's and V4's MTP blocks), each in its own process, measuring wall time and peak RSS (GNU
   time's maximum resident set size) and the output size. The checkpoint is read once before the timed runs
   so that every tool starts with the same warm page cache.
3. Prints a Markdown table per layout (and appends them to --write).

llama.cpp's converter comes from the pinned llama-cpp-python sdist (tests/llama_cpp_sdist.py, fetched once
into a cache) unless --llama-cpp names a tree. It recognises tokenizers by a hash of their output; the
benchmark's tiny tokenizer is not in its table, so the wrapper tells it the pre-tokenizer ("deepseek-v3") —
tokenizer handling is a negligible part of either tool's time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hf_factory as hf
from llama_cpp_sdist import converter_command, llama_cpp_dir

DIMS = dict(  # noqa: C408
    hidden=2048,
    n_head=16,
    q_lora=768,
    kv_lora=512,
    nope=128,
    rope=64,
    v=128,
    ff=5632,
    moe=704,
    n_routed=64,
    n_shared=1,
    n_used=6,
    first_dense=1,
    vocab=32768,
)


def _fp8(rng: np.random.Generator, out_f: int, in_f: int) -> list[tuple[str, hf._Tensor]]:
    codes = rng.integers(0, 256, size=(out_f, in_f), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x3C  # no NaN codes
    scale = (rng.random((math.ceil(out_f / 128), math.ceil(in_f / 128))) * 1e-3 + 1e-4).astype(np.float32)
    return [("weight", hf._Tensor("F8_E4M3", codes)), ("weight_scale_inv", hf._Tensor("F32", scale))]


def _bf16(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> hf._Tensor:
    return hf._Tensor("BF16", hf.to_bf16_bits(rng.standard_normal(shape, dtype=np.float32) * scale))


def _layer(rng, p: str, i: int, d: dict, n_layer: int):
    h = d["hidden"]
    yield p + "input_layernorm.weight", _bf16(rng, h, scale=1.0)
    yield p + "post_attention_layernorm.weight", _bf16(rng, h, scale=1.0)
    yield p + "self_attn.q_a_layernorm.weight", _bf16(rng, d["q_lora"], scale=1.0)
    yield p + "self_attn.kv_a_layernorm.weight", _bf16(rng, d["kv_lora"], scale=1.0)
    linears = [
        ("self_attn.q_a_proj", d["q_lora"], h),
        ("self_attn.q_b_proj", d["n_head"] * (d["nope"] + d["rope"]), d["q_lora"]),
        ("self_attn.kv_a_proj_with_mqa", d["kv_lora"] + d["rope"], h),
        ("self_attn.kv_b_proj", d["n_head"] * (d["nope"] + d["v"]), d["kv_lora"]),
        ("self_attn.o_proj", h, d["n_head"] * d["v"]),
    ]
    if i < d["first_dense"]:
        linears += [("mlp.gate_proj", d["ff"], h), ("mlp.up_proj", d["ff"], h), ("mlp.down_proj", h, d["ff"])]
    else:
        yield p + "mlp.gate.weight", _bf16(rng, d["n_routed"], h)
        yield (
            p + "mlp.gate.e_score_correction_bias",
            hf._Tensor("F32", rng.random(d["n_routed"], dtype=np.float32)),
        )
        s = d["moe"] * d["n_shared"]
        linears += [
            ("mlp.shared_experts.gate_proj", s, h),
            ("mlp.shared_experts.up_proj", s, h),
            ("mlp.shared_experts.down_proj", h, s),
        ]
        for e in range(d["n_routed"]):
            linears += [
                (f"mlp.experts.{e}.gate_proj", d["moe"], h),
                (f"mlp.experts.{e}.up_proj", d["moe"], h),
                (f"mlp.experts.{e}.down_proj", h, d["moe"]),
            ]
    if i == n_layer:
        yield p + "embed_tokens.weight", _bf16(rng, d["vocab"], h, scale=1.0)
        yield p + "shared_head.head.weight", _bf16(rng, d["vocab"], h)
        for n in ("enorm", "hnorm", "shared_head.norm"):
            yield p + n + ".weight", _bf16(rng, h, scale=1.0)
        linears.append(("eh_proj", h, 2 * h))
    for name, o, n in linears:
        for suffix, t in _fp8(rng, o, n):
            yield p + name + "." + suffix, t


class _Shards:
    """Writes tensors into ~400 MB safetensors shards as they come, then the index."""

    def __init__(self, ckpt: Path) -> None:
        self.ckpt, self.weight_map, self.total, self.n, self.part, self.size = ckpt, {}, 0, 0, {}, 0

    def flush(self) -> None:
        if self.part:
            self.n += 1
            name = f"model-{self.n:05d}-of-XXXXX.safetensors"
            hf.write_safetensors(self.ckpt / name, self.part)
            for k in self.part:
                self.weight_map[k] = name
            self.part, self.size = {}, 0

    def add(self, name: str, t: hf._Tensor) -> None:
        self.part[name] = t
        self.size += t.array.nbytes
        self.total += t.array.nbytes
        if self.size > 400e6:
            self.flush()

    def close(self) -> None:
        self.flush()
        for i in range(1, self.n + 1):  # now that the count is known
            old = self.ckpt / f"model-{i:05d}-of-XXXXX.safetensors"
            old.rename(self.ckpt / f"model-{i:05d}-of-{self.n:05d}.safetensors")
        wm = {k: v.replace("XXXXX", f"{self.n:05d}") for k, v in self.weight_map.items()}
        (self.ckpt / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": self.total}, "weight_map": wm})
        )


def generate(root: Path, size_gb: float) -> tuple[Path, int]:
    d = DIMS
    h = d["hidden"]
    per_moe = 3 * d["n_routed"] * d["moe"] * h
    fixed = 4 * d["vocab"] * h * 2 + 3 * d["ff"] * h
    n_moe = max(1, round((size_gb * 1e9 - fixed) / (per_moe + 12e6)) - 1)  # minus the MTP layer
    n_layer = d["first_dense"] + n_moe
    done = root / "ckpt" / ".complete"
    ckpt = root / "ckpt"
    if done.exists() and json.loads(done.read_text()).get("n_layer") == n_layer:
        return ckpt, n_layer
    ckpt.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = _Shards(ckpt)
    out.add("model.embed_tokens.weight", _bf16(rng, d["vocab"], h, scale=1.0))
    for i in range(n_layer + 1):
        for name, t in _layer(rng, f"model.layers.{i}.", i, d, n_layer):
            out.add(name, t)
    out.add("model.norm.weight", _bf16(rng, h, scale=1.0))
    out.add("lm_head.weight", _bf16(rng, d["vocab"], h))
    out.close()
    cfg = json.loads((hf.write_deepseek_v3(root / "tiny") / "config.json").read_text())
    cfg.update(
        {
            "hidden_size": h,
            "num_attention_heads": d["n_head"],
            "num_key_value_heads": d["n_head"],
            "q_lora_rank": d["q_lora"],
            "kv_lora_rank": d["kv_lora"],
            "qk_nope_head_dim": d["nope"],
            "qk_rope_head_dim": d["rope"],
            "v_head_dim": d["v"],
            "intermediate_size": d["ff"],
            "moe_intermediate_size": d["moe"],
            "n_routed_experts": d["n_routed"],
            "n_shared_experts": d["n_shared"],
            "num_experts_per_tok": d["n_used"],
            "n_group": 8,
            "topk_group": 4,
            "first_k_dense_replace": d["first_dense"],
            "num_hidden_layers": n_layer,
            "vocab_size": d["vocab"],
        }
    )
    (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
    hf.write_tokenizer(ckpt, "deepseek-v3")
    done.write_text(json.dumps({"n_layer": n_layer}))
    return ckpt, n_layer


# -- DeepSeek-V4 layout --------------------------------------------------------------------------------------
V4 = dict(  # noqa: C408  (V4-Flash: hidden 4096, 64 heads of 512, 256 experts of 2048, vocab 129280)
    hidden=2048,
    n_head=16,
    head_dim=512,
    rope=64,
    q_lora=768,
    o_groups=4,
    o_lora=512,
    moe=1024,
    n_routed=64,
    n_used=6,
    n_shared=1,
    n_hash=1,
    idx_heads=16,
    idx_dim=128,
    hc=4,
    vocab=32768,
)


def _v4_fp8(rng, name: str, out_f: int, in_f: int):
    codes = rng.integers(0, 256, size=(out_f, in_f), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x3C  # no NaN codes
    scale = rng.integers(112, 118, size=(math.ceil(out_f / 128), math.ceil(in_f / 128)), dtype=np.uint8)
    yield name + ".weight", hf._Tensor("F8_E4M3", codes)
    yield name + ".scale", hf._Tensor("F8_E8M0", scale)


def _v4_mxfp4(rng, name: str, out_f: int, in_f: int):
    yield name + ".weight", hf._Tensor("I8", rng.integers(0, 256, size=(out_f, in_f // 2), dtype=np.uint8))
    yield (
        name + ".scale",
        hf._Tensor("F8_E8M0", rng.integers(118, 124, size=(out_f, in_f // 32), dtype=np.uint8)),
    )


def _f32(rng, *shape: int, scale: float = 0.02) -> hf._Tensor:
    return hf._Tensor("F32", rng.standard_normal(shape, dtype=np.float32) * scale)


def _v4_layer(rng, p: str, ratio: int, hash_routed: bool):
    d = V4
    h, hc, hd = d["hidden"], d["hc"], d["head_dim"]
    mix = (2 + hc) * hc
    yield p + "attn_norm.weight", _bf16(rng, h, scale=1.0)
    yield p + "ffn_norm.weight", _bf16(rng, h, scale=1.0)
    for part in ("attn", "ffn"):
        yield p + f"hc_{part}_fn", _f32(rng, mix, hc * h)
        yield p + f"hc_{part}_base", _f32(rng, mix)
        yield p + f"hc_{part}_scale", _f32(rng, 3)
    a = p + "attn."
    yield a + "attn_sink", _f32(rng, d["n_head"])
    yield a + "q_norm.weight", _bf16(rng, d["q_lora"], scale=1.0)
    yield a + "kv_norm.weight", _bf16(rng, hd, scale=1.0)
    for name, o, n in (
        ("wq_a", d["q_lora"], h),
        ("wq_b", d["n_head"] * hd, d["q_lora"]),
        ("wkv", hd, h),
        ("wo_a", d["o_groups"] * d["o_lora"], d["n_head"] * hd // d["o_groups"]),
        ("wo_b", h, d["o_groups"] * d["o_lora"]),
    ):
        yield from _v4_fp8(rng, a + name, o, n)
    if ratio:
        c = 2 * hd if ratio == 4 else hd
        yield a + "compressor.ape", _f32(rng, ratio, c)
        yield a + "compressor.wkv.weight", _bf16(rng, c, h)
        yield a + "compressor.wgate.weight", _bf16(rng, c, h)
        yield a + "compressor.norm.weight", _bf16(rng, hd, scale=1.0)
    if ratio == 4:
        yield from _v4_fp8(rng, a + "indexer.wq_b", d["idx_heads"] * d["idx_dim"], d["q_lora"])
        yield a + "indexer.weights_proj.weight", _bf16(rng, d["idx_heads"], h)
        yield a + "indexer.compressor.ape", _f32(rng, 4, 2 * d["idx_dim"])
        yield a + "indexer.compressor.wkv.weight", _bf16(rng, 2 * d["idx_dim"], h)
        yield a + "indexer.compressor.wgate.weight", _bf16(rng, 2 * d["idx_dim"], h)
        yield a + "indexer.compressor.norm.weight", _bf16(rng, d["idx_dim"], scale=1.0)
    f = p + "ffn."
    yield f + "gate.weight", _bf16(rng, d["n_routed"], h)
    yield f + "gate.bias", _f32(rng, d["n_routed"])
    if hash_routed:
        table = np.argsort(rng.random((d["vocab"], d["n_routed"])), axis=1)[:, : d["n_used"]]
        yield f + "gate.tid2eid", hf._Tensor("I64", table.astype(np.int64))
    for e in range(d["n_routed"]):
        yield from _v4_mxfp4(rng, f + f"experts.{e}.w1", d["moe"], h)
        yield from _v4_mxfp4(rng, f + f"experts.{e}.w2", h, d["moe"])
        yield from _v4_mxfp4(rng, f + f"experts.{e}.w3", d["moe"], h)
    s = d["moe"] * d["n_shared"]
    yield from _v4_fp8(rng, f + "shared_experts.w1", s, h)
    yield from _v4_fp8(rng, f + "shared_experts.w2", h, s)
    yield from _v4_fp8(rng, f + "shared_experts.w3", s, h)


def generate_v4(root: Path, size_gb: float) -> tuple[Path, int]:
    d = V4
    h = d["hidden"]
    per_layer = 3 * d["n_routed"] * d["moe"] * h * 17 / 32 + 30e6  # MXFP4 experts + the rest, roughly
    n_layer = max(3, round((size_gb * 1e9 - 4 * d["vocab"] * h) / per_layer) - 1)  # minus the MTP block
    ratios = [0, 0] + [4 if i % 2 == 0 else 128 for i in range(n_layer - 3)] + [4, 0]
    ckpt = root / "ckpt-v4"
    done = ckpt / ".complete"
    if done.exists() and json.loads(done.read_text()).get("n_layer") == n_layer:
        return ckpt, n_layer
    ckpt.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = _Shards(ckpt)
    out.add("embed.weight", _bf16(rng, d["vocab"], h, scale=1.0))
    for i in range(n_layer):
        for name, t in _v4_layer(rng, f"layers.{i}.", ratios[i], i < d["n_hash"]):
            out.add(name, t)
    for name, t in _v4_layer(rng, "mtp.0.", 0, False):
        out.add(name, t)
    for name in ("e_proj", "h_proj"):
        for n, t in _v4_fp8(rng, f"mtp.0.{name}", h, h):
            out.add(n, t)
    for name in ("enorm", "hnorm", "norm"):
        out.add(f"mtp.0.{name}.weight", _bf16(rng, h, scale=1.0))
    for prefix in ("mtp.0.", ""):
        out.add(prefix + "hc_head_fn", _f32(rng, d["hc"], d["hc"] * h))
        out.add(prefix + "hc_head_base", _f32(rng, d["hc"]))
        out.add(prefix + "hc_head_scale", _f32(rng, 1))
    out.add("norm.weight", _bf16(rng, h, scale=1.0))
    out.add("head.weight", _bf16(rng, d["vocab"], h))
    out.close()
    cfg = json.loads((hf.write_deepseek_v4(root / "tiny-v4", mtp=False) / "config.json").read_text())
    cfg.update(
        {
            "hidden_size": h,
            "num_attention_heads": d["n_head"],
            "head_dim": d["head_dim"],
            "qk_rope_head_dim": d["rope"],
            "q_lora_rank": d["q_lora"],
            "o_groups": d["o_groups"],
            "o_lora_rank": d["o_lora"],
            "moe_intermediate_size": d["moe"],
            "n_routed_experts": d["n_routed"],
            "n_shared_experts": d["n_shared"],
            "num_experts_per_tok": d["n_used"],
            "num_hash_layers": d["n_hash"],
            "index_n_heads": d["idx_heads"],
            "index_head_dim": d["idx_dim"],
            "index_topk": 512,
            "sliding_window": 128,
            "compress_ratios": ratios,
            "num_hidden_layers": n_layer,
            "num_nextn_predict_layers": 1,
            "vocab_size": d["vocab"],
        }
    )
    (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
    hf.write_tokenizer(ckpt, "deepseek-v3")
    tok = json.loads((ckpt / "tokenizer_config.json").read_text())
    del tok["chat_template"]
    (ckpt / "tokenizer_config.json").write_text(json.dumps(tok, ensure_ascii=False, indent=2))
    done.write_text(json.dumps({"n_layer": n_layer}))
    return ckpt, n_layer


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, stderr tail) of one process, measured by GNU time (`%M`): a child forked
    from this (large) benchmark process would inherit its resident pages in ru_maxrss."""
    timing = Path(os.environ.get("TMPDIR", "/tmp")) / f"lsbench-time-{os.getpid()}.txt"
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-o", str(timing), "-f", "%e %M", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{err[-3000:]}")
    _, max_kb = timing.read_text().split()[-2:]
    timing.unlink()
    return wall, int(max_kb) * 1024 / 1e9, err[-500:]


def _best(repeat: int, cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Fastest wall time and largest peak RSS over `repeat` runs (shared machine: min is the signal)."""
    runs = [run(cmd, env) for _ in range(max(1, repeat))]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def _warm(ckpt: Path) -> int:
    """Read the checkpoint once (the same warm page cache for every tool); its size in bytes."""
    for p in ckpt.glob("*.safetensors"):
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass
    return sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))


def _localseek(args, ckpt: Path, out: Path, **kw) -> tuple[float, float, int]:
    opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    code = (
        f"from quantize import convert; convert({str(ckpt)!r}, {str(out)!r}, force=True, "
        f"threads={args.threads}, {opts})"
    )
    wall, rss = _best(args.repeat, [sys.executable, "-c", code])
    return wall, rss, out.stat().st_size


def _llama_cpp(args, ckpt: Path, out: Path) -> tuple[float, float, int]:
    argv, env = converter_command(args.llama_cpp, args.workdir / "llama_convert.py", "deepseek-v3")
    wall, rss = _best(args.repeat, [*argv, str(ckpt), "--outtype", "q8_0", "--outfile", str(out)], env)
    return wall, rss, out.stat().st_size


# rows whose output llama.cpp's converter cannot produce: no ratio against it
NOT_COMPARABLE = {
    "localseek Q4_K_M, experts MXFP4 → Q2_K": "no direct route in llama.cpp (convert, then quantize)"
}


def _table(rows: list[tuple[str, float, float, int]], base_label: str | None) -> str:
    base = next((r for r in rows if r[0] == base_label), None)
    lines = ["| tool | wall time | peak RSS | output | vs llama.cpp |", "|---|---|---|---|---|"]
    for label, wall, rss, size in rows:
        ratio = (
            ""
            if base is None or label == base[0]
            else NOT_COMPARABLE.get(label)
            or f"{base[1] / wall:.1f}× faster, {rss / base[2]:.2f}× RSS, size {100 * (size / base[3] - 1):+.2f}%"
        )
        lines.append(f"| {label} | {wall:.1f} s | {rss:.2f} GB | {size / 1e9:.3f} GB | {ratio} |")
    return "\n".join(lines)


LLAMA = "llama.cpp convert_hf_to_gguf.py"


def bench_v3(args) -> str:
    t0 = time.perf_counter()
    ckpt, n_layer = generate(args.workdir, args.size_gb)
    src_size = _warm(ckpt)
    print(
        f"V3 checkpoint: {src_size / 1e9:.2f} GB, {n_layer} layers + MTP ({time.perf_counter() - t0:.0f} s)"
    )
    rows = []
    for label, keep in (("localseek (MTP dropped, like llama.cpp)", False), ("localseek (MTP kept)", True)):
        out = args.workdir / f"localseek-{keep}.gguf"
        rows.append((label, *_localseek(args, ckpt, out, qtype="Q8_0", keep_mtp=keep)))
        print(rows[-1], flush=True)
    if not args.skip_llama:
        rows.append((LLAMA, *_llama_cpp(args, ckpt, args.workdir / "llama-cpp.gguf")))
        print(rows[-1], flush=True)
    header = (
        f"Checkpoint: {src_size / 1e9:.2f} GB FP8 (DeepSeek-V3 layout: {n_layer} layers + 1 MTP, "
        f"hidden {DIMS['hidden']}, {DIMS['n_routed']} experts of {DIMS['moe']}, vocab {DIMS['vocab']}), "
        f"target Q8_0, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"localseek threads={args.threads}, best of {args.repeat} run(s) per tool, "
        f"load average {os.getloadavg()[0]:.1f} at the end."
    )
    return header + "\n\n" + _table(rows, LLAMA)


def bench_v4(args) -> str:
    t0 = time.perf_counter()
    ckpt, n_layer = generate_v4(args.workdir, args.size_gb)
    src_size = _warm(ckpt)
    print(
        f"V4 checkpoint: {src_size / 1e9:.2f} GB, {n_layer} layers + MTP ({time.perf_counter() - t0:.0f} s)"
    )
    rows = []
    for label, kw in (
        ("localseek MXFP4_MOE (experts kept MXFP4, like llama.cpp)", {"qtype": "MXFP4_MOE"}),
        ("localseek Q4_K_M, experts MXFP4 → Q2_K", {"qtype": "Q4_K_M", "experts_type": "Q2_K"}),
    ):
        out = args.workdir / f"localseek-v4-{kw['qtype']}.gguf"
        rows.append((label, *_localseek(args, ckpt, out, **kw)))
        print(rows[-1], flush=True)
    if not args.skip_llama:
        rows.append((LLAMA, *_llama_cpp(args, ckpt, args.workdir / "llama-cpp-v4.gguf")))
        print(rows[-1], flush=True)
    d = V4
    header = (
        f"Checkpoint: {src_size / 1e9:.2f} GB (DeepSeek-V4 layout: {n_layer} layers + 1 MTP block, hidden "
        f"{d['hidden']}, {d['n_head']} heads of {d['head_dim']}, {d['n_routed']} MXFP4 experts of {d['moe']}, "
        f"FP8 with E8M0 scales, vocab {d['vocab']}); llama.cpp writes FP8 → Q8_0, BF16 → BF16, experts MXFP4, "
        f"localseek MXFP4_MOE the same except BF16 → Q8_0; both drop the MTP block. {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, localseek threads={args.threads}, best of {args.repeat} run(s) "
        f"per tool, load average {os.getloadavg()[0]:.1f} at the end."
    )
    return header + "\n\n" + _table(rows, LLAMA)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=2.3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lsbench"))
    ap.add_argument("--layouts", nargs="+", choices=("v3", "v4"), default=["v3", "v4"])
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp tree (default: the pinned sdist's, cached)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the table shows the fastest")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_llama and args.llama_cpp is None:
        args.llama_cpp = llama_cpp_dir(log=print)
    out = [{"v3": bench_v3, "v4": bench_v4}[layout](args) for layout in args.layouts]
    text = "\n\n".join(out)
    print("\n" + text)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
