"""From what the user typed (a path, an installed model, or a catalog name to pull) to a planned, loaded engine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from localseek import hardware, store
from localseek.engine import Engine, LoadOptions
from localseek.errors import InsufficientMemoryError, ModelFileError, NotInstalledError
from localseek.footprint import from_gguf
from localseek.ggufinfo import GGUFInfo, read_gguf
from localseek.plan import DEFAULT_CTX, Plan, Request, make_plan


def resolve_model(ref: str, *, fetch: Callable[[str], Path] | None = None) -> Path:
    """Turn what the user typed into a GGUF path: a file, an installed model (catalog name, alias, OWNER/REPO, or the
    name `localseek list` shows), or — when `fetch` is given — a catalog name or Hub repo pulled right now.

    Raises ModelFileError / NotInstalledError / UnknownModelError ("did you mean …") with the next step.
    """
    from localseek.pull import find_installed, looks_like_path, parse_ref

    path = Path(ref).expanduser()
    if path.exists() or looks_like_path(ref):
        return path
    from localseek import nano

    nano_quant = nano.parse_ref(ref)
    if nano_quant is not None:
        return nano.ensure_gguf(nano_quant, on_convert=lambda msg: sys.stderr.write(msg + "\n"))
    model = find_installed(ref)
    if model is not None:
        if model.kind != "gguf":
            raise ModelFileError(
                f"{model.name} holds the original safetensors weights; convert them first: "
                f"`localseek pull {model.catalog_id or model.repo} --original --quantize Q4_K_M`."
            )
        missing = model.missing()
        if missing:
            raise ModelFileError(
                f"{model.name} is installed but {missing[0]} is gone or changed; run `localseek pull {model.name}` "
                f"to fetch it again, or `localseek rm {model.name}`."
            )
        store.touch(model.name)
        return model.primary
    parse_ref(ref)  # an unknown name raises "did you mean …" here
    if fetch is None:
        raise NotInstalledError(f"{ref} is not installed; `localseek pull {ref}` downloads it.")
    return fetch(ref)


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


def remaining(hw: hardware.Hardware, plan: Plan) -> hardware.Hardware:
    """The machine with what `plan` takes away: RAM, and VRAM shared out over the GPUs as their free memory is (the
    way llama.cpp splits layers). For planning a second model beside a loaded one."""
    gpu_use = plan.gpu.total if plan.gpu else 0
    ram_use = plan.ram.total + (gpu_use if plan.unified_memory else 0)
    memory = replace(hw.memory, available=max(0, hw.memory.available - ram_use))
    free = hw.vram_free
    gpus = tuple(
        replace(g, memory_free=max(0, g.memory_free - gpu_use * g.memory_free // free)) if g.usable and free else g
        for g in hw.gpus
    )
    return replace(hw, memory=memory, gpus=gpus)


def plan_beside(main: Plan, info: GGUFInfo, hw: hardware.Hardware | None = None) -> Plan:
    """Plan a draft model in the memory the main model's plan leaves, with the main model's context and threads (it
    drafts for every token the main model sees). Raises InsufficientMemoryError when it does not fit."""
    left = remaining(hw or hardware.detect(), main)
    request = Request(n_ctx=main.n_ctx, threads=main.threads, n_batch=main.n_batch, n_ubatch=main.n_ubatch,
                      flash_attn=main.flash_attn, mmap=main.use_mmap, mlock=main.use_mlock)
    plan = make_plan(from_gguf(info), left, request)
    if not plan.fits:
        raise InsufficientMemoryError(
            f"The draft model {info.path.name} does not fit beside {main.model} ({plan.problem.split('. ')[0]}); "
            "drop --draft, pick a smaller draft model, or lower --ctx."
        )
    return plan


def load_planned(info: GGUFInfo, plan: Plan, *, verbose: bool = False, load_mtp: bool = False) -> Engine:
    options = plan.load_options(verbose=verbose)
    if load_mtp:  # also load the MTP block for speculative drafting (localseek/speculative.py)
        options = LoadOptions(**{**options.__dict__, "load_mtp": True})
    engine = Engine.load(info.path, options)
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
    if isinstance(options, LoadOptions) and options.load_mtp:
        load = LoadOptions(**{**load.__dict__, "load_mtp": True})
    engine = Engine.load(info.path, load)
    engine.plan = plan
    return engine, info
