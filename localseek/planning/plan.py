"""The offload planner: from a model's footprint (GGUF header) and a machine, decide where every tensor lives and
how llama.cpp runs — GPU layers, routed experts kept in RAM by regex override, context, threads, batch sizes,
mmap/mlock — and say why. A plan that cannot fit is refused with numbers and ways out, not swapped to death.

Pure data in, data out: no weights are read and nothing is printed. `localseek plan` renders a `Plan`;
`runtime.open` turns it into llama.cpp's load options.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass, field

from localseek.models.catalog import DEFAULT_CTX
from localseek.models.quants import QUANT_BPW
from localseek.planning import boards
from localseek.planning.footprint import Footprint
from localseek.planning.hardware import Hardware, default_threads, env_threads
from localseek.sizes import GiB, MiB, format_size

MIN_CTX = 1024
GPU_MARGIN = 1 * GiB  # left free on each GPU, as llama.cpp's own --fit does (driver, other programs)
RUNTIME_RAM = 128 * MiB  # Python, libraries, llama.cpp's context and threads (measured: bench/memory.py)
CLOSE_TO_SWAP = 0.85  # warn when a plan takes more than this share of available RAM

@dataclass(frozen=True)
class Request:
    """What the user asked for; None/"auto" leaves the choice to the planner."""

    n_ctx: int | None = None
    gpu_layers: int | str = "auto"  # an int, "auto" or "all"
    cpu_moe: bool = False
    n_cpu_moe: int | None = None
    threads: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    mlock: bool = False
    mmap: bool = True
    flash_attn: bool = True
    load_mtp: bool = False
    force: bool = False
    rpc: tuple[str, ...] = ()  # workers (HOST:PORT) to spread the model over; probed into Hardware.workers


@dataclass(frozen=True)
class Reason:
    setting: str
    value: str
    why: str


@dataclass
class DeviceUse:
    """Planned memory on one device (bytes)."""

    device: str
    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    other: int = 0
    budget: int = 0  # what the plan may use: free memory minus a safety margin
    capacity: int = 0  # free memory as detected (or given for a what-if)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.other

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def to_dict(self) -> dict[str, int | str | bool]:
        return {**asdict(self), "total": self.total, "fits": self.fits}


@dataclass
class RemoteShare:
    """A worker device's part of a plan that spans machines (planning/cluster.py)."""

    endpoint: str  # HOST:PORT of the worker
    device: int  # the device's index on that worker
    layers: tuple[int, ...]
    use: DeviceUse
    rtt: float = 0.0  # measured round trip to the worker, seconds (0: simulated)

    def to_dict(self) -> dict:
        return {"endpoint": self.endpoint, "device": self.device, "layers": list(self.layers),
                "use": self.use.to_dict(), "rtt_ms": round(self.rtt * 1000, 3)}


@dataclass
class Plan:
    model: str
    arch: str
    file_type: str
    n_params: int
    n_ctx: int
    n_ctx_requested: int
    n_batch: int
    n_ubatch: int
    threads: int
    n_gpu_layers: int  # llama.cpp's value: layers counted from the output end (n_layer_all + 1 = everything)
    gpu_layers: tuple[int, ...]  # repeating layers whose weights sit on the GPU
    cpu_expert_layers: tuple[int, ...]  # layers whose routed experts stay in RAM although the layer is on the GPU
    overrides: tuple[str, ...]  # regexes llama.cpp matches against tensor names → CPU buffer
    op_offload: bool
    flash_attn: bool
    use_mmap: bool
    use_mlock: bool
    load_mtp: bool
    ram: DeviceUse
    gpu: DeviceUse | None
    unified_memory: bool
    reasons: list[Reason] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fits: bool = True
    problem: str = ""
    forced: bool = False
    # Several machines (--rpc): the workers' shares in llama.cpp's device order, and that order's layer counts
    # (llama_model_params.tensor_split: remote devices, then this machine's GPUs).
    remote: tuple[RemoteShare, ...] = ()
    tensor_split: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ram"] = self.ram.to_dict()
        data["gpu"] = self.gpu.to_dict() if self.gpu else None
        data["remote"] = [r.to_dict() for r in self.remote]
        data["reasons"] = [asdict(r) for r in self.reasons]
        return data


