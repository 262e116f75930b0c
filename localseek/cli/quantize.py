"""`localseek quantize SOURCE --type TYPE`: Hugging Face folder (FP8/BF16) or GGUF → quantized GGUF."""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from localseek.cli import app
from localseek.errors import Interrupted, ModelFileError, UsageError
from localseek.sizes import format_size, parse_size
from localseek.text import printable

_KEEP: list[object] = []


def _quiet_llama(verbose: bool) -> None:
    """llama_model_quantize logs every tensor; keep that behind --verbose."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if verbose:
            sys.stderr.write(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
    _KEEP.append(_log)


@app.command()
def quantize(
    source: Annotated[
        Path,
        typer.Argument(
            help="A Hugging Face model folder (config.json + safetensors) or a .gguf.", show_default=False
        ),
    ],
    qtype: Annotated[
        str,
        typer.Option(
            "--type",
            "-q",
            "--quantize",
            help="Target: Q8_0, Q4_K_M, Q5_K_M, Q6_K, Q4_0, BF16, F16, IQ2_XXS…, or MXFP4_MOE (routed experts "
                 "MXFP4, as DeepSeek-V4 ships them, every other matrix Q8_0); see docs/QUANTIZE.md.",
        ),
    ] = "Q8_0",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output .gguf (default: beside SOURCE, named after the type)."),
    ] = None,
    experts: Annotated[
        str | None,
        typer.Option(
            "--experts", help="Quantize routed MoE experts to this type instead (e.g. Q2_K, IQ2_XXS, MXFP4)."
        ),
    ] = None,
    imatrix: Annotated[
        Path | None,
        typer.Option("--imatrix", help="Importance matrix from llama-imatrix (needed by IQ1/IQ2 types)."),
    ] = None,
    no_mtp: Annotated[
        bool, typer.Option("--no-mtp", help="Drop DeepSeek's multi-token-prediction layer.")
    ] = False,
    mtp_only: Annotated[
        bool,
        typer.Option(
            "--mtp-only",
            help="DeepSeek-V4: write only its multi-token-prediction block (with the embeddings and head it "
                 "needs) as a draft model of its own, as llama.cpp's converter does with --mtp (default output: "
                 "SOURCE-MTP-TYPE.gguf).",
        ),
    ] = False,
    pure: Annotated[
        bool, typer.Option("--pure", help="No mixture rules: every matrix gets the type's base quantization.")
    ] = False,
    split_max_size: Annotated[
        str | None,
        typer.Option("--split-max-size", help="Split the output into parts of at most this size (e.g. 50G = 50 GiB; binary units, as everywhere)."),
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1, help="Quantizer threads.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    force: Annotated[bool, typer.Option("--force", hidden=True, help="Not for quantize: see --overwrite.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show per-tensor detail.")] = False,
) -> None:
    """Convert and quantize a model to GGUF — DeepSeek FP8 weights go straight to the target type."""
    if force:  # --force means "ignore the memory plan" in every other command
        raise UsageError("quantize replaces an existing output with --overwrite (--force is for run and plan: go "
                         "ahead when the memory plan does not fit).")
    import quantize as q
    from localseek.cli.output import out_console
    from localseek.tui import make_console

    if mtp_only and no_mtp:
        raise UsageError("--mtp-only writes the MTP block and --no-mtp drops it; pass one of them.")
    if mtp_only and not source.is_dir():
        raise UsageError(f"--mtp-only converts a Hugging Face DeepSeek-V4 folder; {printable(source)} is not one.")
    if mtp_only and output is None:
        output = q.default_output(source, "MTP-" + qtype.strip().upper())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("gguf").setLevel(logging.INFO if verbose else logging.ERROR)
    _quiet_llama(verbose)
    console = make_console(sys.stderr)
    already = _quantized_type(source)
    if already:
        console.print(f"warning: {source.name} is already quantized ({already}): quantizing it again to "
                      f"{qtype.upper()} cannot bring back what {already} lost and adds its own error; for the best "
                      "quality quantize the original weights (a Hugging Face folder, or an F16/BF16 GGUF).",
                      style="notice", markup=False, highlight=False)
    bar = _ProgressView(console, verbose)
    previous = signal.signal(signal.SIGTERM, _terminate)  # stopped by a service manager: clean up like Ctrl-C
    try:
        result = q.convert(
            source,
            output,
            qtype=qtype,
            experts_type=experts,
            keep_mtp=not no_mtp,
            mtp_only=mtp_only,
            imatrix=imatrix,
            pure=pure,
            split_max_size=parse_size(split_max_size, "--split-max-size") if split_max_size else None,
            force=overwrite,
            threads=threads,
            progress=bar.update,
        )
    except (q.SourceError, q.BadWeights) as exc:
        raise ModelFileError(str(exc)) from exc
    except q.OutputExists as exc:  # the library names its own switch; the command's is --overwrite
        raise UsageError(str(exc).replace("--force", "--overwrite")) from exc
    except q.QuantizeError as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt as exc:  # the library has removed its partial output by now
        bar.close()
        how = "SIGTERM" if isinstance(exc, _Terminated) else "Ctrl-C"
        stopped = Interrupted(f"Stopped by {how}: the unfinished output was removed; nothing was written.")
        stopped.exit_code = 128 + signal.SIGTERM if isinstance(exc, _Terminated) else 130
        raise stopped from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    out = out_console()
    size = sum(p.stat().st_size for p in result.paths)
    out.print(
        f"Wrote {result.paths[0]}"
        + (f" (+{len(result.paths) - 1} more parts)" if len(result.paths) > 1 else "")
    )
    detail = ", ".join(f"{n} {k}" for k, n in sorted(result.types.items(), key=lambda kv: -kv[1]))
    human = format_size(size)
    out.print(
        f"{result.qtype}: {human}, {result.n_tensors} tensors"
        + (f" ({detail})" if detail else "")
        + f", {result.seconds:.1f} s",
        style="stats",
    )
    if mtp_only:
        out.print("The MTP block as a draft model of its own (llama.cpp loads it with load_mtp); localseek's runtime "
                  "does not pair it with the main model yet.", style="stats")
    elif result.mtp_layers:
        out.print(f"Kept {result.mtp_layers} MTP layer(s) for speculative decoding.", style="stats")
    if result.fallbacks:
        out.print(
            f"{len(result.fallbacks)} tensor(s) use a fallback type (rows not divisible by the block size"
            " or no importance data); --verbose lists them.",
            style="stats",
        )
        if verbose:
            for line in result.fallbacks:
                out.print(f"  {line}", style="stats")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal lands so every cleanup a Ctrl-C runs runs too."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _quantized_type(source: Path) -> str | None:
    """The quant a source GGUF already has (Q4_K_M, Q8_0…), or None for float weights, folders, unreadable files
    (the conversion itself reports those)."""
    from localseek.errors import LocalseekError
    from localseek.models.gguf_info import file_type_name, read_gguf

    if not source.is_file():
        return None
    try:
        name = file_type_name(read_gguf(source))
    except (LocalseekError, OSError, ValueError):
        return None
    return name if name and name not in ("F32", "F16", "BF16") and not name.startswith("type ") else None


class _ProgressView:
    def __init__(self, console, verbose: bool) -> None:
        self.console = console
        self.verbose = verbose
        self.progress = None
        self.task = None

    def update(self, p) -> None:
        if p.stage == "cleanup":
            self.console.print(f"Removed {printable(Path(p.name).name)} ({format_size(p.bytes_done)}), left by an "
                               "earlier run of this output that was stopped.", style="notice", markup=False)
            return
        if not self.console.is_terminal:
            if p.stage == "tensor" and self.verbose:
                self.console.print(f"[{p.index}/{p.total}] {p.name} → {p.ggml_type}", style="stats")
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("Quantizing", total=p.bytes_total or None)
        if p.stage == "tensor":
            self.progress.update(self.task, completed=p.bytes_done, description=f"{p.name} → {p.ggml_type}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
