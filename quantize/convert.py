"""The core API: a Hugging Face folder (FP8/BF16/F16/F32 safetensors) or a GGUF → a quantized GGUF.

    from quantize import convert
    result = convert("DeepSeek-R1", "r1-q4_k_m.gguf", qtype="Q4_K_M", experts_type="IQ2_XXS",
                     imatrix="r1.imatrix", keep_mtp=True, progress=print)

Hugging Face sources stream tensor by tensor, a bounded chunk of rows at a time: FP8 blocks are decoded and
scaled (fp8.py), then quantized by ggml's own row quantizer (native.py) straight into the output file
(writer.py). GGUF sources go through llama.cpp's `llama_model_quantize`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from quantize import native
from quantize.archs import Context, OutTensor, for_config
from quantize.errors import BadWeights, OutputExists, SourceError, UnsupportedType, shown
from quantize.fp8 import f32_to_bf16
from quantize.safetensors import Checkpoint
from quantize.tokenizer import add_to_gguf, read_vocab
from quantize.types import NEEDS_IMATRIX, TypePlanner, nbytes, parse_ftype, parse_tensor_type
from quantize.writer import (
    GGUFStreamWriter,
    PlannedTensor,
    clean_stale_partials,
    open_locked,
    partial_path,
    split_paths,
)

log = logging.getLogger(__name__)
T = gguf.GGMLQuantizationType
F16_MAX = 65504.0


@dataclass(frozen=True)
class Progress:
    """One step of a conversion, for a progress bar."""

    stage: str  # "cleanup" (a stale partial output removed: `name`, `bytes_done`), "plan", "tensor", "done"
    index: int = 0  # tensors finished so far
    total: int = 0
    name: str = ""
    ggml_type: str = ""
    bytes_done: int = 0
    bytes_total: int = 0


@dataclass
class ConvertResult:
    paths: list[Path]
    arch: str
    qtype: str
    n_tensors: int
    bytes_written: int
    seconds: float
    types: dict[str, int] = field(default_factory=dict)  # GGML type name → number of tensors
    mtp_layers: int = 0
    fallbacks: list[str] = field(default_factory=list)
    requantized: bool = False


ProgressFn = Callable[[Progress], None]


def default_output(source: Path, qtype: str) -> Path:
    source = Path(source)
    stem = source.name.removesuffix(".gguf")
    return source.parent / f"{stem}-{qtype}.gguf"


def convert(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    qtype: str = "Q8_0",
    experts_type: str | None = None,
    keep_mtp: bool = True,
    mtp_only: bool = False,
    imatrix: str | os.PathLike[str] | None = None,
    pure: bool = False,
    split_max_size: int | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> ConvertResult:
    """Convert `source` to GGUF at `out` (default: beside the source, named after the type).

    `mtp_only`: write only the multi-token-prediction block (with the embeddings and output head it needs) as
    a draft model of its own, as llama.cpp's converter does with `--mtp` (DeepSeek-V4, whose MTP block cannot
    live in the main file). Raises QuantizeError subclasses for every bad input; on any failure (or
    KeyboardInterrupt) nothing is left at `out`."""
    source = Path(source)
    name, ftype, default = parse_ftype(qtype)
    experts = parse_tensor_type(experts_type) if experts_type else None
    out = Path(out) if out is not None else default_output(source, name)
    threads = threads or min(2, os.cpu_count() or 1)
    im = native.load_imatrix(imatrix) if imatrix else None
    for path, size in clean_stale_partials(out):  # left by a run that was killed (kill -9, power loss)
        log.info("removed %s (%d bytes), left by an earlier run that was stopped", path, size)
        if progress:
            progress(Progress("cleanup", name=str(path), bytes_done=size))
    if source.is_file() and source.suffix == ".gguf":
        return _requantize(source, out, name, ftype, experts, im, force, threads, pure, progress)
    if not source.is_dir():
        raise SourceError(f"{source} is neither a Hugging Face model folder nor a .gguf file.")
    return _convert_hf(
        source,
        out,
        name,
        ftype,
        default,
        experts,
        im,
        keep_mtp,
        pure,
        split_max_size,
        force,
        threads,
        progress,
        mtp_only=mtp_only,
    )


# config.json values the architecture modules size things by, as (least, most): whole numbers, checked before any
# of them is used, so "four", 1e8 or a list is one line instead of a crash or gigabytes of plan. The upper bounds
# leave a wide margin over any real model (DeepSeek-V3: 61 layers, 256 experts, 7168 wide). New architectures:
# add the counts they read. null is allowed (optional keys such as q_lora_rank).
CONFIG_COUNTS: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, 512), "hidden_size": (1, 1 << 20), "intermediate_size": (0, 1 << 22),
    "moe_intermediate_size": (0, 1 << 22), "num_attention_heads": (1, 1 << 14), "num_key_value_heads": (0, 1 << 14),
    "n_routed_experts": (0, 1 << 16), "num_experts": (0, 1 << 16), "num_experts_per_tok": (0, 1 << 16),
    "n_shared_experts": (0, 1 << 16), "first_k_dense_replace": (0, 512), "num_nextn_predict_layers": (0, 16),
    "kv_lora_rank": (0, 1 << 16), "q_lora_rank": (0, 1 << 16), "qk_rope_head_dim": (0, 1 << 16),
    "qk_nope_head_dim": (0, 1 << 16), "v_head_dim": (0, 1 << 16), "head_dim": (0, 1 << 16),
    "vocab_size": (1, 1 << 24), "max_position_embeddings": (1, 1 << 24), "n_group": (0, 1 << 16),
    "topk_group": (0, 1 << 16),
}
CONFIG_NUMBERS = ("rms_norm_eps", "rope_theta", "routed_scaling_factor")  # finite numbers
ROPE_NUMBERS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "extrapolation_factor",
                "attention_factor", "attn_factor", "mscale", "mscale_all_dim", "rope_theta", "low_freq_factor",
                "high_freq_factor")
CONFIG_DICTS = ("rope_scaling", "rope_parameters", "quantization_config")
_MAX_CONFIG = 16 * 1024 * 1024


class Config(dict):
    """config.json as the architecture modules read it: a key they need that is absent is a SourceError."""

    path: Path = Path("config.json")

    def __missing__(self, key: str) -> None:
        raise SourceError(f"{self.path} has no {shown(key)}, which this architecture needs; download it again.")

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if value is None:  # `config[key]` is how the architectures read what they cannot do without
            raise SourceError(f"{self.path}: {shown(key)} is null, which this architecture needs; download it again.")
        return value


def _read_config(source: Path) -> Config:
    path = source / "config.json"
    if not path.is_file():
        raise SourceError(f"{path} is missing; is {source} a Hugging Face model folder?")
    if path.stat().st_size > _MAX_CONFIG:
        raise SourceError(f"{path} is over 16 MiB, not a model configuration; download it again.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise SourceError(f"{path} is not valid JSON; download it again.") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path} is not a JSON object of settings; download it again.")
    config = Config(data)
    config.path = path
    _check_config(config)
    return config


def _check_config(c: Config) -> None:
    def bad(key: str, what: str) -> SourceError:
        return SourceError(f"{c.path}: {key} is {shown(repr(c[key]), 40)}, {what}; the file is damaged or not a "
                           "model configuration — download it again.")

    for key, (least, most) in CONFIG_COUNTS.items():
        value = c.get(key)
        if value is not None and (type(value) is not int or not least <= value <= most):
            raise bad(key, f"not a whole number from {least:,} to {most:,}")
    for key in CONFIG_NUMBERS:
        value = c.get(key)
        if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
            raise bad(key, "not a finite number")
    for key in CONFIG_DICTS:
        if c.get(key) is not None and not isinstance(c[key], dict):
            raise bad(key, "not a JSON object")
    for key in ("rope_scaling", "rope_parameters"):  # every value in them is a number or a name
        for name, value in (c.get(key) or {}).items():
            if value is not None and not isinstance(value, str) and (
                    type(value) not in (int, float) or not math.isfinite(value)):
                raise SourceError(f"{c.path}: {key}.{shown(name, 40)} is {shown(repr(value), 40)}, not a number; "
                                  "download it again.")
            if name in ROPE_NUMBERS and isinstance(value, str):
                raise SourceError(f"{c.path}: {key}.{name} is {shown(repr(value), 40)}, not a number; download it "
                                  "again.")
        rope = c.get(key) or {}
        if (rope.get("rope_type") or rope.get("type")) == "yarn" and rope.get("factor") is not None \
                and rope.get("original_max_position_embeddings") is None:
            raise SourceError(f"{c.path}: {key} is YaRN without original_max_position_embeddings; download it again.")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # a token id, or (eos) a list of them
        value = c.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(type(v) is int and 0 <= v < 1 << 31 for v in ids):
            raise bad(key, "not a token id")
    archs = c.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise bad("architectures", "not a list of names")
    if c.get("model_type") is not None and not isinstance(c["model_type"], str):
        raise bad("model_type", "not a name")
    block = (c.get("quantization_config") or {}).get("weight_block_size")
    if block is not None and not (isinstance(block, list) and len(block) == 2
                                  and all(type(b) is int and 1 <= b <= 4096 for b in block)):
        raise SourceError(f"{c.path}: quantization_config.weight_block_size is {shown(repr(block), 40)}, not two "
                          "block sizes; download it again.")


def needs_mtp_file(source: str | os.PathLike[str]) -> bool:
    """Whether `source` (a Hugging Face folder) ships an MTP block that only a file of its own can hold (DeepSeek-V4):
    then `convert(..., mtp_only=True)` writes it, and the model file alone drafts nothing."""
    source = Path(source)
    if not source.is_dir():
        return False
    arch = for_config(_read_config(source))
    if arch.mtp_in_file or not arch.mtp_only_supported or arch.n_mtp() <= 0:
        return False
    ckpt = Checkpoint(source)
    try:
        return bool(arch.has_mtp(ckpt))
    finally:
        ckpt.close()


def plan_conversion(
    source: Path,
    *,
    qtype: str = "Q8_0",
    experts_type: str | None = None,
    keep_mtp: bool = True,
    mtp_only: bool = False,
    pure: bool = False,
    has_imatrix: bool = False,
):
    """(arch, metadata writer, [(OutTensor, PlannedTensor)], planner, checkpoint) without writing anything.
    The caller must close the checkpoint."""
    _, ftype, default = parse_ftype(qtype)
    experts = parse_tensor_type(experts_type) if experts_type else None
    config = _read_config(source)
    arch = for_config(config)
    ckpt = Checkpoint(source)
    try:
        keep = (keep_mtp or mtp_only) and arch.n_mtp() > 0 and arch.has_mtp(ckpt)
        if mtp_only and not (keep and arch.mtp_only_supported):
            raise UnsupportedType(
                f"{source.name}: an MTP-only file is made for DeepSeek-V4 checkpoints that ship their MTP "
                "block; this one " + ("does not." if not keep else "keeps it in the main file (the default).")
            )
        if keep and not (arch.mtp_in_file or mtp_only):
            keep = False  # V4: the MTP block goes to a file of its own (mtp_only), not into the model's
        block = tuple((config.get("quantization_config") or {}).get("weight_block_size") or (128, 128))
        ctx = Context(config, ckpt, keep, block, mtp_only)  # type: ignore[arg-type]
        outs = arch.plan(ctx)
        planner = TypePlanner(
            arch.facts(keep), ftype, default, has_imatrix=has_imatrix, pure=pure, experts=experts
        )
        planner.prepare([t.name for t in outs])
        planned = []
        for t in outs:
            gtype = planner.choose(t.name, t.shape, t.native, t.keep_f32)
            planned.append((t, PlannedTensor(t.name, t.shape, gtype, nbytes(gtype, t.shape))))
        w = gguf.GGUFWriter(None, arch.gguf_arch)
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(source.name)
        w.add_size_label(_size_label(outs))
        _sampling_defaults(w, source)
        arch.metadata(w, keep)
        w.add_file_type(int(ftype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab = read_vocab(source, config.get("vocab_size"), arch.tokenizer_pre)
        add_to_gguf(w, source, vocab)
        if gguf.Keys.Tokenizer.CHAT_TEMPLATE not in w.kv_data[0] and (
            template := arch.default_chat_template(source)
        ):
            w.add_chat_template(template)
        return arch, w, planned, planner, ckpt, keep
    except BaseException:
        ckpt.close()
        raise


def _size_label(outs: list[OutTensor]) -> str:
    """ "671B"-style label, counted as gguf-py counts it ("64x200M" for MoE: experts × per-expert size)."""
    total = shared = expert = expert_sum = n_expert_tensors = 0
    for t in outs:
        size = int(np.prod(t.shape))
        total += size
        if "_exps." in t.name and len(t.shape) >= 3:
            expert += size // t.shape[0]
            expert_sum += t.shape[0]
            n_expert_tensors += 1
        else:
            shared += size
    return gguf.size_label(total, shared, expert, expert_sum // n_expert_tensors if n_expert_tensors else 0)


def _sampling_defaults(w: gguf.GGUFWriter, source: Path) -> None:
    """The model's recommended sampling (generation_config.json), as llama.cpp's converter records it."""
    path = source / "generation_config.json"
    try:
        gen = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (ValueError, RecursionError):
        return
    if not isinstance(gen, dict):
        return
    if isinstance(gen.get("top_k"), int):
        w.add_sampling_top_k(gen["top_k"])
    if isinstance(gen.get("top_p"), (int, float)):
        w.add_sampling_top_p(float(gen["top_p"]))
    if isinstance(gen.get("temperature"), (int, float)):
        w.add_sampling_temp(float(gen["temperature"]))


def _convert_hf(
    source: Path,
    out: Path,
    name: str,
    ftype,
    default,
    experts,
    im,
    keep_mtp: bool,
    pure: bool,
    split_max_size: int | None,
    force: bool,
    threads: int,
    progress: ProgressFn | None,
    *,
    mtp_only: bool = False,
) -> ConvertResult:
    start = time.perf_counter()
    _check_output(out, force)
    arch, w, planned, planner, ckpt, keep = plan_conversion(
        source,
        qtype=name,
        experts_type=experts.name if experts else None,
        keep_mtp=keep_mtp,
        mtp_only=mtp_only,
        pure=pure,
        has_imatrix=im is not None,
    )
    try:
        n_layer = arch.n_layer()
        fallbacks = list(planner.fallbacks)
        planned = [(t, _imatrix_check(p, im, n_layer, fallbacks)) for t, p in planned]
        tensors = [p for _, p in planned]
        total = sum(p.nbytes for p in tensors)
        if progress:
            progress(Progress("plan", 0, len(tensors), bytes_total=total))
        done = 0
        with GGUFStreamWriter(
            out, w.kv_data[0], tensors, split_max_size=split_max_size, force=force
        ) as writer:
            for i, (t, p) in enumerate(planned):
                writer.begin(p)
                values = im.get(t.name.removesuffix(".weight") + ".weight") if im else None
                chunks = _prefetch(t.chunks()) if threads > 1 else t.chunks()
                for data in _encode(t, chunks, p.ggml_type, values, threads):
                    writer.write(data)
                    done += len(data)
                writer.end()
                if progress:
                    progress(Progress("tensor", i + 1, len(tensors), t.name, p.ggml_type.name, done, total))
        types: dict[str, int] = {}
        for p in tensors:
            types[p.ggml_type.name] = types.get(p.ggml_type.name, 0) + 1
        result = ConvertResult(
            writer.paths,
            arch.gguf_arch,
            name,
            len(tensors),
            done,
            time.perf_counter() - start,
            types,
            arch.n_mtp() if keep else 0,
            fallbacks,
        )
        if progress:
            progress(Progress("done", len(tensors), len(tensors), bytes_done=done, bytes_total=total))
        return result
    finally:
        ckpt.close()


def _check_output(out: Path, force: bool) -> None:
    if force:
        return
    for p in [out, *split_paths(out, 2)[:1]]:
        if p.exists():
            raise OutputExists(f"{p} already exists; pass --force to overwrite it or choose another -o.")


def _imatrix_check(
    p: PlannedTensor, im: dict[str, np.ndarray] | None, n_layer: int, fallbacks: list[str]
) -> PlannedTensor:
    if p.ggml_type not in NEEDS_IMATRIX or (im and p.name in im):
        return p
    if p.name.startswith(f"blk.{n_layer}."):  # the MTP block never runs during imatrix collection
        fallbacks.append(f"{p.name}: {p.ggml_type.name} → Q4_K (no importance data for the MTP block)")
        t = T.Q4_K if p.shape[-1] % 256 == 0 else T.Q5_0 if p.shape[-1] % 32 == 0 else T.F16
        return PlannedTensor(p.name, p.shape, t, nbytes(t, p.shape))
    if im is None:
        raise UnsupportedType(
            f"{p.ggml_type.name} needs an importance matrix: pass --imatrix FILE "
            "(made with llama-imatrix), or choose a K-type such as Q2_K."
        )
    raise UnsupportedType(
        f"The importance matrix has no entry for {p.name}, which {p.ggml_type.name} needs; "
        "was it computed on this model?"
    )


def _in_thread(work: Callable[[], None]) -> None:
    """Run a long native call (llama.cpp's quantizer) in a thread and wait for it in short steps, so Ctrl-C and
    SIGTERM reach this thread's handlers at once instead of after the call. On an interrupt the call is abandoned
    (a daemon thread, ended with the process) and the caller's cleanup runs."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 — handed to the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="quantize-native", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.2)
    if failure:
        raise failure[0]


def _prefetch(chunks, depth: int = 2):
    """Decode the next chunks (FP8 lookup, block scales, NaN check) in a thread while this one quantizes and
    writes: both cores busy, at most `depth` + 1 chunks in memory."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for c in chunks:
                while not stop.is_set():
                    try:
                        q.put(c, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # noqa: BLE001
            q.put(exc)  # handed to the consumer and re-raised there

    worker = threading.Thread(target=produce, name="quantize-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def _encode(t: OutTensor, chunks, gtype, imatrix: np.ndarray | None, threads: int):
    """Yield the bytes of tensor `t` as `gtype`, one bounded chunk at a time."""
    n_per_row = t.shape[-1]
    slices = None
    if imatrix is not None and gtype not in (T.F32, T.F16, T.BF16):
        if imatrix.size == n_per_row:
            slices = imatrix[None, :]
        elif t.rows_per_expert and imatrix.size == n_per_row * (t.n_rows // t.rows_per_expert):
            slices = imatrix.reshape(-1, n_per_row)
        else:
            log.warning(
                "importance matrix for %s has %d values, expected %d; ignoring it",
                t.name,
                imatrix.size,
                n_per_row,
            )
    if t.native is not None and gtype == t.native:  # MXFP4 experts, integer tables: their bytes as they are
        assert t.raw_chunks is not None
        for raw in t.raw_chunks():
            yield np.ascontiguousarray(raw).tobytes()
        return
    row = 0
    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk.reshape(-1, n_per_row), dtype=np.float32)
        if gtype == T.F32:
            yield chunk.tobytes()
        elif gtype == T.F16:
            if np.abs(chunk).max(initial=0.0) > F16_MAX:
                raise BadWeights(f"{t.name} has values beyond F16's range (±65504); convert to BF16 instead.")
            yield chunk.astype(np.float16).tobytes()
        elif gtype == T.BF16:
            yield f32_to_bf16(chunk).tobytes()
        elif slices is None or len(slices) == 1:
            yield native.quantize_rows(
                int(gtype), chunk, None if slices is None else slices[0], threads
            ).tobytes()
        else:  # split the chunk where the expert (importance slice) changes
            r, per = 0, t.rows_per_expert
            while r < len(chunk):
                e = (row + r) // per
                r1 = min(len(chunk), (e + 1) * per - row)
                yield native.quantize_rows(int(gtype), chunk[r:r1], slices[e], threads).tobytes()
                r = r1
        row += len(chunk)


def _requantize(
    source: Path,
    out: Path,
    name: str,
    ftype,
    experts,
    im,
    force: bool,
    threads: int,
    pure: bool,
    progress: ProgressFn | None,
) -> ConvertResult:
    start = time.perf_counter()
    if out.exists() and not force:
        raise OutputExists(f"{out} already exists; pass --force to overwrite it or choose another -o.")
    if out.resolve() == source.resolve():
        raise UnsupportedType("The output would overwrite the source GGUF; choose another -o.")
    try:
        reader = gguf.GGUFReader(source)
    except Exception as exc:  # noqa: BLE001 (gguf-py raises many types for a damaged file)
        raise SourceError(f"{source.name} is not a readable GGUF file: {exc}") from None
    n_tensors = len(reader.tensors)
    del reader
    if progress:
        progress(Progress("plan", 0, n_tensors))
    overrides = [(r"ffn_(gate|up|down|gate_up)_exps\.weight", int(experts))] if experts else None
    tmp = partial_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = open_locked(tmp)  # held while llama.cpp writes the same file: a live run is never taken for stale
    try:
        _in_thread(lambda: native.requantize_gguf(
            source, tmp, int(ftype), overrides=overrides, imatrix=im, threads=threads, pure=pure
        ))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
        os.close(lock)
    result = ConvertResult(
        [out], "", name, n_tensors, out.stat().st_size, time.perf_counter() - start, requantized=True
    )
    if progress:
        progress(Progress("done", n_tensors, n_tensors, bytes_done=result.bytes_written))
    return result