# -- placement arithmetic --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    ngl: int
    cpu_experts: tuple[int, ...]
    op_offload: bool = True


def _gpu_start(fp: Footprint, ngl: int) -> int:
    """First layer index llama.cpp puts on the GPU (slot n_layer_all is the output layer)."""
    return max(fp.n_layer_all + 1 - ngl, 0)


def _usage(fp: Footprint, hw: Hardware, n_ctx: int, ub: int, lay: _Layout, req: Request) -> tuple[DeviceUse, DeviceUse]:
    """RAM and GPU use of one layout (GPU use is zeros when nothing is offloaded)."""
    has_gpu = bool(hw.usable_gpus) and lay.ngl > 0
    start = _gpu_start(fp, lay.ngl) if has_gpu else fp.n_layer_all + 1
    ram, gpu = DeviceUse("RAM"), DeviceUse("GPU")
    ram.weights = fp.totals["embeddings"] + fp.totals["other"]
    (gpu if has_gpu and start <= fp.n_layer_all else ram).weights += fp.totals["output"]
    cpu_experts = set(lay.cpu_experts)
    for layer in fp.layers:
        mtp = layer.index >= fp.n_layer
        if mtp and not req.load_mtp:
            continue
        on_gpu = layer.index >= start
        experts = layer.experts
        rest = layer.total - experts
        if on_gpu:
            gpu.weights += rest
            (ram if layer.index in cpu_experts else gpu).weights += experts
        else:
            ram.weights += layer.total
        if not mtp or req.load_mtp:  # each layer's caches live with it (V4's differ by layer)
            (gpu if on_gpu else ram).kv_cache += fp.kv_layer_bytes(layer.index, n_ctx, ub)
    compute = fp.compute_bytes(n_ctx, ub, req.flash_attn)
    everything_on_gpu = has_gpu and start == 0 and not cpu_experts
    if has_gpu:
        gpu.compute = compute
        gpu_cpu_experts = [i for i in cpu_experts if i >= start]
        if lay.op_offload and gpu_cpu_experts and ub >= 32:
            gpu.compute += fp.expert_copy_bytes(gpu_cpu_experts)
    # GPU buffers are reserved in full; a CPU buffer's untouched pages cost nothing, and a chat computes the logits
    # of one token per step, not of the whole micro-batch
    resident = fp.compute_bytes(n_ctx, ub, req.flash_attn, n_outputs=1)
    ram.compute = ub * fp.n_embd * 4 * 2 if everything_on_gpu else resident
    ram.other = RUNTIME_RAM + fp.n_vocab * 4
    return ram, gpu


def _budgets(hw: Hardware, ram: DeviceUse, gpu: DeviceUse) -> None:
    mem = hw.memory
    headroom = min(2 * GiB, max(512 * MiB, int(0.05 * mem.total)))
    ram.capacity = mem.available
    ram.budget = max(0, mem.available - headroom)
    free = hw.vram_free
    gpu.capacity = free
    margin = GPU_MARGIN if free >= 8 * GiB else 512 * MiB
    gpu.budget = max(0, free - margin)
    if hw.unified_memory:  # the GPU's share comes out of the same RAM
        ram.budget = max(0, ram.budget - gpu.total)


def _fits(hw: Hardware, ram: DeviceUse, gpu: DeviceUse) -> bool:
    _budgets(hw, ram, gpu)
    return ram.fits and (gpu.total == 0 or gpu.fits)


