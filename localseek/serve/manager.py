"""The models a server holds: loaded on first use through the planner, shared by every request, unloaded after
`keep_alive` idle seconds (or by `localseek stop`).

Memory: the machine is measured once, when the server starts; each model is planned in what the models already
loaded leave of it (`runtime.open.remaining`), so the server never holds more than fits. A model that does not fit
beside the others evicts the least recently used idle one; when all of them are busy it waits (up to
`load_wait` seconds) for one to fall idle, and a model that does not fit even alone is refused (HTTP 507).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localseek.chat.conversation import ChatTemplate
from localseek.chat.generation import template_for
from localseek.errors import EngineError, InsufficientMemoryError
from localseek.models.resolve import ModelRef, resolve
from localseek.planning import hardware
from localseek.planning.plan import Plan, Request
from localseek.runtime.open import OpenModel, Prepared, Speculation, open_model, prepare, remaining
from localseek.runtime.options import Sampling
from localseek.runtime.parallel import FairQueue, ParallelDecoder, Scheduler, SequenceEngine
from localseek.serve.errors import HTTPError, bad_request

log = logging.getLogger("localseek.serve")

DEFAULT_PARALLEL = 4  # sequences per model when it does not speculate (llama-server's default too)
_ids = itertools.count(1)


@dataclass
class Running:
    """A request being served, for `localseek ps`."""

    id: int
    endpoint: str
    started: float
    cancel: threading.Event


@dataclass(eq=False)
class Loaded:
    key: str
    name: str
    ref: ModelRef
    opened: OpenModel
    scheduler: Scheduler
    template: ChatTemplate
    keep_alive: float | None  # seconds idle before unloading; None: never
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    running: dict[int, Running] = field(default_factory=dict)
    turns: set[int] = field(default_factory=set)  # generation threads still inside the engine

    @property
    def plan(self) -> Plan:
        return self.opened.plan

    @property
    def sampling(self) -> Sampling:
        return self.opened.sampling

    def view(self, cancel: threading.Event) -> SequenceEngine:
        return SequenceEngine(self.opened.engine, self.scheduler, cancel)

    def check_grammar(self, sampling: Sampling) -> None:
        """A grammar llama.cpp cannot parse is the request's fault (400), found before anything runs."""
        if sampling.grammar is None:
            return
        try:
            self.opened.engine.sampler(sampling).close()
        except EngineError:
            raise bad_request("The response format's grammar was refused by llama.cpp.", "response_format") from None

    def memory(self) -> tuple[int, int]:
        """(RAM, VRAM) the plan gives this model, in bytes."""
        plan = self.plan
        return plan.ram.total, plan.gpu.total if plan.gpu else 0

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        slots, waiting = self.scheduler.info()
        idle = 0.0 if self.running else now - self.last_used
        ram, vram = self.memory()
        plan = self.plan
        return {
            "name": self.name,
            "path": str(self.ref.path),
            "plan": f"ctx {plan.n_ctx}, threads {plan.threads}, gpu layers {plan.n_gpu_layers}, "
                    f"batch {plan.n_batch}/{plan.n_ubatch}" + (", mmap" if plan.use_mmap else ""),
            "ram_bytes": ram,
            "vram_bytes": vram,
            "n_ctx": plan.n_ctx,
            "loaded_at": self.loaded_at,
            "idle_s": round(idle, 1),
            "keep_alive_s": self.keep_alive,
            "expires_in_s": None if self.keep_alive is None or self.running else
            round(max(0.0, self.keep_alive - idle), 1),
            "speculation": self.opened.drafter or None,
            "slots": [{"seq": s.seq, "busy": s.busy, "cached_tokens": s.cached_tokens} for s in slots],
            "waiting": waiting,
            "requests": [{"id": r.id, "endpoint": r.endpoint, "running_s": round(now - r.started, 1)}
                         for r in self.running.values()],
            "decoder": _decoder_counters(self.scheduler),
        }


