"""One way from what a user typed to a running model, for every front end (`run`, `bench`, `plan`, the chat, the
HTTP server): resolve the reference once, read its header, plan it on this machine (or a what-if one), load it with
the drafter it will speculate with, and hand back everything a front end needs.

    with open_model("deepseek-r1:7b", Request(n_ctx=8192)) as model:
        session = ChatSession(model.engine, ChatSettings(sampling=model.sampling))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from localseek.errors import InsufficientMemoryError, UsageError
from localseek.models.gguf_info import GGUFInfo, read_gguf
from localseek.models.listing import is_mtp_file
from localseek.models.resolve import Fetch, ModelRef, Notify, resolve
from localseek.planning import cluster, hardware
from localseek.planning import rpc as plan_rpc
from localseek.planning.footprint import Footprint, from_gguf
from localseek.planning.plan import Plan, Request, make_plan
from localseek.runtime import rpc, speculative
from localseek.runtime.defaults import resolve_sampling
from localseek.runtime.speculative import DrafterFactory
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions, Sampling
from localseek.sizes import format_size


@dataclass(frozen=True)
class Speculation:
    """How to speculate: the model's own MTP block (`mtp`: None = when it has one), or a draft model."""

    mtp: bool | None = None
    draft: str | None = None  # a reference to a smaller model with the same tokenizer
    n_draft: int | None = None  # most tokens per draft (None: the drafter's default)
    p_min: float = speculative.DEFAULT_P_MIN
    fixed: bool = False  # draft exactly n_draft every round instead of tuning the length


@dataclass
class Prepared:
    """A model resolved, read and planned, not loaded."""

    ref: ModelRef
    info: GGUFInfo
    footprint: Footprint
    plan: Plan
    hardware: hardware.Hardware
    use_mtp: bool = False
    mtp_file: GGUFInfo | None = None  # the header of an MTP-only GGUF that drafts for the model (DeepSeek-V4)


@dataclass
class OpenModel:
    """A loaded model and everything a front end needs of it. Close it (or use it as a context manager)."""

    ref: ModelRef
    info: GGUFInfo
    plan: Plan
    engine: Engine
    sampling: Sampling  # the defaults for this model (flags > catalog > GGUF > built-in)
    sampling_sources: dict[str, str] = field(default_factory=dict)
    drafter: str = ""  # "mtp", "draft-model" or ""

    @property
    def name(self) -> str:
        return self.ref.name

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> OpenModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare(ref: str | ModelRef, request: Request = Request(), *, speculation: Speculation = Speculation(),
            hw: hardware.Hardware | None = None, fetch: Fetch | None = None, notify: Notify | None = None,
            remote: bool = False) -> Prepared:
    """Resolve, read the header and plan (a plan that does not fit is returned, not refused: `plan.fits`).
    `remote`: a model that is not here is planned from its header on the Hub (nothing is downloaded)."""
    model = ref if isinstance(ref, ModelRef) else resolve(ref, fetch=fetch, notify=notify, remote=remote)
    info = model.read()  # a file's header, or (plan before a download) the one read from the Hub
    mtp_file = None
    if not speculation.draft and speculation.mtp is not False and model.remote is None:
        pulled = [Path(f.path) for f in model.installed.files
                  if is_mtp_file(f.repo_path or f.path)] if model.installed else []
        mtp_file = speculative.find_mtp_file(info, also=pulled)  # None when the model has its own block
    use_mtp = speculative.resolve(info, mtp=speculation.mtp, draft=speculation.draft, mtp_file=mtp_file)
    if use_mtp != request.load_mtp:
        request = replace(request, load_mtp=use_mtp)  # the MTP block's memory is part of the plan
    fp = from_gguf(info)
    machine = hw or hardware.detect()
    if request.rpc and not machine.workers:  # ask each worker what it offers (no llama.cpp involved yet)
        machine = replace(machine, workers=plan_rpc.probe_all(request.rpc))
    return Prepared(model, info, fp, cluster.plan(fp, machine, request), machine, use_mtp, mtp_file)


def open_model(
    ref: str | ModelRef,
    request: Request = Request(),
    *,
    speculation: Speculation = Speculation(),
    sampling: Mapping[str, Any] | None = None,
    verbose: bool = False,
    hw: hardware.Hardware | None = None,
    fetch: Fetch | None = None,
    notify: Notify | None = None,
    on_plan: Callable[[Prepared], None] | None = None,
    n_seq_max: int = 1,
) -> OpenModel:
    """Resolve, plan, load. `sampling` holds the user's sampling flags (None = not given). `on_plan` sees the plan
    before the (possibly long) load. `n_seq_max`: sequences the context will serve at once (the HTTP server's slots;
    the KV cache is then unified, the same n_ctx cells). Raises InsufficientMemoryError when the plan does not fit
    and `request.force` is not set, and the typed errors of each step otherwise."""
    if request.rpc:
        rpc.require("--rpc")
    prep = prepare(ref, request, speculation=speculation, hw=hw, fetch=fetch, notify=notify)
    plan = prep.plan
    if not plan.fits and not request.force:
        raise InsufficientMemoryError(plan.problem)
    values, sources = resolve_sampling(prep.ref.spec, prep.info, sampling or {})
    if on_plan is not None:
        on_plan(prep)
    drafter, kind, draft_engine = _drafter(prep, speculation, verbose=verbose)
    try:
        options = load_options(plan, verbose=verbose, adapt_threads=adapt_threads(request))
        engine = Engine.load(prep.info.path, replace(options, n_seq_max=n_seq_max), drafter=drafter)
    except BaseException:
        if draft_engine is not None:
            draft_engine.close()
        raise
    return OpenModel(prep.ref, prep.info, plan, engine, values, sources, kind)