def _auto_layout(fp: Footprint, hw: Hardware, n_ctx: int, ub: int, req: Request) -> _Layout:
    """As much on the GPU as fits: everything; else all layers with the first N layers' experts in RAM; else fewer
    layers (with all their experts in RAM for a MoE)."""
    full = fp.n_layer_all + 1
    if not hw.usable_gpus:
        return _Layout(0, ())
    explicit_experts = _explicit_cpu_experts(fp, req)

    def gpu_ok(lay: _Layout) -> bool:
        ram, gpu = _usage(fp, hw, n_ctx, ub, lay, req)
        _budgets(hw, ram, gpu)
        return gpu.fits

    if explicit_experts is not None:
        for ngl in range(full, 0, -1):
            for op in (True, False):
                if gpu_ok(_Layout(ngl, explicit_experts, op)):
                    return _Layout(ngl, explicit_experts, op)
        return _Layout(0, ())
    if gpu_ok(_Layout(full, ())):
        return _Layout(full, ())
    if fp.is_moe:
        moe = tuple(fp.moe_layers)
        # op offload first: it moves prompt processing of RAM-resident experts to the GPU, worth more than the
        # few percent of decode speed one more expert layer in VRAM would give
        for op in (True, False):
            for n in range(1, len(moe) + 1):
                if gpu_ok(_Layout(full, moe[:n], op)):
                    return _Layout(full, moe[:n], op)
        for op in (True, False):
            for ngl in range(full - 1, 0, -1):
                if gpu_ok(_Layout(ngl, moe, op)):
                    return _Layout(ngl, moe, op)
        return _Layout(0, ())
    for ngl in range(full - 1, 0, -1):
        if gpu_ok(_Layout(ngl, ())):
            return _Layout(ngl, ())
    return _Layout(0, ())


def _explicit_cpu_experts(fp: Footprint, req: Request) -> tuple[int, ...] | None:
    if req.cpu_moe:
        return tuple(fp.moe_layers)
    if req.n_cpu_moe is not None:  # llama.cpp's --n-cpu-moe N: the experts of layers 0..N-1
        return tuple(i for i in fp.moe_layers if i < req.n_cpu_moe)
    return None


def _layout(fp: Footprint, hw: Hardware, n_ctx: int, ub: int, req: Request) -> _Layout:
    full = fp.n_layer_all + 1
    experts = _explicit_cpu_experts(fp, req)
    if req.gpu_layers == "auto" or not hw.usable_gpus:
        if not hw.usable_gpus:
            return _Layout(0, ())
        return _auto_layout(fp, hw, n_ctx, ub, req)
    ngl = full if req.gpu_layers == "all" else max(0, min(int(req.gpu_layers), full))
    lay = _Layout(ngl, experts or ())
    if lay.cpu_experts:  # keep op offload only if the GPU can stage a layer's experts
        ram, gpu = _usage(fp, hw, n_ctx, ub, lay, req)
        _budgets(hw, ram, gpu)
        if not gpu.fits:
            lay = _Layout(ngl, lay.cpu_experts, op_offload=False)
    return lay


def _overrides(fp: Footprint, lay: _Layout, req: Request) -> tuple[str, ...]:
    start = _gpu_start(fp, lay.ngl)
    on_gpu = [i for i in lay.cpu_experts if i >= start]
    if not on_gpu or lay.ngl == 0:
        return ()
    if req.cpu_moe:
        return (r"\.ffn_(up|down|gate|gate_up)_(ch|)exps",)  # llama.cpp's --cpu-moe pattern
    alternatives = "|".join(str(i) for i in on_gpu)
    return (rf"^blk\.({alternatives})\.ffn_(up|down|gate|gate_up)_(ch|)exps",)


# -- the plan --------------------------------------------------------------------------------------------------


def sizes(fp: Footprint, hw: Hardware, req: Request) -> tuple[int, int, int]:
    """(context wanted, micro-batch, batch) before memory is considered."""
    board = hw.is_small_arm_board
    trained = fp.context_train
    default_ctx = boards.BOARD_CTX if board else DEFAULT_CTX
    wanted = req.n_ctx or min(default_ctx, trained)
    small = hw.memory.total <= 8 * GiB or board
    ub = req.n_ubatch or (256 if small else 512)
    return wanted, ub, max(req.n_batch or ub, ub)