class ModelManager:
    def __init__(self, request: Request, *, keep_alive: float | None = 300.0, parallel: int | None = None,
                 speculation: Speculation | None = None, hw: hardware.Hardware | None = None,
                 load_wait: float = 300.0, verbose: bool = False) -> None:
        self.request = request
        self.keep_alive = keep_alive
        self.parallel = parallel
        self.speculation = speculation or Speculation()
        self.load_wait = load_wait
        self.verbose = verbose
        self._hw = hw
        self.models: dict[str, Loaded] = {}
        self.loading: dict[str, asyncio.Future[Loaded]] = {}
        self.named: dict[str, ModelRef] = {}  # models named on the command line, by the names they answer to
        self._changed: asyncio.Condition | None = None

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @property
    def hw(self) -> hardware.Hardware:
        if self._hw is None:
            self._hw = hardware.detect()  # once: later plans subtract what is loaded, not what is measured
        return self._hw

    # -- names ---------------------------------------------------------------------------------------
    def add(self, text: str) -> ModelRef:
        """A model named on the command line: resolved now (an error stops the server before it listens)."""
        ref = resolve(text)
        for alias in (text, ref.key, ref.name, ref.path.name):
            self.named.setdefault(alias, ref)
        return ref

    def resolve(self, name: str) -> ModelRef:
        if not isinstance(name, str) or not name.strip():
            raise bad_request("`model` is required: a model name, as /v1/models lists them.", "model")
        ref = self.named.get(name)
        if ref is not None:
            return ref
        for loaded in self.models.values():
            if name in (loaded.name, loaded.ref.text):
                return loaded.ref
        return resolve(name)  # installed, catalog (not pulled by the server: 404 with the pull command) or path

    # -- loading ---------------------------------------------------------------------------------------
    @property
    def is_loading(self) -> bool:
        return bool(self.loading)

    async def acquire(self, name: str, endpoint: str) -> tuple[Loaded, Running]:
        """The model `name` names, loaded (waiting for a load in progress), with this request counted as running
        until `release`."""
        ref = self.resolve(name)
        while True:
            loaded = await self.load(ref)
            if self.models.get(loaded.key) is loaded:  # not unloaded meanwhile (`localseek stop`)
                break
        run = Running(next(_ids), endpoint, time.monotonic(), threading.Event())
        loaded.running[run.id] = run
        return loaded, run

    async def release(self, loaded: Loaded, run: Running) -> None:
        loaded.running.pop(run.id, None)
        loaded.last_used = time.monotonic()
        async with self.changed:
            self.changed.notify_all()

    async def load(self, ref: ModelRef) -> Loaded:
        key = str(Path(ref.path).resolve())
        if key in self.models:
            return self.models[key]
        if key in self.loading:
            return await asyncio.shield(self.loading[key])
        future: asyncio.Future[Loaded] = asyncio.get_running_loop().create_future()
        self.loading[key] = future
        try:
            loaded = await self._load(key, ref)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody is warned
            raise
        finally:
            self.loading.pop(key, None)
        self.models[key] = loaded
        self.named.setdefault(ref.key, ref)  # known by its name from now on, loaded or not
        future.set_result(loaded)
        return loaded

    def _left(self, exclude: Loaded | None = None) -> hardware.Hardware:
        hw = self.hw
        for loaded in self.models.values():
            if loaded is not exclude:
                hw = remaining(hw, loaded.plan)
        return hw

    async def _load(self, key: str, ref: ModelRef) -> Loaded:
        deadline = time.monotonic() + self.load_wait
        while True:
            hw = self._left()
            prep: Prepared = await asyncio.to_thread(prepare, ref, self.request, speculation=self.speculation, hw=hw)
            if prep.plan.fits or self.request.force:
                break
            idle = sorted((m for m in self.models.values() if not m.running), key=lambda m: m.last_used)
            if idle:
                log.info("unloading %s to make room for %s", idle[0].name, ref.key)
                await self.unload(idle[0])
                continue
            if not self.models:
                raise InsufficientMemoryError(prep.plan.problem)
            left = deadline - time.monotonic()
            if left <= 0:
                raise HTTPError(503, f"{ref.key} does not fit beside the models serving requests now; retry when "
                                     "they finish.", type="unavailable_error", code="busy")
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=min(left, 5.0))
                except TimeoutError:
                    pass
        speculative = prep.use_mtp or prep.mtp_file is not None or bool(self.speculation.draft)
        n = self.parallel if self.parallel is not None else (1 if speculative else DEFAULT_PARALLEL)
        spec = self.speculation if n == 1 else Speculation(mtp=False)  # a draft is verified for one sequence
        log.info("loading %s (%s)", ref.key, ref.path)
        started = time.monotonic()
        opened = await asyncio.to_thread(open_model, ref, self.request, speculation=spec, hw=hw, n_seq_max=n,
                                         verbose=self.verbose)
        try:
            scheduler: Scheduler = ParallelDecoder(opened.engine, n) if n > 1 else FairQueue(opened.engine)
            template = template_for(opened.engine)
        except BaseException:
            opened.close()
            raise
        log.info("loaded %s in %.1fs: %d slot%s%s", ref.key, time.monotonic() - started, n, "s" * (n > 1),
                 f", speculative ({opened.drafter})" if opened.drafter else "")
        return Loaded(key, ref.key, ref, opened, scheduler, template, self.keep_alive)

    # -- unloading -------------------------------------------------------------------------------------
    def find(self, name: str) -> Loaded | None:
        for loaded in self.models.values():
            if name in (loaded.name, loaded.ref.text, loaded.ref.path.name, loaded.key):
                return loaded
        try:
            ref = self.resolve(name)
        except Exception:  # noqa: BLE001 — not a model at all: nothing loaded under that name
            return None
        return self.models.get(str(Path(ref.path).resolve()))

    async def unload(self, loaded: Loaded, *, wait: float = 10.0) -> None:
        """Stop its running requests (each within a token) and free it."""
        if self.models.get(loaded.key) is not loaded:
            return
        for run in list(loaded.running.values()):
            run.cancel.set()
        deadline = time.monotonic() + wait
        while (loaded.running or loaded.turns) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.models.pop(loaded.key, None)
        await asyncio.to_thread(_close, loaded)
        log.info("unloaded %s", loaded.name)
        async with self.changed:
            self.changed.notify_all()

    async def reap(self, every: float = 1.0) -> None:
        """Unload models idle past their keep-alive; runs for the server's life."""
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for loaded in list(self.models.values()):
                if loaded.keep_alive is not None and not loaded.running and \
                        now - loaded.last_used >= loaded.keep_alive:
                    await self.unload(loaded)

    async def close(self) -> None:
        for loaded in list(self.models.values()):
            await self.unload(loaded, wait=2.0)

    def status(self) -> list[dict[str, Any]]:
        return [m.status() for m in self.models.values()]


def _decoder_counters(scheduler: Scheduler) -> dict[str, float] | None:
    """How the decoding thread spent its time (for benchmarks): steps, tokens per batch, llama_decode's share."""
    if not isinstance(scheduler, ParallelDecoder):
        return None
    return {"steps": scheduler.steps, "batched_tokens": scheduler.batched_tokens,
            "decode_s": round(scheduler.decode_seconds, 3), "step_s": round(scheduler.step_seconds, 3)}


def _close(loaded: Loaded) -> None:
    loaded.scheduler.close()
    loaded.opened.close()


def with_keep_alive(loaded: Loaded, seconds: float | None) -> None:
    """A request's own keep-alive (Ollama's `keep_alive`) replaces the model's."""
    loaded.keep_alive = seconds

