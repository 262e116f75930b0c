"""From what the user typed (a path for now; catalog names come with `pull`) to a planned, loaded engine."""

from __future__ import annotations

from pathlib import Path

from localseek import hardware
from localseek.engine import Engine, LoadOptions
from localseek.errors import InsufficientMemoryError, ModelFileError
from localseek.footprint import from_gguf
from localseek.ggufinfo import GGUFInfo, read_gguf
from localseek.plan import DEFAULT_CTX, Plan, Request, make_plan


def resolve_model(ref: str) -> Path:
    """Turn a model reference into a GGUF path. Raises ModelFileError with the next step."""
    path = Path(ref).expanduser()
    if path.exists() or ref.endswith(".gguf") or "/" in ref or path.suffix:
        return path
    raise ModelFileError(
        f"No model file named {ref!r}. Pass a path to a .gguf file (catalog names arrive with `localseek pull`)."
    )


def default_ctx(info: GGUFInfo, requested: int | None) -> int:
    trained = int(info.get("context_length", DEFAULT_CTX) or DEFAULT_CTX)
    if requested:
        return requested
    return min(DEFAULT_CTX, trained)


def plan_for(info: GGUFInfo, request: Request, hw: hardware.Hardware | None = None) -> Plan:
    """Plan `info` on this machine (or on `hw`). Raises InsufficientMemoryError unless it fits or is forced."""
    plan = make_plan(from_gguf(info), hw or hardware.detect(), request)
    if not plan.fits and not request.force:
        raise InsufficientMemoryError(plan.problem)
    return plan


def load_planned(info: GGUFInfo, plan: Plan, *, verbose: bool = False) -> Engine:
    engine = Engine.load(info.path, plan.load_options(verbose=verbose))
    engine.plan = plan
    return engine


def open_model(
    ref: str,
    options: LoadOptions | Request | None = None,
    *,
    force: bool = False,
    verbose: bool = False,
    hw: hardware.Hardware | None = None,
) -> tuple[Engine, GGUFInfo]:
    """Read the header, plan, load. `options` may be a planner `Request` (the normal path) or explicit
    `LoadOptions`, whose context, threads, GPU layers and overrides are then honoured as given."""
    info = read_gguf(resolve_model(ref))
    if isinstance(options, LoadOptions):
        request = Request(
            n_ctx=options.n_ctx, threads=options.n_threads, gpu_layers=options.n_gpu_layers,
            n_batch=options.n_batch, n_ubatch=options.n_ubatch, mmap=options.use_mmap, mlock=options.use_mlock,
            flash_attn=options.flash_attn, force=force,
        )
    else:
        request = options or Request(force=force)
        if force and not request.force:
            request = Request(**{**request.__dict__, "force": True})
    plan = plan_for(info, request, hw)
    load = plan.load_options(verbose=verbose or (isinstance(options, LoadOptions) and options.verbose))
    if isinstance(options, LoadOptions) and options.tensor_overrides:
        load = LoadOptions(**{**load.__dict__, "tensor_overrides": options.tensor_overrides})
    engine = Engine.load(info.path, load)
    engine.plan = plan
    return engine, info
