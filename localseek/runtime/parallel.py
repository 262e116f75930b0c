"""Several generations from one loaded model at once, for the HTTP server.

Two schedulers with one interface (`tokens(owner, prompt, sampling, cancel)` → token ids):
- `ParallelDecoder` — several sequences in one llama.cpp context (`n_seq_max` slots, a unified KV cache). One thread
  owns the context: each step it puts one token of every running sequence, and a chunk of any prompt still being
  read, into one `llama_decode` batch, then samples every sequence at its own logits row with its own sampler chain.
  A sequence is admitted to the free slot whose cached tokens share the longest prefix with its prompt (a
  conversation's next turn lands where its last turn was); a prefix cached in a busy slot is shared into the new
  one with `llama_memory_seq_cp` (the same cells, no copy: the KV cache is unified). Requests beyond the slots wait
  in arrival order.
- `FairQueue` — one sequence at a time, in arrival order, through the engine's own token loop: what a model with a
  speculative drafter (MTP, a draft model) uses, since a draft is verified for one sequence.

`SequenceEngine` is the per-request face of either: an `Engine` whose `stream` (and so `chat.generation.respond`,
budgets and all) draws its tokens from the scheduler. A request whose `cancel` event is set (its client went away)
raises `Cancelled` from its token stream and leaves its slot at the next step: within one token.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from localseek.errors import EngineError, Interrupted
from localseek.runtime.decode import Batch, Sampler, common_prefix
from localseek.runtime.engine import Engine
from localseek.runtime.options import Sampling, SpecStats

LOOKAHEAD = 2  # tokens a sequence may be sampled ahead of its reader (keeps batches full while readers catch up)
_POLL = 0.05  # seconds between checks of a waiting reader's cancel flag


class Cancelled(Interrupted):
    """The request's client went away; its generation stopped."""


@dataclass(eq=False)
class _Job:
    owner: object
    prompt: list[int]
    sampling: Sampling
    cancel: threading.Event
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # token ids; None = context full; errors
    sampler: Sampler | None = None
    slot: _Slot | None = None
    next_token: int | None = None  # sampled, not yet decoded
    sampled: int = 0  # tokens sampled for this request (its reader never wants more than sampling.max_tokens)
    ended: bool = False  # nothing more will be sampled (end of generation, context full, error)
    closed: bool = False  # the reader stopped reading
    released: bool = False  # the request is over (its slot need not wait for it)

    @property
    def gone(self) -> bool:
        return self.closed or self.cancel.is_set()


@dataclass(eq=False)
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what the KV cache holds for this sequence
    job: _Job | None = None
    reserved_by: object = None  # the request that last ran here (its next call, e.g. after a forced tag, returns)
    last_used: float = 0.0


@dataclass(frozen=True)
class SlotInfo:
    seq: int
    busy: bool
    cached_tokens: int


