"""Plans that span machines: this one (RAM, and its GPUs) plus workers lending memory over llama.cpp's RPC backend.

How llama.cpp places layers once workers are registered (src/llama-model.cpp, `load_tensors`): token embeddings
stay on this machine's CPU; the first `n_layer_all + 1 - n_gpu_layers` layers run on this CPU too; the rest, and
the output head, go to the "GPU" devices in order — every RPC device first (registration order), then this
machine's own GPUs — each taking a contiguous run of layers in proportion to `tensor_split`. So a plan is: how many
layers stay here, and how many each device after that takes.

What this planner decides, and why:
- **Whole layers, contiguous per machine.** A layer's attention, experts and KV cache stay together, so a token
  crosses each link once each way (this machine → worker → back) whatever the model's size. Splitting a layer's
  routed experts from its attention would add a round trip per MoE layer — 58 for R1.
- **In proportion to usable memory.** After each device's fixed costs (compute buffer; here also embeddings,
  output head, runtime), layers are shared out so every machine keeps the same fraction of its memory free. CPU
  decoding is bound by memory bandwidth and runs the machines one after another, so no split is faster than
  another on similar machines; the link cost is per worker (a round trip and the hidden state per token), not per
  layer, so it decides whether a split is worth it, not its proportions, and the plan states it.
- **The output head stays here** (by override when this machine has no GPU): its input is the hidden state
  (n_embd floats per token) but its output is the logits (n_vocab floats), 18× more for R1, which would otherwise
  come back over the network for every token.
- **Memory a worker cannot vouch for is not all usable.** ggml's CPU device reports all of RAM as free; then the
  planner keeps the usual RAM headroom. `localseek worker` reports what is really free (or `--mem`).

Pure: no connection is made here (workers arrive probed or simulated in `Hardware.workers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from localseek.models.quants import QUANT_BPW
from localseek.planning.footprint import Footprint
from localseek.planning.hardware import Hardware
from localseek.planning.plan import (
    MIN_CTX,
    RUNTIME_RAM,
    DeviceUse,
    Plan,
    Reason,
    RemoteShare,
    Request,
    _budgets,
    _explain,
    _ranges,
    make_plan,
    sizes,
)
from localseek.planning.rpc import Worker, headroom
from localseek.sizes import format_size

OUTPUT_OVERRIDE = r"^output(_norm)?\."  # output.weight, output_norm.weight (and biases) → this machine's CPU
_PLACEMENT_REASONS = ("gpu layers", "experts in RAM", "op offload")


@dataclass
class _Device:
    name: str
    use: DeviceUse
    fixed: int  # bytes the device needs whatever its layers (compute buffer; here also embeddings, output, runtime)
    layers: list[int] = field(default_factory=list)
    worker: Worker | None = None
    index: int = 0  # device index on the worker

    @property
    def room(self) -> int:
        return max(0, self.use.budget - self.fixed)


def plan(fp: Footprint, hw: Hardware, req: Request | None = None) -> Plan:
    """`make_plan` for this machine, or across it and `hw.workers` when there are any."""
    req = req or Request()
    if not hw.workers:
        return make_plan(fp, hw, req)
    return make_cluster_plan(fp, hw, req)


def make_cluster_plan(fp: Footprint, hw: Hardware, req: Request | None = None) -> Plan:
    """Plan `fp` across this machine and `hw.workers`. Never raises for a plan that does not fit."""
    req = req or Request()
    wanted, ub, batch = sizes(fp, hw, req)
    n_ctx = wanted
    devs = _place(fp, hw, n_ctx, min(ub, n_ctx), req)
    fits = _fits(devs)
    if not fits and wanted > MIN_CTX:
        lo, hi, best = MIN_CTX // 256, (wanted - 1) // 256, None
        while lo <= hi:  # the largest context (multiple of 256 cells) that fits across the machines
            mid = (lo + hi) // 2
            trial = _place(fp, hw, mid * 256, min(ub, mid * 256), req)
            if _fits(trial):
                best, lo = (mid * 256, trial), mid + 1
            else:
                hi = mid - 1
        if best:
            (n_ctx, devs), fits = best, True
    ub, batch = min(ub, n_ctx), min(batch, n_ctx)
    ram, remote, gpu = devs[0], [d for d in devs if d.worker], [d for d in devs[1:] if not d.worker]
    offloaded = [d for d in devs[1:] if d.layers or (d in gpu and any(r.layers for r in remote))]
    ngl = fp.n_layer_all + 1 - len(ram.layers) if offloaded else 0
    split = _split(offloaded, hw)
    base = make_plan(fp, replace(hw, workers=()), replace(req, force=True))  # settings and their reasons
    gpu_use = gpu[0].use if gpu else DeviceUse("GPU")
    result = replace(
        base, n_ctx=n_ctx, n_ctx_requested=wanted, n_batch=batch, n_ubatch=ub, n_gpu_layers=ngl,
        gpu_layers=tuple(gpu[0].layers) if gpu else (), cpu_expert_layers=(),
        overrides=(), op_offload=True, ram=ram.use,
        gpu=gpu_use if hw.usable_gpus else None, fits=fits, problem="", forced=req.force and not fits,
        reasons=[], warnings=[],
        remote=tuple(RemoteShare(d.worker.endpoint, d.index, tuple(d.layers), d.use, d.worker.rtt)
                     for d in remote if d.worker is not None and d.layers),
        tensor_split=tuple(split),
    )
    _explain(result, fp, replace(hw, workers=()), req, wanted)  # (its mmap advice is about expert overrides)
    result.overrides = (OUTPUT_OVERRIDE,) if offloaded and not gpu else ()
    result.reasons = _cluster_reasons(result, fp, hw, devs) + [
        r for r in result.reasons if r.setting not in _PLACEMENT_REASONS]
    result.warnings = [w for w in result.warnings if not w.startswith("no usable GPU")]
    if req.gpu_layers != "auto" or req.cpu_moe or req.n_cpu_moe is not None:
        result.warnings.insert(0, "with workers the planner places every layer (--gpu-layers, --cpu-moe and "
                                  "--n-cpu-moe are not applied)")
    if base.fits and base.n_ctx >= n_ctx and result.remote:
        result.warnings.append(
            "this model fits on this machine alone: spread over workers, every token waits for the network, and CPU "
            "workers run without llama.cpp's weight repacking (slower kernels, docs/PERFORMANCE.md); drop --rpc to "
            "run it here")
    idle = [w.endpoint for w in hw.workers if not any(d.worker is w and d.layers for d in devs)]
    if idle and fits:
        result.warnings.append(f"worker {', '.join(idle)} gets no layers (too little memory to hold one)")
    if not fits:
        result.problem = _refusal(result, fp, hw, devs)
    return result


def _split(offloaded: list[_Device], hw: Hardware) -> list[float]:
    """llama.cpp's tensor_split: layer slots per device in its order (the last device also takes the output
    slot); this machine's GPU share is divided among its GPUs by free memory."""
    split: list[float] = []
    for d in offloaded:
        n = len(d.layers) + (1 if d is offloaded[-1] else 0)
        if d.worker is not None:
            split.append(float(n))
            continue
        gpus = hw.usable_gpus
        free = sum(g.memory_free for g in gpus) or 1
        counts = [n * g.memory_free // free for g in gpus]
        counts[-1] += n - sum(counts)
        split.extend(float(c) for c in counts)
    return split


def _fits(devs: list[_Device]) -> bool:
    return all(d.use.fits for d in devs)


def _layer_cost(fp: Footprint, index: int, n_ctx: int, req: Request) -> int:
    """Weights and KV cache of one layer slot (the MTP layer costs nothing unless MTP decoding loads it)."""
    layer = fp.layers[index]
    if index >= fp.n_layer and not req.load_mtp:
        return 0
    return layer.total + fp.kv_bytes(n_ctx, layers=1)


def _devices(fp: Footprint, hw: Hardware, n_ctx: int, ub: int, req: Request) -> list[_Device]:
    """This machine's RAM, every worker device, this machine's GPUs (pooled), with budgets and fixed costs."""
    reserved = fp.compute_bytes(n_ctx, ub, req.flash_attn)
    remote_compute = fp.compute_bytes(n_ctx, ub, req.flash_attn, n_outputs=1)  # no output head on a worker
    gpus = bool(hw.usable_gpus)
    ram = DeviceUse("RAM")
    ram.weights = fp.totals["embeddings"] + fp.totals["other"] + (0 if gpus else fp.totals["output"])
    ram.compute = fp.compute_bytes(n_ctx, ub, req.flash_attn, n_outputs=1)
    ram.other = RUNTIME_RAM + fp.n_vocab * 4
    gpu = DeviceUse("GPU")
    if gpus:
        gpu.weights, gpu.compute = fp.totals["output"], reserved
    _budgets(hw, ram, gpu)
    devs = [_Device("this machine", ram, ram.total)]
    for w in hw.workers:
        for d in w.devices:
            use = DeviceUse(f"{w.endpoint}" + (f" #{d.index}" if len(w.devices) > 1 else ""), compute=remote_compute)
            use.capacity = d.free
            use.budget = d.free if d.honest else max(0, d.free - headroom(d.total))
            devs.append(_Device(use.device, use, use.compute, worker=w, index=d.index))
    if gpus:
        devs.append(_Device("GPU", gpu, gpu.weights + gpu.compute))
    return devs


def _place(fp: Footprint, hw: Hardware, n_ctx: int, ub: int, req: Request) -> list[_Device]:
    """Contiguous runs of layers in device order, in proportion to each device's room; a greedy fill when
    rounding to whole layers overflows a device. When nothing fits, the proportional split is kept (for --force
    and for the numbers of the refusal)."""
    devs = _devices(fp, hw, n_ctx, ub, req)
    costs = [_layer_cost(fp, i, n_ctx, req) for i in range(fp.n_layer_all)]
    rooms = [d.room for d in devs]
    assign = _proportional(costs, rooms)
    loads = _loads(costs, assign, len(devs))
    if any(load > room for load, room in zip(loads, rooms)):
        greedy = _greedy(costs, rooms)
        if greedy is not None:
            assign = greedy
    for i, d in enumerate(assign):
        devs[d].layers.append(i)
    kv = fp.kv_bytes(n_ctx, layers=1)
    for d in devs:
        for i in d.layers:
            if costs[i]:
                d.use.weights += fp.layers[i].total
                d.use.kv_cache += kv
    return devs


def _proportional(costs: list[int], rooms: list[int]) -> list[int]:
    total, room = sum(costs), sum(rooms) or 1
    last = len(rooms) - 1
    assign, cum, d = [], 0, 0
    bound = total * rooms[0] / room
    for c in costs:
        # a layer goes to the device whose share holds its middle; zero-cost slots stay with the one before
        while c and d < last and cum + c / 2 > bound:
            d += 1
            bound += total * rooms[d] / room
        assign.append(d)
        cum += c
    return assign


def _greedy(costs: list[int], rooms: list[int]) -> list[int] | None:
    """Fill each device in order as far as it goes; None if the layers do not fit that way either."""
    assign, d, load = [], 0, 0
    for c in costs:
        while c and load + c > rooms[d]:
            d, load = d + 1, 0
            if d == len(rooms):
                return None
        assign.append(d)
        load += c
    return assign


def _loads(costs: list[int], assign: list[int], n: int) -> list[int]:
    loads = [0] * n
    for c, d in zip(costs, assign):
        loads[d] += c
    return loads


# -- why ---------------------------------------------------------------------------------------------------------


def _cluster_reasons(plan: Plan, fp: Footprint, hw: Hardware, devs: list[_Device]) -> list[Reason]:
    fs = format_size
    used = [d for d in devs if d.layers or d is devs[0]]
    machines = 1 + len({d.worker.endpoint for d in used if d.worker})
    reasons = [Reason(
        "split", f"{machines} machines",
        "whole layers in proportion to each machine's usable memory, so each keeps the same share free; a layer's "
        "weights and KV cache stay together, so a token crosses each link once each way")]
    for d in devs:
        where = _ranges(tuple(i for i in d.layers if i < fp.n_layer or plan.load_mtp)) if d.layers else "none"
        if d is devs[0]:
            held = "token embeddings" + ("" if hw.usable_gpus else ", the output head") + (
                f", layers {where}" if d.layers else "")
            why = f"{held}: {fs(d.use.total)} of {fs(d.use.budget)} usable RAM"
        elif d.worker is not None:
            dev = next(x for x in d.worker.devices if x.index == d.index)
            kept = "" if dev.honest else f"; it reports all {fs(dev.total)} as free, {fs(headroom(dev.total))} kept back"
            rtt = f" · round trip {d.worker.rtt * 1000:.2f} ms" if d.worker.rtt else ""
            why = f"{fs(d.use.total)} of {fs(d.use.budget)} usable{kept}{rtt}"
        else:
            why = f"this machine's GPU: {fs(d.use.total)} of {fs(d.use.budget)} usable VRAM, with the output head"
        reasons.append(Reason(d.name, f"layers {where}", why))
    remote = [d for d in devs if d.worker and d.layers]
    if remote:
        if not hw.usable_gpus:
            reasons.append(Reason(
                "output head", "this machine",
                f"the logits ({fs(fp.n_vocab * 4)} per token) would otherwise cross the network; only the hidden "
                f"state ({fs(fp.n_embd * 4)} per token) does"))
        hops = len({d.worker.endpoint for d in remote if d.worker})
        rtts = {d.worker.endpoint: d.worker.rtt for d in remote if d.worker}
        measured = " + ".join(f"{r * 1000:.2f}" for r in rtts.values() if r)
        cost = (f"measured round trips {measured} ms: at least {sum(rtts.values()) * 1000:.2f} ms per token"
                if measured else "round trips not measured (what-if)")
        reasons.append(Reason(
            "network", f"{hops} round trip{'s' if hops > 1 else ''}/token",
            f"each token goes to every worker and back ({fs(2 * fp.n_embd * 4)} of hidden state per worker, plus "
            f"small inputs); {cost}; loading sends each worker its layers once"))
    return reasons


def _refusal(plan: Plan, fp: Footprint, hw: Hardware, devs: list[_Device]) -> str:
    fs = format_size
    weights = sum(d.use.weights for d in devs)
    kv = sum(d.use.kv_cache for d in devs)
    buffers = sum(d.use.compute + d.use.other for d in devs)
    need = weights + kv + buffers
    have = sum(d.use.budget for d in devs)
    offers = ", ".join(f"{d.name} {fs(d.use.budget)}" for d in devs)
    spare = have - (need - weights)
    ways = ["another worker (`--rpc`)"]
    bpw = spare * 8 / fp.n_params if fp.n_params else 0
    fitting = [name for name, b in QUANT_BPW if b <= bpw * 0.97]
    if fitting:
        ways.append(f"a smaller quant ({fitting[0]} or below fits: ≈{fs(spare)} for weights)")
    if plan.n_ctx > MIN_CTX:
        ways.append("a smaller --ctx")
    ways.append("--force to try anyway")
    largest = max((d for d in devs if d.layers), key=lambda d: d.use.total - d.use.budget, default=None)
    if need <= have and largest is not None:  # the sum would fit, but whole layers do not divide that way
        return (f"{fp.name} fits the machines' memory in sum ({fs(need)} of {fs(have)}) but not in whole layers: "
                f"{largest.name} would need {fs(largest.use.total)} of its {fs(largest.use.budget)}. Ways out: "
                f"{'; '.join(ways)}.")
    return (f"{fp.name} needs about {fs(need)} (weights {fs(weights)}, KV cache {fs(kv)} for {plan.n_ctx} tokens, "
            f"buffers {fs(buffers)}) but this machine and {len(hw.workers)} worker{'s' if len(hw.workers) > 1 else ''} "
            f"offer {fs(have)} usable ({offers}). Ways out: {'; '.join(ways)}.")


__all__ = ["OUTPUT_OVERRIDE", "make_cluster_plan", "plan"]