def make_plan(fp: Footprint, hw: Hardware, req: Request = Request()) -> Plan:
    """Plan how to run `fp` on `hw` (this machine alone: workers are planned by `planning.cluster`). Never raises
    for a plan that does not fit: `fits`/`problem` say so."""
    wanted, ub, batch = sizes(fp, hw, req)

    n_ctx = wanted
    lay = _layout(fp, hw, n_ctx, min(ub, n_ctx), req)
    ram, gpu = _usage(fp, hw, n_ctx, min(ub, n_ctx), lay, req)
    fits = _fits(hw, ram, gpu)
    if not fits and not ram.fits and wanted > MIN_CTX:  # RAM is the limit: a shorter context may fit
        best = None
        lo, hi = MIN_CTX // 256, (wanted - 1) // 256
        while lo <= hi:  # largest context (multiple of 256 cells) that fits
            mid = (lo + hi) // 2
            c = mid * 256
            lay_c = _layout(fp, hw, c, min(ub, c), req)
            r, g = _usage(fp, hw, c, min(ub, c), lay_c, req)
            if _fits(hw, r, g):
                best, lo = (c, lay_c, r, g), mid + 1
            else:
                hi = mid - 1
        if best:
            n_ctx, lay, ram, gpu = best
            fits = True
    ub = min(ub, n_ctx)
    batch = min(batch, n_ctx)
    plan = Plan(
        model=fp.name, arch=fp.arch, file_type=fp.file_type, n_params=fp.n_params, n_ctx=n_ctx,
        n_ctx_requested=wanted, n_batch=batch, n_ubatch=ub, threads=req.threads or _threads(hw),
        n_gpu_layers=lay.ngl,
        gpu_layers=tuple(range(_gpu_start(fp, lay.ngl), fp.n_layer_all if req.load_mtp else fp.n_layer)) if lay.ngl else (),
        cpu_expert_layers=tuple(i for i in lay.cpu_experts if lay.ngl and i >= _gpu_start(fp, lay.ngl)),
        overrides=_overrides(fp, lay, req), op_offload=lay.op_offload, flash_attn=req.flash_attn,
        use_mmap=req.mmap, use_mlock=req.mlock, load_mtp=req.load_mtp, ram=ram,
        gpu=gpu if hw.usable_gpus else None, unified_memory=hw.unified_memory, fits=fits, forced=req.force and not fits,
    )
    _explain(plan, fp, hw, req, wanted)
    if not fits:
        plan.problem = _refusal(plan, fp, hw)
    return plan


# -- why -------------------------------------------------------------------------------------------------------


