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
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from quantize import native
from quantize.archs import Context, OutTensor, for_config
from quantize.errors import BadWeights, OutputExists, SourceError, UnsupportedType
from quantize.fp8 import f32_to_bf16
from quantize.safetensors import Checkpoint
from quantize.tokenizer import add_to_gguf, read_vocab
from quantize.types import NEEDS_IMATRIX, TypePlanner, nbytes, parse_ftype, parse_tensor_type
from quantize.writer import GGUFStreamWriter, PlannedTensor, split_paths

log = logging.getLogger(__name__)
T = gguf.GGMLQuantizationType
F16_MAX = 65504.0


@dataclass(frozen=True)
class Progress:
    """One step of a conversion, for a progress bar."""

    stage: str  # "plan", "tensor", "done"
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


def _read_config(source: Path) -> dict:
    path = source / "config.json"
    if not path.is_file():
        raise SourceError(f"{path} is missing; is {source} a Hugging Face model folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SourceError(f"{path} is not valid JSON; download it again.") from None


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
    except ValueError:
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
    tmp = out.with_name(f".{out.name}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        native.requantize_gguf(
            source, tmp, int(ftype), overrides=overrides, imatrix=im, threads=threads, pure=pure
        )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    result = ConvertResult(
        [out], "", name, n_tensors, out.stat().st_size, time.perf_counter() - start, requantized=True
    )
    if progress:
        progress(Progress("done", n_tensors, n_tensors, bytes_done=result.bytes_written))
    return result