class ParallelDecoder:
    """`n_slots` sequences of `engine`'s context, decoded together by one thread. The engine's own single-sequence
    loop must not be used while this runs (they share sequence 0)."""

    def __init__(self, engine: Engine, n_slots: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.engine = engine
        self.n_slots = n_slots
        dc = engine.decoder
        dc.clear()
        self.ctx, self.mem, self.n_ctx, self.n_batch = dc.ctx, dc.mem, dc.n_ctx, dc.n_batch
        self.batch = Batch(self.n_batch)
        self.slots = [_Slot(i) for i in range(n_slots)]
        self.waiting: deque[_Job] = deque()
        self.steps = 0
        self.batched_tokens = 0
        self.decode_seconds = 0.0  # inside llama_decode
        self.step_seconds = 0.0  # whole steps: batch building, llama_decode, sampling, hand-over
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="localseek-decoder", daemon=True)
        self._thread.start()

    # -- the reader's side (any thread) ---------------------------------------------------------------
    def tokens(self, owner: object, prompt: Sequence[int], sampling: Sampling,
               cancel: threading.Event) -> Generator[int, None, None]:
        if not prompt:
            raise EngineError("The prompt is empty.")
        job = _Job(owner, list(prompt), sampling, cancel)
        with self._cond:
            if self._closed:
                raise EngineError("The model was unloaded.")
            self.waiting.append(job)
            self._cond.notify_all()
        try:
            while True:
                try:
                    item = job.out.get(timeout=_POLL)
                except queue.Empty:
                    if cancel.is_set():
                        raise Cancelled("The client went away.") from None
                    continue
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    return
                with self._cond:
                    self._cond.notify_all()  # room in its look-ahead: the decoder may take it again
                yield item
        finally:
            with self._cond:
                job.closed = True
                self._cond.notify_all()

    def release(self, owner: object) -> None:
        """The request is over: its slot's cache is anyone's to reuse."""
        with self._cond:
            for slot in self.slots:
                if slot.reserved_by is owner:
                    slot.reserved_by = None
                if slot.job is not None and slot.job.owner is owner:
                    slot.job.released = True
            self._cond.notify_all()

    def info(self) -> tuple[list[SlotInfo], int]:
        with self._cond:
            slots = [SlotInfo(s.seq, s.job is not None and not s.job.gone, len(s.tokens)) for s in self.slots]
            return slots, sum(1 for j in self.waiting if not j.gone)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        for slot in self.slots:
            if slot.job is not None:
                self._end(slot.job, EngineError("The model was unloaded."))
        for job in self.waiting:
            job.out.put(EngineError("The model was unloaded."))
        self.batch.close()

    # -- the decoder thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    self._reap()
                    self._admit()
                    work = [s for s in self.slots if s.job is not None and self._ready(s.job)]
                    if work:
                        break
                    self._cond.wait(_POLL)
            started = time.perf_counter()
            try:
                self._step(work)
            except BaseException as exc:  # noqa: BLE001 — every reader hears of it; the thread keeps serving
                error = exc if isinstance(exc, EngineError) else EngineError(f"internal: {type(exc).__name__}: {exc}")
                with self._cond:
                    for slot in work:
                        if slot.job is not None:
                            self._end(slot.job, error)
                            self._forget(slot)
            self.step_seconds += time.perf_counter() - started

    @staticmethod
    def _ready(job: _Job) -> bool:
        if job.ended or job.gone:
            return False
        if job.next_token is None:
            return True  # still reading its prompt
        return job.out.qsize() < LOOKAHEAD

    def _reap(self) -> None:
        """Free the slots of requests that are over or gone; drop waiting requests that are gone."""
        for slot in self.slots:
            job = slot.job
            if job is not None and (job.closed or job.cancel.is_set() or job.ended):
                if job.sampler is not None:
                    job.sampler.close()
                if job.cancel.is_set():
                    job.out.put(Cancelled("The client went away."))
                slot.job, slot.last_used = None, time.monotonic()
                slot.reserved_by = None if job.cancel.is_set() or job.released or job.ended else job.owner
        for job in [j for j in self.waiting if j.gone]:
            self.waiting.remove(job)
            job.out.put(Cancelled("The client went away."))

    def _admit(self) -> None:
        while self.waiting:
            job = self.waiting[0]
            free = [s for s in self.slots if s.job is None and s.reserved_by in (None, job.owner)]
            if not free:
                return
            self.waiting.popleft()
            own = [s for s in free if s.reserved_by is job.owner]
            slot = own[0] if own else max(
                free, key=lambda s: (common_prefix(s.tokens, job.prompt), -s.last_used)
            )
            keep = min(common_prefix(slot.tokens, job.prompt), len(job.prompt) - 1)
            donor = max(self.slots, key=lambda s: common_prefix(s.tokens, job.prompt))
            shared = min(common_prefix(donor.tokens, job.prompt), len(job.prompt) - 1)
            if donor is not slot and shared > keep:
                # Another slot holds a longer prefix (a shared system prompt): share its cells.
                self._lib.llama_memory_seq_rm(self.mem, slot.seq, 0, -1)
                self._lib.llama_memory_seq_cp(self.mem, donor.seq, slot.seq, 0, shared)
                slot.tokens = donor.tokens[:shared]
                keep = shared
            try:
                sampler = self.engine.sampler(job.sampling)
            except EngineError as exc:  # a grammar llama.cpp refused: this request fails, the others go on
                self._end(job, exc)
                continue
            self._truncate(slot, keep)
            slot.job, slot.reserved_by = job, job.owner
            job.slot, job.sampler = slot, sampler
            sampler.accept(job.prompt)

    def _truncate(self, slot: _Slot, n: int) -> None:
        if n < len(slot.tokens):
            if not self._lib.llama_memory_seq_rm(self.mem, slot.seq, n, -1):
                self._forget(slot)
                return
            del slot.tokens[n:]

    def _forget(self, slot: _Slot) -> None:
        self._lib.llama_memory_seq_rm(self.mem, slot.seq, 0, -1)
        slot.tokens = []

    def _end(self, job: _Job, item: int | BaseException | None) -> None:
        job.ended = True
        job.out.put(item)

    def _step(self, work: list[_Slot]) -> None:
        batch = self.batch
        batch.clear()
        rows: list[tuple[_Slot, int]] = []
        added: list[tuple[_Slot, list[int]]] = []
        for slot in work:  # every running sequence gets its next token in
            job = slot.job
            assert job is not None
            if job.next_token is None:
                continue
            if len(slot.tokens) + 1 > self.n_ctx:
                self._end(job, None)  # its context is full
                continue
            rows.append((slot, batch.add(job.next_token, len(slot.tokens), True, seq=slot.seq)))
            added.append((slot, [job.next_token]))
        for slot in work:  # then prompts, a chunk each while the batch has room
            job = slot.job
            assert job is not None
            room = self.n_batch - batch.n_tokens
            if job.next_token is not None or room <= 0:
                continue
            start = len(slot.tokens)
            chunk = job.prompt[start : start + room]
            last = start + len(chunk) == len(job.prompt)
            for k, tok in enumerate(chunk):
                i = batch.add(tok, start + k, last and k == len(chunk) - 1, seq=slot.seq)
            if last:
                rows.append((slot, i))
            added.append((slot, chunk))
        if not added:
            return
        started = time.perf_counter()
        rc = self._lib.llama_decode(self.ctx, batch.raw)
        if rc == 1 and self._make_room():
            rc = self._lib.llama_decode(self.ctx, batch.raw)
        self.decode_seconds += time.perf_counter() - started
        if rc == 1:
            # The cache is full even without idle slots' caches: the longest sequence stops ("context").
            longest = max((s for s, _ in added), key=lambda s: len(s.tokens))
            with self._cond:
                if longest.job is not None:
                    self._end(longest.job, None)
            return
        if rc != 0:
            raise EngineError(
                f"llama.cpp could not decode {batch.n_tokens} tokens (code {rc}); the machine may be out of memory."
            )
        self.steps += 1
        self.batched_tokens += batch.n_tokens
        for slot, tokens in added:
            slot.tokens.extend(tokens)
        is_eog = self.engine.is_eog
        with self._cond:
            for slot, row in rows:
                job = slot.job
                assert job is not None and job.sampler is not None
                if job.gone:
                    continue
                token = job.sampler.sample(self.ctx, row)
                job.out.put(token)
                job.next_token = token
                job.sampled += 1
                if is_eog(token):
                    job.ended = True
                elif job.sampling.max_tokens is not None and job.sampled >= job.sampling.max_tokens:
                    self._end(job, None)  # nothing to sample ahead for: the reader stops at this token

    def _make_room(self) -> bool:
        """Drop the caches idle slots keep for reuse; True when any was dropped."""
        dropped = False
        with self._cond:
            for slot in self.slots:
                if slot.job is None and slot.tokens:
                    self._forget(slot)
                    slot.reserved_by = None
                    dropped = True
        return dropped


