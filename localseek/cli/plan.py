"""`localseek plan MODEL`: where every tensor of a model would go on this (or another) machine, and why."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from localseek.cli import app
from localseek.cli.completion import complete_model
from localseek.cli.offload import (
    CpuMoe,
    Ctx,
    Force,
    GpuLayers,
    Mlock,
    NCpuMoe,
    NoMmap,
    Rpc,
    Threads,
    make_request,
)
from localseek.cli.output import out_console
from localseek.errors import UsageError
from localseek.models.gguf_info import GGUFInfo
from localseek.planning import hardware
from localseek.planning import rpc as plan_rpc
from localseek.planning.footprint import Footprint
from localseek.planning.hardware import Hardware
from localseek.planning.plan import Plan
from localseek.runtime.open import prepare
from localseek.sizes import format_count, format_size, parse_size

_CLASS_LABEL = {
    "attention": "attention", "indexer": "sparse-attention indexer", "hyper_connections": "hyper-connections",
    "dense_ffn": "dense FFN", "shared_experts": "shared experts", "routed_experts": "routed experts",
    "router": "router", "norms": "norms", "embeddings": "embeddings", "output": "output head", "mtp": "MTP layer",
    "other": "other",
}


@app.command("plan")
def plan_command(
    model: Annotated[str, typer.Argument(
        help="A .gguf file (split models: any part), an installed model, nano, or a catalog name or OWNER/REPO[:QUANT] "
             "not downloaded yet. Only its header is read (from the Hub, with a few range requests, for those).",
        autocompletion=complete_model)],
    vram: Annotated[str | None, typer.Option("--vram", help="What-if: one GPU with this much memory (0 = none).")] = None,
    ram: Annotated[str | None, typer.Option("--ram", help="What-if: this much RAM, e.g. 192GiB.")] = None,
    unified: Annotated[bool, typer.Option("--unified", help="What-if: GPU shares RAM (Apple silicon).")] = False,
    cores: Annotated[int | None, typer.Option("--cores", min=1, help="What-if: physical CPU cores.")] = None,
    board: Annotated[
        str | None, typer.Option("--board", help='What-if: a board, e.g. "Raspberry Pi 5 Model B".')
    ] = None,
    ctx: Ctx = None,
    threads: Threads = None,
    gpu_layers: GpuLayers = "auto",
    cpu_moe: CpuMoe = False,
    n_cpu_moe: NCpuMoe = None,
    mlock: Mlock = False,
    no_mmap: NoMmap = False,
    force: Force = False,
    rpc: Rpc = None,
    rpc_mem: Annotated[str | None, typer.Option(
        "--rpc-mem", metavar="HOST=SIZE[,…]",
        help="What-if: workers that do not exist yet, e.g. 192.168.1.20=128GiB,192.168.1.21=64GiB (no connection).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Plan memory for MODEL: GPU layers, experts kept in RAM, context, threads, batch — with the reason for each.

    Sizes are binary: 24G = 24GB = 24GiB. Exit code 2 when the model does not fit (unless --force).
    """
    request = make_request(
        ctx=ctx, gpu_layers=gpu_layers, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, threads=threads, mlock=mlock,
        no_mmap=no_mmap, force=force, rpc=rpc,
    )
    hw = hardware.what_if(
        hardware.detect(),
        ram=parse_size(ram, "--ram") if ram else None,
        vram=parse_size(vram, "--vram") if vram is not None else None,
        unified=unified, cores=cores, board=board,
    )
    if rpc_mem:
        if request.rpc:
            raise UsageError("Use either --rpc (workers that run now) or --rpc-mem (a what-if), not both.")
        hw = replace(hw, workers=plan_rpc.simulated(rpc_mem), simulated=True)
    prep = prepare(model, request, hw=hw, notify=_say, remote=True)
    if request.rpc:
        from localseek.runtime import rpc as runtime_rpc

        if not runtime_rpc.available():  # planning only asks the workers; running needs the RPC backend here
            sys.stderr.write("warning: this install has no RPC backend, so `run --rpc` will refuse; rebuild with: "
                             f"{plan_rpc.install_command(hw.backends)}\n")
    fp, plan = prep.footprint, prep.plan
    remote = prep.ref.remote
    if as_json:
        where = {"installed": False, "repo": remote.repo, "commit": remote.commit,
                 "files": [f.path for f in remote.files], "header_cached": remote.from_cache} if remote else \
            {"installed": True, "path": str(prep.ref.path)}
        typer.echo(json.dumps({"model": footprint_dict(fp), "source": where, "hardware": prep.hardware.to_dict(),
                               "plan": plan.to_dict(),
                               "mtp_file": str(prep.mtp_file.path) if prep.mtp_file else None}, indent=2))
    else:
        render(fp, prep.hardware, plan, prep.ref.text, title=prep.ref.name, download=remote.size if remote else None,
               mtp_file=prep.mtp_file)
    if not plan.fits and not force:
        from localseek.cli import error_line

        error_line(plan.problem)
        raise typer.Exit(2)


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


