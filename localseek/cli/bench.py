"""`localseek bench MODEL`: pp/tg speed like llama-bench, through the same engine as `run`."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict
from typing import Annotated

import typer

from localseek.cli import app
from localseek.cli.completion import complete_model
from localseek.cli.offload import Force, Rpc
from localseek.errors import UsageError
from localseek.planning.rpc import parse_endpoints
from localseek.runtime.engine import Engine
from localseek.sizes import format_count, format_size


def _int_list(text: str | None, what: str, *, auto: bool = False) -> tuple[int, ...]:
    """`1,2,4` → (1, 2, 4); with `auto`, the word auto stands for AUTO (adaptive thread counts)."""
    from localseek.runtime.bench import AUTO

    if not text:
        return ()
    values = []
    for word in (x for x in text.replace(" ", "").lower().split(",") if x):
        if auto and word == "auto":
            values.append(AUTO)
            continue
        try:
            n = int(word)
        except ValueError:
            also = " or auto" if auto else ""
            raise UsageError(f"{what} takes comma-separated whole numbers{also}, like 1,2,4 (got {text!r}).") from None
        if n < 1:
            raise UsageError(f"{what} values must be at least 1 (got {text!r}).")
        values.append(n)
    if not values:
        raise UsageError(f"{what} values must be at least 1 (got {text!r}).")
    return tuple(values)


@app.command()
def bench(
    model: Annotated[str, typer.Argument(
        help="A .gguf file, an installed model or nano.", show_default=False, autocompletion=complete_model)],
    n_prompt: Annotated[int, typer.Option("--n-prompt", "-p", min=0, help="Prompt tokens for the pp test (0: skip).")]
    = 512,
    n_gen: Annotated[int, typer.Option(
        "--max-tokens", "-n", "--n-gen", min=0, help="Tokens to generate in the tg test, as run's -n (0: skip).")]
    = 128,
    repetitions: Annotated[int, typer.Option("--repetitions", "-r", min=1, help="Measured runs of each test.")] = 5,
    threads: Annotated[str | None, typer.Option(
        "--threads", "-t", help="Thread counts to sweep, e.g. 1,2,auto (default: auto, counts that adapt as `run`'s "
                                "do).")] = None,
    batch: Annotated[str | None, typer.Option("--batch", "-b", help="Batch sizes to sweep, e.g. 128,512.")]
    = "512",
    mtp: Annotated[bool | None, typer.Option(
        "--mtp/--no-mtp", help="Also measure generation with MTP drafting (default: when the model has an MTP block).",
        show_default=False)] = None,
    draft: Annotated[str | None, typer.Option("--draft", help="Also measure generation with this draft model (installed name or .gguf).")]
    = None,
    draft_max: Annotated[int | None, typer.Option("--draft-max", min=1, max=32, help="Most tokens per draft.")]
    = None,
    draft_fixed: Annotated[bool, typer.Option(
        "--draft-fixed", help="Draft exactly --draft-max tokens every step (default: tune the length as run does).")
    ] = False,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="Generate after this text instead of after BOS (realistic draft acceptance).")] = None,
    no_warmup: Annotated[bool, typer.Option("--no-warmup", help="Skip the warm-up run of each test.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    force: Force = False,
    rpc: Rpc = None,
) -> None:
    """Measure prompt processing (pp) and generation (tg) speed, median and spread over repetitions.

    How busy the machine is goes to stderr first (other programs competing for the cores make results vary, and
    make fixed thread counts slower than on an idle machine), with a warning when results will be noisy.
    """
    from localseek.planning.plan import Request
    from localseek.runtime.bench import BenchSpec, run_benchmarks
    from localseek.runtime.open import Speculation, open_model, prepare
    from localseek.runtime.threads import machine_load

    speculation = Speculation(mtp=mtp, draft=draft, n_draft=draft_max, fixed=draft_fixed)
    spec = BenchSpec(
        n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, threads=_int_list(threads, "--threads", auto=True),
        batches=_int_list(batch, "--batch") or (512,), warmup=not no_warmup, gen_prompt=prompt or "",
    )
    workers = parse_endpoints(rpc)
    spec.check()
    prep = prepare(model, speculation=speculation)  # resolved once; each batch size is planned and loaded
    load_before = machine_load()
    sys.stderr.write(f"machine: {load_before.describe()}\n")
    if load_before.noisy:
        sys.stderr.write("warning: other programs are using the CPUs: results will vary from run to run, and fixed "
                         "thread counts will be slower than on an idle machine.\n")
    kinds: list[str] = []

    def load(n_ctx: int, n_batch: int) -> Engine:
        request = Request(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, force=force, rpc=workers)
        opened = open_model(prep.ref, request, speculation=speculation)
        kinds.append(opened.drafter)
        return opened.engine

    quiet = as_json or not sys.stderr.isatty()
    results = run_benchmarks(
        load, spec, progress=(lambda _m: None) if quiet else (lambda m: sys.stderr.write(f"\r\x1b[2K{m}")),
    )
    if not quiet:
        sys.stderr.write("\r\x1b[2K")
    info = prep.info
    drafter = kinds[0] if kinds else ""
    n_params = sum(_elements(t.shape) for t in info.tensors)
    if as_json:
        doc = {
            "model": str(info.path), "arch": info.arch, "size_bytes": info.total_bytes, "n_params": n_params,
            "machine": platform.machine(), "system": _system_info(), "load": asdict(load_before), "spec": {
                "n_prompt": n_prompt, "n_gen": n_gen, "repetitions": repetitions, "drafter": drafter,
                "n_draft": draft_max, "draft_fixed": draft_fixed},
            "results": [r.as_dict() for r in results],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    _render(info, n_params, results, prep.ref.name)


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def _render(info, n_params: int, results, name: str) -> None:
    from rich.table import Table

    from localseek.cli.output import out_console

    console = out_console()
    table = Table(title=f"{name} · {info.arch} · {format_size(info.total_bytes)} · "
                  f"{format_count(n_params)} params", title_justify="left")
    for col in ("test", "threads", "batch", "t/s (median)", "min – max", "±stdev", "notes"):
        table.add_column(col, justify="left" if col in ("test", "notes") else "right")
    for r in results:
        notes = []
        if r.acceptance is not None:
            notes.append(f"accepted {r.accepted}/{r.drafted} ({r.acceptance:.0%})")
        if "speedup" in r.extra:
            notes.append(f"×{r.extra['speedup']:.2f} vs plain")
        if r.test.startswith("pp"):
            notes.append(f"first token {min(r.seconds) * 1000:.0f}–{max(r.seconds) * 1000:.0f} ms")
        overhead = r.as_dict().get("loop_overhead")
        if overhead is not None:
            notes.append(f"{overhead:+.2%} outside llama.cpp")
        threads = f"auto→{r.n_threads}" if r.adaptive else str(r.n_threads)
        table.add_row(r.test, threads, str(r.n_batch), f"{r.median:.2f}",
                      f"{min(r.samples_tps):.2f} – {max(r.samples_tps):.2f}", f"{r.stdev:.2f}", "; ".join(notes))
    console.print(table)
