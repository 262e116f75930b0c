"""Offload options shared by `run` and `plan` (Annotated aliases) and their translation into a planner Request."""

from __future__ import annotations

from typing import Annotated

import typer

from localseek.errors import UsageError
from localseek.planning.plan import Plan, Request
from localseek.planning.rpc import parse_endpoints

GpuLayers = Annotated[
    str,
    typer.Option(
        "--gpu-layers", "-ngl", metavar="N|auto|all",
        help="Layers on the GPU: a number, `auto` (as many as fit) or `all`.",
    ),
]
CpuMoe = Annotated[bool, typer.Option("--cpu-moe", help="Keep every routed expert (MoE) in RAM, the rest on the GPU.")]
NCpuMoe = Annotated[
    int | None,
    typer.Option("--n-cpu-moe", min=0, metavar="N", help="Keep the routed experts of the first N layers in RAM."),
]
Ctx = Annotated[int | None, typer.Option("--ctx", "-c", min=64, help="Context size in tokens (default: planned).")]
Threads = Annotated[
    int | None,
    typer.Option("--threads", "-t", min=1,
                 help="CPU threads, fixed (default: start from the planned count and adapt to the machine's load)."),
]
Mlock = Annotated[bool, typer.Option("--mlock", help="Pin the weights in RAM (never paged out).")]
NoMmap = Annotated[bool, typer.Option("--no-mmap", help="Read the weights into RAM instead of memory-mapping them.")]
Force = Annotated[bool, typer.Option("--force", help="Go ahead even when the plan does not fit in memory.")]
Rpc = Annotated[str | None, typer.Option(
    "--rpc", envvar="LOCALSEEK_RPC", metavar="HOST:PORT[,…]", show_envvar=True,
    help="Spread the model over these workers (`localseek worker` on each machine) and this machine.")]


def parse_gpu_layers(value: str) -> int | str:
    text = value.strip().lower()
    if text in ("auto", "all"):
        return text
    if text.lstrip("-").isdigit():
        n = int(text)
        if n < 0:
            return "all"
        return n
    raise UsageError(f"--gpu-layers takes a number, `auto` or `all`, not {value!r}.")


def make_request(
    *,
    ctx: int | None,
    gpu_layers: str,
    cpu_moe: bool,
    n_cpu_moe: int | None,
    threads: int | None,
    mlock: bool,
    no_mmap: bool,
    force: bool,
    rpc: str | None = None,
) -> Request:
    if cpu_moe and n_cpu_moe is not None:
        raise UsageError("Use either --cpu-moe (all experts in RAM) or --n-cpu-moe N, not both.")
    return Request(
        n_ctx=ctx, gpu_layers=parse_gpu_layers(gpu_layers), cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, threads=threads,
        mlock=mlock, mmap=not no_mmap, force=force, rpc=parse_endpoints(rpc),
    )


def summary_line(plan: Plan) -> str:
    """One line for the start of `run --verbose`: where things go."""
    parts = [f"ctx {plan.n_ctx}", f"threads {plan.threads}"]
    if plan.remote:
        first = min(r.layers[0] for r in plan.remote)
        here = f"layers {_span(tuple(range(first)))} here, " if first else ""
        parts.append(here + ", ".join(f"{_span(r.layers)} on {r.endpoint}" for r in plan.remote))
    if plan.gpu is not None:
        parts.append(f"gpu layers {plan.n_gpu_layers}")
        if plan.cpu_expert_layers:
            parts.append(f"experts of {len(plan.cpu_expert_layers)} layers in RAM")
    parts.append(f"batch {plan.n_batch}/{plan.n_ubatch}")
    parts.append("mmap" if plan.use_mmap else "no mmap")
    if plan.use_mlock:
        parts.append("mlock")
    return "plan: " + ", ".join(parts)


def _span(layers: tuple[int, ...]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
