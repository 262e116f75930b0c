"""Seeded, bounded fuzzing of the parsers that read hostile files: GGUF headers and safetensors checkpoints.

Inputs are generated from small seed files by structured mutations (a count swapped for a string, NaN or a
list; huge counts; bad dimensions, types and offsets; hostile names) and byte-level ones (bit flips, field
overwrites with boundary values, truncation at every header offset). Each input is written to disk and run
through the real code path in a worker subprocess (`fuzz_worker.py`) under `resource` limits — CPU seconds per
input and address space above the worker's baseline — with many inputs per worker. An input must end in success
or a typed error (`LocalseekError`, `QuantizeError`); anything else is a crash, a worker killed by its CPU limit
is a hang, a `MemoryError` is a blow-up. Each failing input is run again alone, in a fresh worker, for its report.

Used by tests/test_fuzz.py (a few thousand inputs, well under a minute) and bench/fuzz.py (the long campaign).
"""

from __future__ import annotations

import json
import math
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

WORKER = Path(__file__).with_name("fuzz_worker.py")
ROOT = Path(__file__).resolve().parent.parent
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
Q = gguf.GGMLQuantizationType
BOUNDARY = (0, 1, 2, 7, 63, 64, 255, 256, 4096, (1 << 16) - 1, 1 << 24, (1 << 31) - 1, (1 << 32) - 1, 1 << 40,
            (1 << 63) - 1, (1 << 64) - 1)
HOSTILE_TEXT = ("", "four", "[/nope]", "[bold red]x[/]", "\x1b[31mred\x1b[0m", "a\nb\rc", "\u202eevil", "x" * 300,
                "../../etc/passwd", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"))


# -- GGUF as a structure we can mutate and serialize --------------------------------------------------------------

@dataclass
class KV:
    key: str
    vtype: int
    value: Any
    itype: int = 0  # item type of an array
    count: int | None = None  # an array's declared length when it lies about its items


@dataclass
class TI:
    name: str
    dims: list[int]  # ggml order
    type_id: int
    offset: int | None = None  # None: laid out in order


@dataclass
class Doc:
    kvs: list[KV]
    tensors: list[TI]
    version: int = 3
    n_tensors: int | None = None  # declared counts, when they lie
    n_kv: int | None = None
    alignment: int = 32


_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q",
        F64: "<d"}


def _str(s: str | bytes) -> bytes:
    b = s if isinstance(s, bytes) else s.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(b)) + b


def _val(vtype: int, value: Any, itype: int = 0, count: int | None = None) -> bytes:
    if vtype == STR:
        return _str(value)
    if vtype == ARR:
        items = list(value)
        body = b"".join(_val(itype, v) for v in items)
        return struct.pack("<IQ", itype, len(items) if count is None else count) + body
    if vtype in _FMT:
        fmt = _FMT[vtype]
        if fmt in ("<f", "<d"):
            return struct.pack(fmt, float(value))
        bits = struct.calcsize(fmt) * 8
        return struct.pack(fmt.upper() if fmt != "<?" else "<B", int(value) % (1 << bits))
    return b""  # an unknown value type: no payload


def tensor_bytes(t: TI) -> int:
    try:
        block, size = gguf.GGML_QUANT_SIZES[Q(t.type_id)]
    except (ValueError, KeyError):
        return 0
    return math.prod(t.dims) // block * size