def adapt_threads(request: Request) -> bool:
    """Thread counts adapt to the machine's load as the model runs, unless the user fixed them (--threads N,
    LOCALSEEK_THREADS)."""
    return request.threads is None and hardware.env_threads() is None


def load_options(plan: Plan, *, verbose: bool = False, adapt_threads: bool = False) -> LoadOptions:
    """The llama.cpp load options that carry out `plan` (with `adapt_threads`, its thread count is where the
    counts start and the most they go to)."""
    return LoadOptions(
        n_ctx=plan.n_ctx, n_threads=plan.threads, n_threads_batch=plan.threads, n_gpu_layers=plan.n_gpu_layers,
        n_batch=plan.n_batch, n_ubatch=plan.n_ubatch, use_mmap=plan.use_mmap, use_mlock=plan.use_mlock,
        flash_attn=plan.flash_attn, tensor_overrides=tuple((p, "CPU") for p in plan.overrides),
        op_offload=plan.op_offload, load_mtp=plan.load_mtp, verbose=verbose, adapt_threads=adapt_threads,
        rpc_devices=tuple((r.endpoint, r.device) for r in plan.remote), tensor_split=plan.tensor_split,
    )


def _drafter(prep: Prepared, spec: Speculation, *, verbose: bool
             ) -> tuple[DrafterFactory | None, str, Engine | None]:
    """The factory that builds the engine's drafter, its kind, and the draft model's engine (loaded here)."""
    if prep.use_mtp:
        return speculative.mtp_drafter(spec.n_draft, p_min=spec.p_min, fixed=spec.fixed), "mtp", None
    if prep.mtp_file is not None:
        factory = _mtp_file_drafter(prep, prep.mtp_file, spec, required=bool(spec.mtp))
        return (factory, "mtp", None) if factory is not None else (None, "", None)
    if not spec.draft:
        return None, "", None
    # Planned like the main model, in the RAM and VRAM its plan leaves (on the GPU too when there is room).
    draft_ref = resolve(spec.draft)
    info = read_gguf(draft_ref.path)
    if speculative.is_mtp_only(info):  # `--draft mtp-….gguf`: V4's MTP file, named by hand
        why = speculative.mtp_file_fits(prep.info, info)
        if why:
            raise UsageError(f"{info.path.name} is an MTP file, but not this model's ({why}).")
        return _mtp_file_drafter(prep, info, spec, required=True), "mtp", None
    plan = plan_beside(prep.plan, info, prep.hardware)
    draft_engine = Engine.load(info.path, load_options(plan, verbose=verbose))
    factory = speculative.model_drafter(draft_engine, spec.n_draft, p_min=spec.p_min, fixed=spec.fixed)
    return factory, speculative.ModelDrafter.kind, draft_engine


def _mtp_file_drafter(prep: Prepared, info: GGUFInfo, spec: Speculation, *, required: bool
                      ) -> DrafterFactory | None:
    """The drafter of an MTP-only file, in the memory the main plan leaves: on the GPU when the model is there and
    it fits, else in RAM; None when it fits nowhere and nobody asked for it (plain decoding then)."""
    left = remaining(prep.hardware, prep.plan)
    size = info.total_bytes
    on_gpu = prep.plan.n_gpu_layers != 0 and left.vram_free >= size
    if not on_gpu and left.memory.available < size:
        if not required:
            return None
        raise InsufficientMemoryError(
            f"The MTP file {info.path.name} ({format_size(size)}) does not fit beside {prep.plan.model}; "
            "run with --no-mtp or lower --ctx.")
    return speculative.mtp_file_drafter(info.path, spec.n_draft, p_min=spec.p_min, fixed=spec.fixed,
                                        n_gpu_layers=-1 if on_gpu else 0)


def plan_for(info: GGUFInfo, request: Request, hw: hardware.Hardware | None = None) -> Plan:
    """Plan `info` on this machine (or on `hw`). Raises InsufficientMemoryError unless it fits or is forced."""
    plan = cluster.plan(from_gguf(info), hw or hardware.detect(), request)
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
    left = replace(remaining(hw or hardware.detect(), main), workers=())  # a draft model stays on this machine
    request = Request(n_ctx=main.n_ctx, threads=main.threads, n_batch=main.n_batch, n_ubatch=main.n_ubatch,
                      flash_attn=main.flash_attn, mmap=main.use_mmap, mlock=main.use_mlock)
    plan = make_plan(from_gguf(info), left, request)
    if not plan.fits:
        raise InsufficientMemoryError(
            f"The draft model {info.path.name} does not fit beside {main.model} ({plan.problem.split('. ')[0]}); "
            "drop --draft, pick a smaller draft model, or lower --ctx."
        )
    return plan