def _explain(plan: Plan, fp: Footprint, hw: Hardware, req: Request, wanted: int) -> None:
    why = plan.reasons.append
    fs = format_size
    total_gpu_slots = fp.n_layer_all + 1

    # GPU layers and experts
    asked_offload = req.gpu_layers not in ("auto", 0) or req.cpu_moe or req.n_cpu_moe is not None
    if not hw.usable_gpus and asked_offload:
        plan.warnings.append("no usable GPU: --gpu-layers/--cpu-moe/--n-cpu-moe have no effect; everything runs from RAM")
    if (req.cpu_moe or req.n_cpu_moe is not None) and not fp.is_moe:
        plan.warnings.append(f"{fp.name} has no routed experts: --cpu-moe/--n-cpu-moe have no effect")
    if not hw.usable_gpus:
        hint = "no GPU that this llama.cpp build can use"
        if any(not g.usable for g in hw.gpus):
            hint = "a GPU is present but this llama.cpp build has no backend for it (see `localseek doctor`)"
        why(Reason("gpu layers", "0", f"{hint}; everything runs on the CPU from RAM"))
    elif plan.n_gpu_layers == 0:
        why(Reason("gpu layers", "0", "you asked for no offload" if req.gpu_layers == 0 else
                   f"not even one layer fits in {fs(plan.gpu.budget if plan.gpu else 0)} of usable VRAM"))
    elif plan.n_gpu_layers >= total_gpu_slots:
        src = "you asked for all layers" if req.gpu_layers == "all" else \
            f"all {fp.n_layer} layers + output fit in {fs(plan.gpu.budget if plan.gpu else 0)} of usable VRAM"
        if plan.cpu_expert_layers and req.gpu_layers == "auto" and _explicit_cpu_experts(fp, req) is None:
            src = "every layer's attention, shared experts and KV cache fit on the GPU; routed experts go there as space allows"
        why(Reason("gpu layers", "all", src))
    else:
        n_rep = len(plan.gpu_layers)
        why(Reason("gpu layers", str(plan.n_gpu_layers),
                   f"output + the last {n_rep} of {fp.n_layer} layers fill {fs(plan.gpu.total if plan.gpu else 0)} "
                   f"of {fs(plan.gpu.budget if plan.gpu else 0)} usable VRAM; the first {fp.n_layer - n_rep} run on the CPU"))
    if fp.is_moe and plan.n_gpu_layers:
        n_moe_gpu = len([i for i in fp.moe_layers if i in set(plan.gpu_layers)])
        if plan.cpu_expert_layers:
            per = max((fp.layers[i].experts for i in plan.cpu_expert_layers), default=0)
            why(Reason(
                "experts in RAM", _ranges(plan.cpu_expert_layers),
                f"{len(plan.cpu_expert_layers)} of {n_moe_gpu} MoE layers on the GPU keep their routed experts "
                f"({fs(per)} per layer) in RAM by override; only {fp.n_expert_used} of {fp.n_expert} experts are read per "
                "token, so the CPU handles them at RAM speed while attention and shared experts stay on the GPU"))
        else:
            why(Reason("experts in RAM", "none", "every offloaded layer's routed experts fit on the GPU"))
        if plan.cpu_expert_layers:
            why(Reason("op offload", "on" if plan.op_offload else "off",
                       "prompts of 32+ tokens run expert matmuls on the GPU (copying the used experts over PCIe)"
                       if plan.op_offload else
                       "the GPU has no room to stage a layer's experts, so prompt processing of experts stays on the CPU"))
    elif fp.is_moe:
        why(Reason("experts in RAM", "all", "no GPU offload: the whole model runs from RAM"))

    # context
    kv_tok = fp.kv_bytes_per_token()
    kind = fp.kv_kind
    if req.n_ctx and req.n_ctx > fp.context_train:
        plan.warnings.append(
            f"--ctx {req.n_ctx} is more than the {fp.context_train} tokens the model was trained for: past "
            f"{fp.context_train} tokens its answers degrade (--ctx {fp.context_train} or less avoids that)"
        )
    if plan.n_ctx < wanted:
        msg = (f"only {plan.n_ctx} of the requested {wanted} tokens fit ({fs(kv_tok)} per token, {kind})")
        why(Reason("context", str(plan.n_ctx), msg))
        plan.warnings.append(f"context reduced from {wanted} to {plan.n_ctx} tokens to fit memory")
    else:
        src = "you asked for it" if req.n_ctx else (
            f"the default ({boards.BOARD_CTX} on a small board: room for the OS beside the KV cache)"
            if hw.is_small_arm_board else "the default")
        if not req.n_ctx and fp.context_train < DEFAULT_CTX:
            src = "the model's trained context"
        why(Reason("context", str(plan.n_ctx),
                   f"{src}; KV cache {fs(fp.kv_bytes(plan.n_ctx))} ({fs(kv_tok)} per token, {kind}); "
                   f"trained for {fp.context_train}"))
    if fp.legacy_mla:
        latent = (fp.kv_lora + fp.rope_dim) * 2 * fp.n_layer
        plan.warnings.append(
            "this deepseek2 GGUF predates llama.cpp's MLA layout (attn_kv_b, no attn_k_b/attn_v_b): it caches "
            f"{fs(kv_tok)} per token where a current conversion caches {fs(latent)} "
            f"(1/{kv_tok / latent:.0f}) — re-download or re-convert it for long contexts"
        )

    # threads
    if req.threads:
        why(Reason("threads", str(plan.threads), "you asked for it"))
    elif not hw.simulated and env_threads():
        why(Reason("threads", str(plan.threads), "set by LOCALSEEK_THREADS"))
    elif boards.profile(hw) is not None:
        why(Reason("threads", str(plan.threads), "one per core of the board (llama-cpp-python's own default would "
                   "use half of them)"))
    elif hw.cpu.performance_cores:
        why(Reason("threads", str(plan.threads), "one per performance core; efficiency cores slow every token down"))
    elif hw.cpu.logical_cpus > hw.cpu.physical_cores:
        why(Reason("threads", str(plan.threads),
                   f"one per physical core ({hw.cpu.logical_cpus} logical CPUs): llama.cpp is limited by memory "
                   "bandwidth and hyper-threads only contend for it"))
    else:
        why(Reason("threads", str(plan.threads), "one per core"))

    # batch
    comp = fp.compute_bytes(plan.n_ctx, plan.n_ubatch, plan.flash_attn)
    if req.n_ubatch:
        why(Reason("batch/ubatch", f"{plan.n_batch}/{plan.n_ubatch}", "you asked for it"))
    elif plan.n_ubatch < 512:
        why(Reason("batch/ubatch", f"{plan.n_batch}/{plan.n_ubatch}",
                   f"small-memory machine: the compute buffer is {fs(comp)} instead of "
                   f"{fs(fp.compute_bytes(plan.n_ctx, 512, plan.flash_attn))} at 512; prompts process a little slower"))
    else:
        why(Reason("batch/ubatch", f"{plan.n_batch}/{plan.n_ubatch}",
                   f"llama.cpp's usual micro-batch; compute buffer {fs(comp)}"))
    if plan.flash_attn:
        without = fp.compute_bytes(plan.n_ctx, plan.n_ubatch, False)
        gain = f"compute buffer {fs(comp)} instead of {fs(without)}" if without > comp * 1.05 else \
            f"no memory cost here (compute buffer {fs(comp)})"
        why(Reason("flash attention", "on", f"{gain}; without it the attention scores grow with the context"))
    else:
        why(Reason("flash attention", "off", f"you turned it off; the compute buffer is {fs(comp)}"))

    # mmap / mlock
    if plan.use_mmap:
        extra = ""
        if plan.overrides:
            extra = "; --no-mmap can speed up the RAM-resident experts (llama.cpp's advice) if RAM allows"
        why(Reason("mmap", "on", "weights stay in the page cache: reloads are instant, and RAM-resident weights are "
                   f"read on demand{extra}"))
    else:
        why(Reason("mmap", "off", "you asked for it: weights are read into RAM up front (slower start, no paging)"))
    if plan.use_mlock:
        why(Reason("mlock", "on", "you asked for it: the weights are pinned in RAM"))
        limit = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        if limit != resource.RLIM_INFINITY and limit < plan.ram.weights and not hw.simulated:
            plan.warnings.append(
                f"--mlock needs {fs(plan.ram.weights)} locked but `ulimit -l` allows {fs(limit)}; "
                "raise the limit or drop --mlock"
            )
    else:
        why(Reason("mlock", "off", "the OS may page weights out only under memory pressure; --mlock pins them"))

    # small boards
    if hw.is_small_arm_board:
        _explain_board(plan, fp, hw)

    # headroom
    if plan.fits:
        use = plan.ram.total + (plan.gpu.total if plan.unified_memory and plan.gpu else 0)
        if hw.memory.available and use > CLOSE_TO_SWAP * hw.memory.available:
            plan.warnings.append(
                f"this plan uses {fs(use)} of {fs(hw.memory.available)} available RAM: close to swapping — "
                "close other programs, or use a smaller context or model"
            )
    if hw.simulated:
        plan.warnings.append("planned for a simulated machine (what-if), not this one")