def serialize(doc: Doc) -> tuple[bytes, int]:
    """(header bytes padded to the alignment, data section size)."""
    out = bytearray(b"GGUF" + struct.pack("<I", doc.version))
    out += struct.pack("<QQ", len(doc.tensors) if doc.n_tensors is None else doc.n_tensors,
                       len(doc.kvs) if doc.n_kv is None else doc.n_kv)
    for kv in doc.kvs:
        out += _str(kv.key) + struct.pack("<I", kv.vtype) + _val(kv.vtype, kv.value, kv.itype, kv.count)
    offset = 0
    align = doc.alignment if doc.alignment > 0 else 32
    for t in doc.tensors:
        out += _str(t.name) + struct.pack("<I", len(t.dims)) + b"".join(struct.pack("<Q", d % (1 << 64)) for d in t.dims)
        out += struct.pack("<IQ", t.type_id % (1 << 32), (offset if t.offset is None else t.offset) % (1 << 64))
        offset += -(-tensor_bytes(t) // align) * align
    out += b"\0" * (-len(out) % align)
    return bytes(out), offset


def _dense_seed() -> Doc:
    tokens = ["<s>", "</s>", "<｜User｜>", "<｜Assistant｜>", "a", "b", "ab", " ", "x", "y"]
    kvs = [
        KV("general.architecture", STR, "qwen2"), KV("general.name", STR, "fuzz-dense"),
        KV("general.file_type", U32, 7), KV("qwen2.block_count", U32, 2), KV("qwen2.context_length", U32, 2048),
        KV("qwen2.embedding_length", U32, 64), KV("qwen2.feed_forward_length", U32, 128),
        KV("qwen2.attention.head_count", U32, 4), KV("qwen2.attention.head_count_kv", U32, 2),
        KV("qwen2.rope.freq_base", F32, 10000.0), KV("general.sampling.temp", F32, 0.6),
        KV("tokenizer.ggml.model", STR, "gpt2"), KV("tokenizer.ggml.tokens", ARR, tokens, STR),
        KV("tokenizer.ggml.token_type", ARR, [1] * len(tokens), I32), KV("tokenizer.ggml.merges", ARR, ["a b"], STR),
        KV("tokenizer.ggml.bos_token_id", U32, 0), KV("tokenizer.ggml.add_bos_token", BOOL, True),
        KV("tokenizer.chat_template", STR, "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
    ]
    tensors = [TI("token_embd.weight", [64, len(tokens)], int(Q.Q8_0))]
    for i in range(2):
        tensors += [TI(f"blk.{i}.attn_norm.weight", [64], int(Q.F32)), TI(f"blk.{i}.attn_q.weight", [64, 64], int(Q.Q8_0)),
                    TI(f"blk.{i}.attn_k.weight", [64, 32], int(Q.Q8_0)), TI(f"blk.{i}.ffn_up.weight", [256, 128], int(Q.Q4_K)),
                    TI(f"blk.{i}.ffn_down.weight", [128, 64], int(Q.Q8_0))]
    tensors += [TI("output_norm.weight", [64], int(Q.F32)), TI("output.weight", [64, len(tokens)], int(Q.Q8_0))]
    return Doc(kvs, tensors)


def _moe_seed() -> Doc:
    a = "deepseek2"
    kvs = [
        KV("general.architecture", STR, a), KV("general.file_type", U32, 15), KV(f"{a}.block_count", U32, 3),
        KV(f"{a}.nextn_predict_layers", U32, 1), KV(f"{a}.context_length", U32, 163840),
        KV(f"{a}.embedding_length", U32, 256), KV(f"{a}.feed_forward_length", U32, 512),
        KV(f"{a}.expert_feed_forward_length", U32, 128), KV(f"{a}.expert_count", U32, 4),
        KV(f"{a}.expert_used_count", U32, 2), KV(f"{a}.attention.head_count", U32, 4),
        KV(f"{a}.attention.head_count_kv", U32, 1), KV(f"{a}.attention.key_length", U32, 96),
        KV(f"{a}.attention.value_length", U32, 64), KV(f"{a}.attention.key_length_mla", U32, 96),
        KV(f"{a}.attention.value_length_mla", U32, 64), KV(f"{a}.attention.kv_lora_rank", U32, 64),
        KV(f"{a}.rope.dimension_count", U32, 32), KV(f"{a}.leading_dense_block_count", U32, 1),
        KV("tokenizer.ggml.tokens", ARR, ["a", "b", "c", "d"], STR), KV("general.alignment", U32, 32),
    ]
    tensors = [TI("token_embd.weight", [256, 4], int(Q.Q8_0))]
    for i in range(3):
        p = f"blk.{i}."
        tensors += [TI(p + "attn_norm.weight", [256], int(Q.F32)), TI(p + "attn_kv_a_mqa.weight", [256, 96], int(Q.Q8_0)),
                    TI(p + "attn_k_b.weight", [32, 64, 4], int(Q.Q8_0))]
        if i == 0:
            tensors.append(TI(p + "ffn_up.weight", [256, 512], int(Q.Q4_K)))
        else:
            tensors += [TI(p + "ffn_gate_inp.weight", [256, 4], int(Q.F32)),
                        TI(p + "ffn_up_exps.weight", [256, 128, 4], int(Q.Q4_K)),
                        TI(p + "ffn_down_shexp.weight", [128, 256], int(Q.Q8_0))]
    tensors += [TI("blk.2.nextn.eh_proj.weight", [512, 256], int(Q.Q8_0)), TI("output.weight", [256, 4], int(Q.Q8_0))]
    return Doc(kvs, tensors)


GGUF_SEEDS = {"dense": _dense_seed, "moe": _moe_seed}


def _copy(doc: Doc) -> Doc:
    return Doc([KV(k.key, k.vtype, list(k.value) if isinstance(k.value, list) else k.value, k.itype, k.count)
                for k in doc.kvs], [TI(t.name, list(t.dims), t.type_id, t.offset) for t in doc.tensors],
               doc.version, doc.n_tensors, doc.n_kv, doc.alignment)


def _swap_value(rng: random.Random) -> tuple[int, Any, int, int | None]:
    """A value of the wrong kind for any key: text, NaN, infinities, negatives, huge numbers, lists, bad types."""
    return rng.choice([
        (STR, rng.choice(HOSTILE_TEXT), 0, None), (F32, math.nan, 0, None), (F32, math.inf, 0, None),
        (F64, -math.inf, 0, None), (F64, 1e300, 0, None), (F32, 61.0, 0, None), (I32, -1, 0, None),
        (I64, -(1 << 63), 0, None), (U32, (1 << 32) - 1, 0, None), (U64, (1 << 64) - 1, 0, None),
        (U64, rng.choice(BOUNDARY), 0, None), (BOOL, True, 0, None), (ARR, [1, 2, 3], I32, None),
        (ARR, [], U32, None), (ARR, ["a", "b"], STR, None), (ARR, [1.5, math.nan], F32, None),
        (ARR, list(range(2000)), U16, None), (ARR, ["x"], STR, 1 << 40), (ARR, [], STR, (1 << 64) - 1),
        (ARR, [], ARR, 3), (13, 0, 0, None), (rng.randrange(13, 1 << 32), 0, 0, None),
    ])


def _mutate_doc(doc: Doc, rng: random.Random) -> str:
    """Apply one structured mutation in place; returns its label."""
    op = rng.randrange(12)
    if op <= 3 and doc.kvs:  # value-type swap (the most common: counts read as text, NaN, lists...)
        kv = rng.choice(doc.kvs)
        kv.vtype, kv.value, kv.itype, kv.count = _swap_value(rng)
        return f"swap {kv.key}"
    if op == 4 and doc.kvs:  # a count at a boundary value, same type
        kv = rng.choice([k for k in doc.kvs if k.vtype in (U32, U64, I32)] or doc.kvs)
        kv.vtype, kv.value = rng.choice([(U32, rng.choice(BOUNDARY) % (1 << 32)), (U64, rng.choice(BOUNDARY))])
        return f"boundary {kv.key}"
    if op == 5 and doc.tensors:  # dimensions
        t = rng.choice(doc.tensors)
        choice = rng.randrange(5)
        if choice == 0:
            t.dims = []
        elif choice == 1:
            t.dims = t.dims + [rng.choice(BOUNDARY) for _ in range(rng.randrange(1, 4))]
        elif choice == 2 and t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(BOUNDARY)
        elif choice == 3:
            t.dims = [0] * len(t.dims)
        else:
            t.dims = [rng.choice(BOUNDARY) for _ in range(rng.randrange(0, 9))]
        return f"dims {t.name}"
    if op == 6 and doc.tensors:  # type ids
        t = rng.choice(doc.tensors)
        t.type_id = rng.choice([4, 5, 31, 36, 39, 99, 255, (1 << 32) - 1, rng.randrange(0, 45)])
        return f"type {t.name}"
    if op == 7 and doc.tensors:  # offsets
        t = rng.choice(doc.tensors)
        t.offset = rng.choice([1, 31, 33, 1 << 40, (1 << 64) - 1, rng.choice(BOUNDARY)])
        return f"offset {t.name}"
    if op == 8 and doc.tensors:  # names
        t = rng.choice(doc.tensors)
        t.name = rng.choice([doc.tensors[0].name, "", "blk." + "9" * rng.choice([7, 40, 5000]) + ".attn_q.weight",
                             "blk.-1.ffn_up_exps.weight", "token_embd" + "x" * 70, *HOSTILE_TEXT[2:8]])
        return "name"
    if op == 9:  # declared counts that lie
        if rng.random() < 0.5:
            doc.n_tensors = rng.choice(BOUNDARY)
        else:
            doc.n_kv = rng.choice(BOUNDARY)
        return "counts"
    if op == 10:  # architecture name, alignment, version
        what = rng.randrange(3)
        if what == 0:
            arch = next((k for k in doc.kvs if k.key == "general.architecture"), None)
            if arch is not None:
                arch.vtype, arch.value = STR, rng.choice(["llama4x", "QWEN2", "", "a" * 100, *HOSTILE_TEXT[1:8]])
            return "arch"
        if what == 1:
            doc.kvs.append(KV("general.alignment", *rng.choice([(U32, 0), (U32, 3), (U32, 1), (U32, 1 << 31),
                                                                 (U64, 1 << 40), (STR, "x"), (F32, 32.0)])))
            return "alignment"
        doc.version = rng.choice([0, 1, 2, 4, (1 << 32) - 1])
        return "version"
    # duplicate or remove entries
    if doc.kvs and rng.random() < 0.5:
        kv = rng.choice(doc.kvs)
        doc.kvs.append(KV(kv.key, kv.vtype, kv.value, kv.itype, kv.count)) if rng.random() < 0.5 else doc.kvs.remove(kv)
        return "dup/remove kv"
    if doc.tensors:
        t = rng.choice(doc.tensors)
        doc.tensors.append(TI(t.name, list(t.dims), t.type_id)) if rng.random() < 0.5 else doc.tensors.remove(t)
    return "dup/remove tensor"


@dataclass
class Case:
    """One input: the files to write (name → bytes, plus a sparse tail length) and a label for reports."""

    label: str
    files: dict[str, tuple[bytes, int]]  # name → (content, extra sparse bytes after it)
    entry: str  # the file (GGUF) or folder (safetensors: "") the worker opens


def _gguf_case(label: str, header: bytes, data: int, name: str = "model.gguf") -> Case:
    return Case(label, {name: (header, data if data < 1 << 40 else 0)}, name)


def gguf_cases(seed: int, n_mutants: int, *, truncate_every: int = 1) -> Iterator[Case]:
    """Structured mutants, byte-level mutants (half each) and truncations of each seed's header at every
    `truncate_every`-th offset."""
    rng = random.Random(seed)
    seeds = {k: serialize(f()) for k, f in GGUF_SEEDS.items()}
    for k, (header, data) in seeds.items():
        yield _gguf_case(f"seed {k}", header, data)
    for i in range(n_mutants):
        kind = rng.choice(list(GGUF_SEEDS))
        if i % 2 == 0:
            doc = GGUF_SEEDS[kind]()
            labels = [_mutate_doc(doc, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
            header, data = serialize(doc)
            yield _gguf_case(f"{kind}: {'; '.join(labels)}", header, data)
        else:
            header, data = seeds[kind]
            yield _gguf_case(f"{kind}: bytes", _mutate_bytes(header, rng), data)
    for k, (header, data) in seeds.items():
        for cut in range(0, len(header), truncate_every):
            yield _gguf_case(f"{k}: truncated at {cut}", header[:cut], 0)
    header, data = seeds["dense"]
    for name in ("x-00001-of-00000.gguf", "x-00002-of-00001.gguf", "x-00000-of-00002.gguf", "x-00001-of-00001.gguf",
                 "x-00001-of-99999.gguf", "[b]x[-b]\x1b[31m[bold.gguf"):
        yield _gguf_case(f"file name {name!r}", header, data, name)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        op = rng.randrange(4)
        pos = rng.randrange(max(1, len(b)))
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            width = rng.choice([1, 4, 8])
            value = rng.choice(BOUNDARY) % (1 << (8 * width))
            b[pos:pos + width] = value.to_bytes(width, "little")
        elif op == 2:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        else:
            del b[pos:pos + rng.randrange(1, 9)]
    return bytes(b)


# -- safetensors --------------------------------------------------------------------------------------------------

def _st_seed() -> tuple[dict[str, Any], bytes]:
    """(header, data): an F32, a BF16, an FP8 weight with its block scales."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {
        "model.norm.weight": ("F32", rng.standard_normal(16).astype(np.float32)),
        "model.embed_tokens.weight": ("BF16", (rng.standard_normal((8, 16)).astype(np.float32).view(np.uint32) >> 16)
                                      .astype(np.uint16)),
        "model.layers.0.mlp.up_proj.weight": ("F8_E4M3", rng.integers(0, 0x7E, (4, 8), dtype=np.uint8)),
        "model.layers.0.mlp.up_proj.weight_scale_inv": ("F32", np.ones((1, 1), dtype=np.float32)),
        "model.layers.0.mlp.down_proj.weight": ("F16", rng.standard_normal((4, 4)).astype(np.float16)),
    }
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, (dtype, arr) in arrays.items():
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def _st_file(header: Any, data: bytes, *, raw: bytes | None = None, length: int | None = None) -> bytes:
    body = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length % (1 << 64)) + body + data


def _st_mutate_header(header: dict[str, Any], data: bytes, rng: random.Random) -> tuple[str, bytes]:
    h = json.loads(json.dumps(header))
    names = [n for n in h if n != "__metadata__"]
    name = rng.choice(names)
    entry = h[name]
    op = rng.randrange(12)
    weird = rng.choice([-1, -8, 1.5, "8", None, True, [], [1, 2], {"a": 1}, 1 << 64, 1 << 40, float("nan"),
                        10 ** 30, 0])
    if op == 0:
        entry["dtype"] = rng.choice(["F64", "I8", "", ["F32"], 4, None, "f32", "F8_E5M2", "BOOL", "\x1b[31m"])
        label = "dtype"
    elif op == 1:
        entry["shape"] = rng.choice([[-4, 4], [1.5], ["4"], [[4]], [], [0], [1 << 62, 1 << 62], [4] * 20, None,
                                     "4", {"0": 4}, [True, 4], [weird]])
        label = "shape"
    elif op == 2:
        entry["data_offsets"] = rng.choice([[-8, 56], [8, 4], [0], [0, 1, 2], "0,64", None, [0.0, 64.0], ["0", "64"],
                                            [0, 1 << 64], [1 << 63, (1 << 63) + 64], [True, 65], [weird, weird]])
        label = "offsets"
    elif op == 3:  # overlap another tensor's bytes (same span length)
        other = h[rng.choice(names)]
        b, e = entry["data_offsets"]
        ob = other["data_offsets"][0]
        entry["data_offsets"] = [ob + rng.choice([0, 1, 2]), ob + rng.choice([0, 1, 2]) + (e - b)]
        label = "overlap"
    elif op == 4:
        h[name] = rng.choice([None, [], "x", 4, {"dtype": "F32"}, {"shape": [4]}, {**entry, "extra": weird}])
        label = "entry"
    elif op == 5:
        h["__metadata__"] = rng.choice([None, [], 4, {"a": 1}, {"a": [1]}, "x"])
        label = "metadata"
    elif op == 6:
        return "not a dict", _st_file(rng.choice([[], "x", 4, None, [h]]), data)
    elif op == 7:
        depth = rng.choice([100, 1000, 100000])
        return f"nested {depth}", _st_file(None, data, raw=b"[" * depth + b"]" * depth)
    elif op == 8:
        body = json.dumps(h).encode()
        return "header length", _st_file(None, data, raw=body, length=rng.choice([0, 1, len(body) - 1, len(body) + 1,
                                                                                     len(body) + len(data) + 1,
                                                                                     1 << 32, (1 << 64) - 1]))
    elif op == 9:
        body = json.dumps(h).encode()
        return "bytes", _st_file(None, data, raw=_mutate_bytes(body, rng))
    elif op == 10:
        h[rng.choice(HOSTILE_TEXT)] = dict(entry)
        label = "hostile name"
    else:
        entry["data_offsets"] = [entry["data_offsets"][0], entry["data_offsets"][1] + rng.choice([-1, 1, 1 << 20])]
        label = "span"
    return label, _st_file(h, data)


def safetensors_cases(seed: int, n_mutants: int, *, truncate_every: int = 1) -> Iterator[Case]:
    """Header mutations of one shard, truncations of the seed at every `truncate_every`-th header offset, and
    hostile indexes (shards outside the folder, wrong types)."""
    rng = random.Random(seed)
    header, data = _st_seed()
    good = _st_file(header, data)
    yield Case("seed", {"model.safetensors": (good, 0)}, "")
    for _ in range(n_mutants):
        label, content = _st_mutate_header(header, data, rng)
        yield Case(label, {"model.safetensors": (content, 0)}, "")
    end = 8 + struct.unpack("<Q", good[:8])[0]
    for cut in range(0, end + 1, truncate_every):
        yield Case(f"truncated at {cut}", {"model.safetensors": (good[:cut], 0)}, "")
    names = [n for n in header if n != "__metadata__"]
    for target in ("../../etc/passwd", "/etc/passwd", "../outside.safetensors", "sub/../../x.safetensors",
                   "a\x00b.safetensors", "", ".", "sub/model.safetensors", "model.safetensors"):
        index = {"weight_map": {n: target for n in names}}
        yield Case(f"index → {target!r}", {"model.safetensors.index.json": (json.dumps(index).encode(), 0),
                                           "model.safetensors": (good, 0)}, "")
    for index in ([], {"weight_map": []}, {"weight_map": {"a": 4}}, {"weight_map": {"a": ["x"]}},
                  {"weight_map": None}, {"weight_map": {n: "model.safetensors" for n in [*names, "missing"]}}, "x"):
        yield Case(f"index {str(index)[:40]}", {"model.safetensors.index.json": (json.dumps(index).encode(), 0),
                                                "model.safetensors": (good, 0)}, "")


# -- config.json ----------------------------------------------------------------------------------------------------

def config_cases(seed: int, n_mutants: int, model_dirs: list[Path]) -> Iterator[Case]:
    """config.json mutations over real (tiny) model folders: every other file is linked from `model_dirs`."""
    rng = random.Random(seed)
    for i in range(n_mutants):
        src = rng.choice(model_dirs)
        config: Any = json.loads((src / "config.json").read_text())
        labels = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            if not isinstance(config, dict):
                break
            op = rng.randrange(10)
            key = rng.choice(sorted(config))
            if op <= 5:
                config[key] = rng.choice([
                    "four", "", None, True, -1, 0, 1e8, 100_000_000, 2**64, 1.5, float("nan"), float("inf"), [],
                    [4], {"a": 1}, "\x1b[31m", rng.choice(BOUNDARY)])
                labels.append(f"{key}=")
            elif op == 6:
                del config[key]
                labels.append(f"-{key}")
            elif op == 7:
                config[rng.choice(["rope_scaling", "quantization_config", "architectures"])] = rng.choice(
                    [[1], "x", 4, {"weight_block_size": [0, 128]}, {"weight_block_size": "128"}, {"type": "yarn",
                     "factor": "big"}, ["NoSuchForCausalLM"], [4], {"rope_type": None, "factor": float("nan")}])
                labels.append("nested")
            elif op == 8:
                config = rng.choice([[], "x", 4, None, [config]])
                labels.append("not a dict")
            else:
                config["num_hidden_layers"] = rng.choice([0, 1, 512, 513, 10**8, -3])
                labels.append("layers")
        files = {"config.json": (json.dumps(config).encode(), 0)}
        links = {p.name: str(p) for p in src.iterdir() if p.name != "config.json"}
        yield Case(f"{src.name}: {', '.join(labels)}", {**files, **{f"@{k}": (v.encode(), 0) for k, v in
                                                                       links.items()}}, "")


# -- running ------------------------------------------------------------------------------------------------------

@dataclass
class Failure:
    index: int
    label: str
    outcome: str  # "crash", "hang", "blowup", "died"
    detail: str


@dataclass
class Report:
    inputs: int = 0
    outcomes: Counter = field(default_factory=Counter)  # "ok", "typed", "crash", "hang", "blowup", "died"
    stages: Counter = field(default_factory=Counter)  # how far the successful inputs got
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bad(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k not in ("ok", "typed"))

    def summary(self) -> str:
        return (f"{self.inputs} inputs in {self.seconds:.1f} s: " + ", ".join(f"{k} {v}" for k, v in
                                                                            sorted(self.outcomes.items()))
                + "".join(f"\n  #{f.index} {f.outcome} [{f.label}]: {f.detail}" for f in self.failures[:20]))


def _write(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, (content, extra) in case.files.items():
        if name.startswith("@"):  # a link to a shared file (name → target path)
            (folder / name[1:]).symlink_to(content.decode())
            continue
        path = folder / name
        path.write_bytes(content)
        if extra:
            try:
                os.truncate(path, len(content) + extra)  # sparse: no disk blocks
            except OSError:
                pass
    return folder / case.entry if case.entry else folder


def run_cases(kind: str, cases: list[Case], workdir: Path, *, cpu_seconds: int = 5, memory_mb: int = 256,
              batch: int = 1500, wall_seconds: float = 60.0) -> Report:
    """Run every case through the worker (`kind`: "gguf" or "safetensors"), `batch` cases per worker process."""
    start = time.perf_counter()
    report = Report(inputs=len(cases))
    paths = [str(_write(c, workdir / f"{i:06d}")) for i, c in enumerate(cases)]
    todo = list(range(len(cases)))
    while todo:
        chunk, todo = todo[:batch], todo[batch:]
        done, culprit, how = _run_worker(kind, [paths[i] for i in chunk], cpu_seconds, memory_mb, wall_seconds,
                                         report)
        if culprit is not None:  # the worker died on chunk[culprit]: record it, go on after it
            index = chunk[culprit]
            report.outcomes[how] += 1
            report.failures.append(Failure(index, cases[index].label, how, _alone(kind, paths[index], cpu_seconds,
                                                                                  memory_mb, wall_seconds)))
            todo = chunk[culprit + 1:] + todo
        for i, outcome, detail in done:
            index = chunk[i]
            if outcome in ("ok", "typed"):
                report.outcomes[outcome] += 1
                report.stages[detail if outcome == "ok" else "typed"] += 1
            else:
                report.outcomes[outcome] += 1
                report.failures.append(Failure(index, cases[index].label, outcome,
                                               _alone(kind, paths[index], cpu_seconds, memory_mb, wall_seconds)))
    keep = {f.index for f in report.failures}
    for i in range(len(cases)):  # the failing inputs stay for inspection; the rest would only slow cleanup
        if i not in keep:
            shutil.rmtree(workdir / f"{i:06d}", ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report


def _run_worker(kind: str, paths: list[str], cpu_seconds: int, memory_mb: int, wall_seconds: float,
                report: Report | None = None) -> tuple[list[tuple[int, str, str]], int | None, str]:
    """Results per input; and, when the worker died, the index it died on and how ("hang": killed by its CPU
    limit or the wall clock; "died" otherwise)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(WORKER.parent)]), LOCALSEEK_THREADS="1",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), kind, str(cpu_seconds), str(memory_mb)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(paths))
    proc.stdin.close()
    results: list[tuple[int, str, str]] = []
    current: int | None = None
    timed_out = False
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], wall_seconds)
        if not ready:
            timed_out = True
            proc.kill()
            break
        line = proc.stdout.readline()
        if not line:
            break
        tag, _, rest = line.rstrip("\n").partition(" ")
        if tag == "S":
            current = int(rest)
        elif tag == "R":
            i, outcome, detail = json.loads(rest)
            results.append((i, outcome, detail))
            current = None
    proc.wait()
    if current is None:
        return results, None, ""
    killed_by_cpu = proc.returncode in (-24, -9) or timed_out  # SIGXCPU, or SIGKILL at the hard limit
    return results, current, "hang" if killed_by_cpu else "died"


def _alone(kind: str, path: str, cpu_seconds: int, memory_mb: int, wall_seconds: float) -> str:
    """Run one input in a fresh worker (the report of a failure: its traceback, or how the worker died)."""
    results, culprit, how = _run_worker(kind, [path], cpu_seconds, memory_mb, wall_seconds)
    if culprit is not None:
        return f"worker {how} on it alone too ({path})"
    if not results:
        return f"no result ({path})"
    _, outcome, detail = results[0]
    return f"alone: {outcome}: {detail} ({path})"


__all__ = ["Case", "Report", "config_cases", "gguf_cases", "run_cases", "safetensors_cases"]