class FairQueue:
    """One generation at a time, in arrival order, on the engine's own loop (speculative when it has a drafter).
    A request keeps its turn until `release`, so a restart after a forced `</think>` does not lose its place."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._line: deque[object] = deque()  # owners, the first one holds the engine

    def tokens(self, owner: object, prompt: Sequence[int], sampling: Sampling, cancel: threading.Event,
               spec_stats: SpecStats | None = None) -> Generator[int, None, None]:
        with self._cond:
            if owner not in self._line:
                self._line.append(owner)
            while self._line[0] is not owner:
                if cancel.is_set():
                    self._line.remove(owner)
                    self._cond.notify_all()
                    raise Cancelled("The client went away.")
                self._cond.wait(_POLL)
        source = self.engine.generate_tokens(list(prompt), sampling, spec_stats=spec_stats)
        try:
            for token in source:
                if cancel.is_set():
                    raise Cancelled("The client went away.")
                yield token
        finally:
            source.close()

    def release(self, owner: object) -> None:
        with self._cond:
            if owner in self._line:
                self._line.remove(owner)
            self._cond.notify_all()

    def info(self) -> tuple[list[SlotInfo], int]:
        with self._cond:
            busy = bool(self._line)
            waiting = max(0, len(self._line) - 1)
        decoder = self.engine.decoder
        return [SlotInfo(0, busy, len(decoder.tokens) if decoder else 0)], waiting

    def close(self) -> None:
        pass


Scheduler = ParallelDecoder | FairQueue


class SequenceEngine(Engine):
    """One request's view of a shared engine: the same model, tokenizer and `stream` (so `respond`, budgets and
    stats work unchanged), with tokens from `scheduler`. Not a loader: it owns nothing; `close` gives the
    request's place back."""

    def __init__(self, engine: Engine, scheduler: Scheduler, cancel: threading.Event) -> None:
        # Deliberately not Engine.__init__: this view shares the loaded model, context and decoder.
        self.path, self.options, self.llm = engine.path, engine.options, engine.llm
        self.base = engine
        self.scheduler = scheduler
        self.cancel = cancel
        self._pending = []
        self.decoder = engine.decoder
        # Speculation counters only where the engine's own (speculative) loop runs.
        self.drafter = engine.drafter if isinstance(scheduler, FairQueue) else None
        self._keepalive = None

    @property
    def think_tokens(self) -> tuple[int, int] | None:
        return self.base.think_tokens

    def generate_tokens(self, prompt_tokens: list[int], sampling: Sampling, *, speculate: bool = True,
                        spec_stats: SpecStats | None = None) -> Generator[int, None, None]:
        if isinstance(self.scheduler, FairQueue):
            return self.scheduler.tokens(self, prompt_tokens, sampling, self.cancel, spec_stats)
        return self.scheduler.tokens(self, prompt_tokens, sampling, self.cancel)

    def set_threads(self, n: int, n_batch: int | None = None) -> None:
        raise EngineError("internal: threads are the loaded engine's to set")

    def close(self) -> None:
        self.scheduler.release(self)