def _threads(hw: Hardware) -> int:
    board = boards.profile(hw)
    if board is not None and not (not hw.simulated and env_threads()):
        return board.threads
    return default_threads(hw)


def _explain_board(plan: Plan, fp: Footprint, hw: Hardware) -> None:
    board = boards.profile(hw)
    assert board is not None
    name = hw.board.model if hw.board else board.name
    if fp.file_type in boards.REPACKED:
        plan.reasons.append(Reason("quant", fp.file_type, "repacked at load for the ARM NEON/dot-product kernels"))
    else:
        plan.reasons.append(Reason(
            "quant", fp.file_type,
            f"on {name} Q4_0 and Q4_K_M run fastest: llama.cpp repacks them at load for the NEON/dot-product "
            f"kernels; a Q4_K_M of this model would run faster than {fp.file_type}"))
    if board.bandwidth:
        read = fp.weights() * (fp.n_expert_used / fp.n_expert if fp.is_moe and fp.n_expert else 1)
        plan.reasons.append(Reason("expected speed", f"≈{board.bandwidth / max(read, 1):.1f} tok/s", board.basis))
    best, largest = boards.recommend(hw)
    plan.reasons.append(Reason(
        "recommended model", best.ref if best else "none",
        (best.line(basis=False) + " (same estimate)") if best
        else f"no DeepSeek model runs at a usable speed in {format_size(hw.memory.total)} RAM"))
    if largest is not None:
        plan.reasons.append(Reason("largest that fits", largest.ref, largest.line(basis=False) + ", too slow to chat"))
    if hw.memory.swap_total and plan.ram.total > hw.memory.available:
        plan.warnings.append("the plan exceeds RAM: the board would swap to its SD card/USB disk")