def footprint_dict(fp: Footprint) -> dict:
    return {
        "name": fp.name, "arch": fp.arch, "file_type": fp.file_type, "params": fp.n_params,
        "file_bytes": fp.file_bytes, "bits_per_weight": round(fp.bits_per_weight, 3), "layers": fp.n_layer,
        "mtp_layers": fp.n_layer_all - fp.n_layer, "experts": fp.n_expert, "experts_used": fp.n_expert_used,
        "mla": fp.mla, "kv_kind": fp.kv_kind, "kv_bytes_per_token": fp.kv_bytes_per_token(),
        "context_train": fp.context_train,
        "bytes_by_class": {k: v for k, v in fp.totals.items() if v},
        "layers_detail": [
            {"layer": layer.index, "bytes": layer.bytes, "expert_bytes": layer.experts} for layer in fp.layers
        ],
    }


def _machine_line(hw: Hardware) -> str:
    gpus = hw.usable_gpus
    gpu = " + ".join(f"{format_size(g.memory_free)} {'unified ' if g.unified else ''}VRAM ({g.name})" for g in gpus)
    board = f", {hw.board.model}" if hw.board else ""
    line = f"{gpu + ' + ' if gpu else ''}{format_size(hw.memory.available)} RAM available, " \
        f"{hw.cpu.physical_cores} cores{board}"
    for w in hw.workers:
        rtt = f", round trip {w.rtt * 1000:.2f} ms" if w.rtt else ""
        line += f" + worker {w.endpoint} ({format_size(w.free)}{rtt})"
    return line + (" [what-if]" if hw.simulated else "")


def render(fp: Footprint, hw: Hardware, plan: Plan, name: str, *, title: str | None = None,
           download: int | None = None, mtp_file: GGUFInfo | None = None) -> None:
    """The plan as tables; `name` is what to pass to `run`, `title` what to call the model (default: the file);
    `download`: the model is not here yet and weighs this much (planned from its header on the Hub)."""
    out = out_console()
    mtp = f", +{fp.n_layer_all - fp.n_layer} MTP" if fp.n_layer_all > fp.n_layer else ""
    out.print(f"[bold]{escape(title or fp.name)}[/] · {fp.arch} · {fp.file_type} · {format_count(fp.n_params)} params · "
              f"{format_size(fp.weights(load_mtp=True))} ({fp.bits_per_weight:.2f} bits/weight) · "
              f"{fp.n_layer} layers{mtp}")
    out.print(f"Machine: {_machine_line(hw)}")

    tensors = Table(title="Tensors by class", title_justify="left", box=None, pad_edge=False)
    tensors.add_column("class")
    tensors.add_column("total", justify="right")
    tensors.add_column("share", justify="right")
    weights = fp.weights(load_mtp=True) or 1
    for cls, size in sorted(fp.totals.items(), key=lambda kv: -kv[1]):
        if size:
            tensors.add_row(_CLASS_LABEL[cls], format_size(size), f"{100 * size / weights:.1f}%")
    out.print(tensors)
    out.print(f"KV cache: {format_size(fp.kv_bytes_per_token())} per token ({fp.kv_kind}) → "
              f"{format_size(fp.kv_bytes(plan.n_ctx))} at {plan.n_ctx} tokens")

    mem = Table(title="Memory", title_justify="left", box=None, pad_edge=False)
    for col in ("", "weights", "KV cache", "compute", "other", "total", "usable"):
        mem.add_column(col, justify="right" if col else "left")
    for use in (plan.gpu, plan.ram, *(r.use for r in plan.remote)):
        if use is None:
            continue
        style = "" if use.fits else "red"
        mem.add_row(use.device, *(format_size(x) for x in (use.weights, use.kv_cache, use.compute, use.other,
                                                             use.total, use.budget)), style=style)
    out.print(mem)

    why = Table(title="Plan", title_justify="left", box=None, pad_edge=False)
    why.add_column("setting")
    why.add_column("value")
    why.add_column("why", overflow="fold")
    for r in plan.reasons:
        why.add_row(r.setting, r.value, r.why)
    out.print(why)
    if plan.overrides:
        out.print(f"Overrides (regex → CPU): {' '.join(plan.overrides)}")
    if mtp_file is not None:
        out.print(f"MTP drafting: {escape(mtp_file.path.name)} ({format_size(mtp_file.total_bytes)}), the model's MTP "
                  "file beside it, loads with it where memory is left (`run --no-mtp`: without it)", highlight=False)
    for w in plan.warnings:
        out.print(f"[notice]warning:[/] {w}")
    if plan.fits and download is not None:
        out.print(f"[green]Fits.[/] Not downloaded yet: `localseek pull {escape(name)}` fetches it "
                  f"({format_size(download)}); `localseek run {escape(name)}` then uses this plan.", highlight=False)
    elif plan.fits:
        if hw.workers and any(w.simulated for w in hw.workers):
            out.print("[green]Fits[/] across these machines (what-if: `localseek worker` on each, then "
                      f"`localseek run {escape(name)} --rpc HOST:PORT,…`).", highlight=False)
        else:
            rpc = f" --rpc {','.join(w.endpoint for w in hw.workers)}" if hw.workers else ""
            out.print(f"[green]Fits.[/] `localseek run {escape(name)}{rpc}` uses this plan.", highlight=False)
