"""How many CPU threads each llama.cpp decode gets: measured as the model runs, not assumed.

llama.cpp's CPU threads meet at a barrier after every graph node (hundreds per decode) and spin while they wait.
With one thread more than the machine has free cores, a decode waits for whichever thread the OS has paused: on a
busy 2-core machine, 2 threads decoded nano 25–50× slower than 1 (docs/PERFORMANCE.md). The planner's count (one
per physical core) is right on an idle machine and wrong on a busy one, and how busy it is changes while a model
answers. So the count is chosen the way the draft length is (`speculative.DraftTuner`):

- it starts at the planner's count less the CPUs other programs are running on at that moment (`spare_cpus`: the
  prompt, decoded first, has nothing else to go by);
- one `ThreadTuner` per kind of decode: single tokens (llama.cpp's `n_threads`) and batches by size class
  (`n_threads_batch`: prompts, speculative verification), since what is best differs between them;
- the current count's cost is its seconds per decode, a decayed average over its last ~100 decodes, *unclipped*:
  under load the cost comes as rare long stalls, the very samples a robust average would throw away (only while
  the average rests on a few dozen decodes is its slowest one left out of comparisons: one hiccup);
- a neighbouring count on a ladder (the planner's count, one and two less, ¾, halves … 1) is probed for one decode
  and, while it is winning, on to 16 before it takes over (free when it is really faster; what catches noise and
  stalls that one decode missed); a probe stops as soon as it cannot win. Probing more threads, the first decode
  counts as its cost, not its speed (waking OpenMP's sleeping threads is a cost of switching); back at the best,
  every decode counts. A drafter's context (MTP, whose decodes are not timed) keeps the best counts meanwhile;
- when: (1) at once when the current count slows down — to SLOWDOWN× its own average — or its average is
  CONTENDED× its fastest decodes (it waits more than it computes: load that was there from the start); fewer
  threads are probed then, budget allowing — or below a neighbour's last measurement (that one is
  probed: its expected cost is negative, and it is adopted only on a new measurement, never on an old number);
  (2) otherwise fewer threads soon after the start (the planner's count is not always the fastest, even idle),
  more after MAX_WAIT (5 s) of decoding, then as a
  budget allows: after a probe that lost (or a count that lost its place), the next waits until the time it
  wasted is 1 % of the decoding time since — at most 5 s, since loads go away — and at least 16 decodes, doubling
  while the best stays the best; a probe that lost holds off the same probe in the context's other tuners. So a
  short answer on an idle machine probes fewer threads once (a few slower decodes: ~1 % of 130 tokens), a long
  one every few hundred tokens; under a load where the extra thread costs 40×, one probe every 5 s of decoding.

Waits are counted on one clock per context, the seconds spent decoding, so that what one kind of decode learned
about when to look again holds for the others, and the decisions follow from the timings alone (tests feed them).
Output never depends on any of this: counts change only between decodes, and llama.cpp's CPU kernels compute every
value the same way whatever the thread count (tests compare greedy output and logits).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DECAY = 1 - 1 / 128  # the best count's running average: the last ~100 decodes weigh most
RECENT = 1 - 1 / 8  # … and its recent one (the last ~8), which notices that it slowed down
BUDGET = 0.01  # at most this share of the decoding time goes to probing counts that lost
BASE = 16  # decodes at least between two probes of a count (× a back-off that doubles up to MAX_BACKOFF)
MAX_BACKOFF = 16
MARGIN = 0.03  # a probed count must be this much faster to take over (no flapping between equals)
PROBE = 1  # decodes a probe takes to lose (a winning one runs on to be confirmed, so one decode can afford to be
#           noisy: a short answer on an idle machine pays for one slower decode, not three)
TRUSTED = 64  # decodes behind an average that one hiccup cannot make it lose its place by
SLOWDOWN = 1.5  # the best's recent speed this much below its own average: look at fewer threads now
CONTENDED = 2.5  # … or its average this many times its fastest recent decode: the time goes into waiting (load
#                  that was there from the start, so nothing slowed down); idle, decodes vary by a few per cent
MAX_WAIT = 5.0  # seconds of decoding at most between two probes of a count, whatever they cost: loads go away
ABANDONED = 1.0  # seconds of decoding after which another tuner may probe while one's probe waits for its decodes


def ladder(n_max: int) -> tuple[int, ...]:
    """The thread counts worth trying, up to the planner's: one and two less, three quarters, halves down to 1."""
    values = {n_max, n_max - 1, n_max - 2, n_max * 3 // 4}
    n = n_max
    while n > 1:
        n //= 2
        values.add(n)
    return tuple(sorted(v for v in values if v >= 1))


class Clock:
    """What the tuners of one context share: the seconds spent decoding so far (the time they wait in), and which of
    them is probing (one at a time: two probes of the same count would pay twice for one answer)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.probing: object | None = None
        self.since = 0.0  # when that probe began: one whose kind of decode stopped coming is given up after a while

    def may_probe(self, tuner: object) -> bool:
        return self.probing is None or self.probing is tuner or self.now - self.since > ABANDONED


class ThreadTuner:
    """Picks the thread count for each decode of one kind, from the seconds each count took (`update`).

    `start`: the first best; `due`: clock times before which a count is not probed (what another tuner of the same
    context learned). `settle`: decodes counted at a new best before the first probe; `probe`: decodes per probe,
    after `skip` that only count as its cost; `confirm`: decodes a probe that is winning runs on before it takes
    over (free when it is really faster; under load, what catches a count whose stalls a short probe missed).
    """

    def __init__(self, n_max: int, start: int | None = None, *, clock: Clock | None = None,
                 due: Mapping[int, float] | None = None, on_lost: Callable[[ThreadTuner, int], None] | None = None,
                 budget: float = BUDGET, base: int = BASE,
                 max_wait: float = MAX_WAIT, settle: int = 4, probe: int = PROBE, confirm: int = 16,
                 skip: int = 1) -> None:
        self.ladder = ladder(max(1, n_max))
        self.best = min(self.ladder, key=lambda n: abs(n - (start or self.ladder[-1])))
        self.budget, self.base, self.max_wait = budget, base, max_wait
        self.settle, self.probe, self.confirm, self.skip = settle, probe, max(confirm, probe), skip
        self._clock = clock or Clock()
        self._on_lost = on_lost
        self.current: int | None = None
        self.switches = 0  # how often the count changed (probes included)
        self.adopted: list[int] = []  # counts that took over, in order
        self._estimate: dict[int, float] = {}  # last measured seconds per decode of the counts that are not the best
        self._sum = self._n = 0.0  # the best's decayed sums
        self._worst = 0.0  # the best's slowest counted decode (while its average rests on few)
        self._recent = 0.0  # the best's seconds per decode, recently
        self._slowed = False  # … is SLOWDOWN times its average or more (or the average CONTENDED times …)
        self._fast = math.inf  # … its fastest decode lately (a minimum that forgets ~1 % a decode)
        self._returning = False  # back at the best after a probe: the next decode wakes its threads
        self._counted = 0  # decodes counted at the best since it became the best
        self._due: dict[int, float] = dict(due or {})  # clock time from which a count may be probed (again)
        self._paid: dict[int, float] = {}  # … from which the budget allows it (what a slow-down may not wait past)
        self._backoff: dict[int, int] = {}
        self._probing: int | None = None
        self._probe_times: list[float] = []
        self._probe_cost = 0.0
        self._skipping = 0
        self._cold = True  # the first decode also pays for llama.cpp's graphs and first touches of the weights
        self._plan()

    def _plan(self) -> None:
        """What `pick` checks on every decode, worked out once per change: when the next neighbour is due, and the
        recent speed of the best that would set off a probe at once."""
        i = self.ladder.index(self.best)
        self._near = [self.ladder[j] for j in (i - 1, i + 1) if 0 <= j < len(self.ladder)]
        self._wake_at = min((self._due.get(n, 0.0) for n in self._near), default=math.inf)
        self._alarm = min((self._estimate[n] / (1 - MARGIN) for n in self._near if n in self._estimate),
                          default=math.inf)

    @property
    def clock(self) -> float:
        return self._clock.now

    @property
    def due(self) -> dict[int, float]:
        return dict(self._due)

    @property
    def seconds(self) -> dict[int, float]:
        """Seconds per decode as last measured, per count (the best's is its running average)."""
        out = dict(self._estimate)
        if self._n:
            out[self.best] = self._sum / self._n
        return out

    def _best_seconds(self) -> float:
        """The best's seconds per decode, as probes are measured against. While its average rests on fewer than
        TRUSTED decodes, without the slowest one: a single hiccup early on must not hand its place to a slower
        count (a second slow decode — a load, not a hiccup — still does)."""
        if not self._n:
            return 0.0
        if self._counted < TRUSTED and self._n > 2:
            return max((self._sum - self._worst) / (self._n - 1), 1e-12)
        return max(self._sum / self._n, 1e-12)

    def pick(self) -> int:
        if self._probing is None and self._counted >= self.settle and self._clock.may_probe(self) and (
                self._clock.now >= self._wake_at or self._recent > self._alarm or self._slowed):
            self._probing = self._next_probe()
            if self._probing is not None:
                self._clock.probing, self._clock.since = self, self._clock.now
            # More threads: the first decode wakes OpenMP's sleeping ones, a cost of switching, not of the count.
            up = self._probing is not None and self._probing > self.best
            self._probe_times, self._probe_cost, self._skipping = [], 0.0, self.skip if up else 0
        target = self._probing if self._probing is not None else self.best
        if target != self.current:
            if self.current is not None:
                self.switches += 1
            self.current = target
        return target

    def _next_probe(self) -> int | None:
        near = self._near
        for n in near:  # the best slowed down below a neighbour's last measurement: look again now
            if n in self._estimate and self._estimate[n] < self._recent * (1 - MARGIN):
                return n
        fewer = near[0] if near and near[0] < self.best else None
        if self._slowed and fewer is not None and self._paid.get(fewer, 0.0) <= self.clock:
            return fewer  # the best slowed down (other programs came, most likely): fewer threads, budget allowing
        due = [n for n in near if self._due.get(n, 0.0) <= self.clock]
        return min(due, key=lambda n: (self._due.get(n, 0.0), n)) if due else None

    def update(self, n: int, seconds: float) -> None:
        """`seconds` is what the last decode took at `n` threads (what `pick` returned)."""
        seconds = max(seconds, 0.0)
        self._clock.now += seconds
        if n != self.current:
            return
        if self._probing is not None:
            self._probe_cost += seconds
            if self._skipping:
                self._skipping -= 1
                return
            times = self._probe_times
            times.append(seconds)
            # `probe` decodes (over sooner once it can no longer win), then on to `confirm` while it is winning.
            best, total = self._best_seconds(), sum(times)
            if len(times) < self.probe:
                if total >= self.probe * best:
                    self._end_probe()
            elif total >= len(times) * best * (1 - MARGIN) or len(times) >= self.confirm:
                self._end_probe()
            return
        if self._cold:
            self._cold = False
            return
        self._sum = self._sum * DECAY + seconds
        self._n = self._n * DECAY + 1
        self._worst = max(self._worst, seconds)
        average = self._sum / self._n
        if self._counted == 0:
            self._recent = seconds
        elif not self._returning:  # waking threads after a probe would set off the next probe: no news there
            # What a slow-down looks like: decodes slower one after the other, not one hiccup (stalls are what
            # the average and CONTENDED answer to).
            self._recent = self._recent * RECENT + min(seconds, 2 * average) * (1 - RECENT)
        self._returning = False
        self._counted += 1
        self._fast = min(self._fast * (1 + 1 / 128), seconds)
        self._slowed = self._recent > SLOWDOWN * average or (
            self._counted > self.settle and self._best_seconds() > CONTENDED * self._fast)

    def _end_probe(self) -> None:
        n, times = self._probing, self._probe_times
        assert n is not None
        self._probing = None
        if self._clock.probing is self:
            self._clock.probing = None
        best = self._best_seconds()
        mean = sum(times) / len(times)
        if len(times) >= self.confirm and mean < best * (1 - MARGIN):
            # It takes over, and the old best is a neighbour that lost. Probing it again costs what it was slower —
            # unless its average rests on a few dozen decodes, one of them maybe a hiccup: then it is checked again
            # soon (after the back-off), and pays the budget by what that probe measures if it is really slower.
            old, trusted = self.best, self._counted >= TRUSTED
            self.best = n
            self._sum, self._n, self._counted, self._worst = sum(times), float(len(times)), len(times), max(times)
            self._recent, self._slowed, self._fast = mean, False, min(times)
            self._estimate.pop(n, None)
            self._backoff.clear()  # conditions changed: look around often again
            self._due.clear()
            self._paid.clear()
            self._lost(old, best, self.probe * (best - mean) if trusted else 0.0)
            self.adopted.append(n)
            self._plan()
            return
        self._lost(n, mean, self._probe_cost - (len(times) + (self.skip if n > self.best else 0)) * best)
        self._recent, self._slowed = best, False  # what set off the probe is answered: only new slow decodes do
        self._returning = True
        self._plan()

    def _lost(self, n: int, seconds: float, wasted: float) -> None:
        """`n` measured `seconds` per decode and lost; probing it cost (or would cost) `wasted` more than the best.
        Its next probe waits until that is `budget` of the time since (but at most `max_wait`: the load that made
        it slow may go away), and at least the back-off."""
        self._estimate[n] = seconds
        backoff = self._backoff.get(n, 1)
        self._backoff[n] = min(2 * backoff, MAX_BACKOFF)
        self._paid[n] = self.clock + min(max(0.0, wasted) / self.budget, self.max_wait)
        self._due[n] = max(self.clock + backoff * self.base * self._best_seconds(), self._paid[n])
        if self._on_lost is not None:
            self._on_lost(self, n)

    def hold_off(self, n: int, until: float) -> None:
        """Another tuner of the context, at the same best, probed `n` and it lost: do not probe it before `until`
        (unless this one's own count struggles)."""
        if self._probing is None and n in self._near:
            self._due[n] = max(self._due.get(n, 0.0), until)
            self._plan()


def first_due(n_max: int, start: int, now: float = 0.0) -> dict[int, float]:
    """When a context's first tuner may first probe each other count: fewer threads at once (the planner's count is
    not always the fastest even on an idle machine: on this VM, nano decodes 1.4× faster on 1 thread than on 2),
    more only after MAX_WAIT seconds of decoding — above a start that other programs' load lowered, that probe is
    the one that can cost a stall."""
    return {n: now + MAX_WAIT for n in ladder(n_max) if n > start}


def size_class(n_tokens: int) -> int:
    """1 for a single token (llama.cpp's `n_threads`); 2 for 2–3 tokens, 3 for 4–7 … 10 for 512 and more
    (`n_threads_batch`)."""
    return 1 if n_tokens <= 1 else min(n_tokens.bit_length(), 10)


class ThreadPolicy:
    """Adaptive threads for one llama.cpp context: a tuner for single-token decodes and one per batch size class,
    applied through `apply(n_threads, n_threads_batch)` whenever a choice changes. `DecodeContext` calls `before`
    and `after` around each llama_decode. `start` (default `n_max`): where the first tuner starts. `follow` (a
    drafter's context, whose decodes are not timed) gets the best counts only, never a probe's."""

    def __init__(self, n_max: int, apply: Callable[[int, int], None], start: int | None = None, *,
                 sync: bool = False, follow: Callable[[int, int], None] | None = None) -> None:
        self.n_max = max(1, n_max)
        self.apply = apply
        self.follow = follow
        self.sync = sync  # wait for the device after each decode before timing it (GPU backends return early)
        self.clock = Clock()
        self.tuners: dict[int, ThreadTuner] = {}
        self.start = min(max(1, start or self.n_max), self.n_max)
        self.n_threads = self.n_threads_batch = self.start
        self._followed = (self.start, self.start)
        self._tuner: ThreadTuner | None = None
        self._n = 0
        apply(self.start, self.start)
        if follow is not None:
            follow(self.start, self.start)

    def before(self, n_tokens: int) -> None:
        key = 1 if n_tokens == 1 else size_class(n_tokens)
        tuner = self.tuners.get(key)
        if tuner is None:
            tuner = self._new(key)
        n = tuner.pick()
        if key == 1:
            if n != self.n_threads:
                self.n_threads = n
                self.apply(n, self.n_threads_batch)
        elif n != self.n_threads_batch:
            self.n_threads_batch = n
            self.apply(self.n_threads, n)
        if self.follow is not None and tuner.best != self._followed[key != 1]:
            gen, batch = self._followed
            self._followed = (tuner.best, batch) if key == 1 else (gen, tuner.best)
            self.follow(*self._followed)
        self._tuner, self._n = tuner, n

    def after(self, n_tokens: int, seconds: float) -> None:
        if self._tuner is not None:
            self._tuner.update(self._n, seconds)
            self._tuner = None

    def _new(self, key: int) -> ThreadTuner:
        # A size not seen yet starts where the nearest size ended up, and waits as long as it does before probing
        # a count (what the load allows carries over; speeds do not, they differ with the size).
        near = min(self.tuners, key=lambda k: (abs(k - key), k), default=None)
        if near is not None:
            start, due = self.tuners[near].best, self.tuners[near].due
        else:
            start, due = self.start, first_due(self.n_max, self.start, self.clock.now)
        # Big batches: one decode says enough, there are few of them, and waking threads is small beside one.
        small = key <= 3
        tuner = ThreadTuner(self.n_max, start, clock=self.clock, due=due, on_lost=self._lost,
                            settle=4 if small else 1, probe=PROBE, confirm=16 if small else 2,
                            skip=1 if small else 0)
        self.tuners[key] = tuner
        return tuner

    def _lost(self, tuner: ThreadTuner, n: int) -> None:
        # What one kind of decode found slower, the others at the same count need not probe again soon: one probe
        # per context, not one per size class (each costs a few slower decodes of a short answer).
        for other in self.tuners.values():
            if other is not tuner and other.best == tuner.best:
                other.hold_off(n, tuner.due[n])


@dataclass(frozen=True)
class CpuSample:
    """The machine's CPU counters and this process's CPU time at one moment (`cpu_sample`)."""

    jiffies: tuple[int, int] | None  # (busy, total) over all CPUs since boot; None without /proc/stat
    own: float  # this process's CPU seconds
    wall: float


def cpu_sample() -> CpuSample:
    return CpuSample(_cpu_jiffies(), time.process_time(), time.monotonic())


def others_busy(since: CpuSample, until: CpuSample | None = None) -> float | None:
    """CPUs' worth of time other programs used between two samples (None when unknown or too short to tell)."""
    until = until or cpu_sample()
    wall = until.wall - since.wall
    if since.jiffies is None or until.jiffies is None or until.jiffies[1] <= since.jiffies[1] or wall <= 0:
        return None
    cpus = os.cpu_count() or 1
    share = (until.jiffies[0] - since.jiffies[0]) / (until.jiffies[1] - since.jiffies[1])
    return max(0.0, share * cpus - (until.own - since.own) / wall)


def spare_cpus(n_max: int, since: CpuSample | None = None) -> int:
    """Where adapting starts: the planner's count, less the CPUs other programs are running on (at least 1) — at
    this moment, and on average since `since` (while the model loaded: a moment misses bursty loads). The first
    decode, the prompt, has no measurement to go by, and on a busy machine the planner's count can make it seconds
    instead of milliseconds; a tenth of a CPU used by others on average already makes the extra thread stall now
    and then (docs/PERFORMANCE.md). Idle: the planner's count."""
    from localseek.planning.hardware import usable_cpus

    # A moment's count is noisy: the middle of three.
    others = sorted(max(0, _procs_running() - _own_running()) for _ in range(3))[1]
    busy = others_busy(since) if since is not None else None
    if busy is not None:
        others = max(others, math.ceil(busy - 0.1))
    return max(1, min(n_max, usable_cpus() - others))


def _own_running() -> int:
    """This process's runnable threads (at least the one asking): its own OpenMP threads may still be spinning."""
    n = 0
    try:
        for task in os.scandir("/proc/self/task"):
            try:
                with open(f"{task.path}/stat", encoding="ascii") as f:
                    n += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue
    except OSError:
        pass
    return max(1, n)


# -- how busy the machine is (for `bench`) ----------------------------------------------------------------------
@dataclass(frozen=True)
class MachineLoad:
    cpus: int  # the machine's CPUs (what /proc/stat counts)
    usable: int  # CPUs this process may use (affinity, cgroup quota)
    load_average: float  # the kernel's 1-minute load average (runnable and uninterruptible tasks)
    busy: float  # CPUs' worth of time other work used while it was sampled (a hypervisor's steal included)
    running: int  # other tasks runnable at that moment

    @property
    def noisy(self) -> bool:
        """Whether other work competes for the cores: speed measurements will vary, and thread counts that are
        right on an idle machine are not right now."""
        return self.busy >= 0.25 or self.running >= max(1, self.usable // 2)

    def describe(self) -> str:
        return (f"other work uses {self.busy:.1f} of {self.cpus} CPUs ({self.running} other tasks runnable, "
                f"load average {self.load_average:.1f})")


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def _procs_running() -> int:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def machine_load(sample: float = 0.3) -> MachineLoad:
    """How busy the machine is now, sampled over `sample` seconds (this process sleeps meanwhile). On systems
    without /proc, only the load average (0 when unknown)."""
    from localseek.planning.hardware import usable_cpus

    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = 0.0
    since = cpu_sample()
    time.sleep(sample)
    busy = others_busy(since) or 0.0
    return MachineLoad(os.cpu_count() or 1, usable_cpus(), load1, busy, max(0, _procs_running() - 1))