def _ranges(layers: tuple[int, ...]) -> str:
    out: list[str] = []
    start = prev = None
    for i in layers:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = i
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(out) or "none"


def _refusal(plan: Plan, fp: Footprint, hw: Hardware) -> str:
    fs = format_size
    gpu = plan.gpu
    need = plan.ram.total + (gpu.total if gpu else 0)
    if gpu and plan.unified_memory:
        have = plan.ram.budget + gpu.total  # the GPU's share is already taken out of the RAM budget
    else:
        have = plan.ram.budget + (gpu.budget if gpu else 0)
    parts = [f"weights {fs(plan.ram.weights + (gpu.weights if gpu else 0))}",
             f"KV cache {fs(plan.ram.kv_cache + (gpu.kv_cache if gpu else 0))} for {plan.n_ctx} tokens",
             f"buffers {fs(plan.ram.compute + plan.ram.other + (gpu.compute + gpu.other if gpu else 0))}"]
    where = f"{fs(hw.memory.available)} of available RAM"
    if gpu and not plan.unified_memory and gpu.capacity:
        where += f" + {fs(gpu.capacity)} of free VRAM"
    if gpu and gpu.total > gpu.budget and plan.ram.fits:
        return (f"{fp.name} does not fit the GPU as asked: {fs(gpu.total)} on the GPU but only {fs(gpu.budget)} usable "
                f"({', '.join(parts)}). Ways out: fewer --gpu-layers (or `auto`), --cpu-moe, a smaller --ctx, "
                "or --force to try anyway.")
    spare = have - (need - plan.ram.weights - (gpu.weights if gpu else 0))
    ways = []
    bpw = spare * 8 / fp.n_params if fp.n_params else 0
    fitting = [name for name, b in QUANT_BPW if b <= bpw * 0.97]
    if fitting:
        ways.append(f"a smaller quant ({fitting[0]} or below fits: ≈{fs(spare)} for weights)")
    else:
        smallest = QUANT_BPW[-1]
        ways.append(f"a smaller model (even {smallest[0]} of this one needs ≈{fs(fp.n_params * smallest[1] / 8)})")
    if plan.n_ctx > MIN_CTX:
        ways.append("a smaller --ctx")
    ways.append("--force to try anyway (it will page weights from disk and crawl)")
    return (f"{fp.name} needs about {fs(need)} ({', '.join(parts)}) but this machine has {where}. "
            f"Ways out: {'; '.join(ways)}.")


__all__ = ["DEFAULT_CTX", "DeviceUse", "Plan", "Reason", "RemoteShare", "Request", "make_plan"]
