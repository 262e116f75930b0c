"""What this machine has. First version: memory and cores (GPUs and boards come with the planner)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Memory:
    total: int
    available: int
    swap_free: int
    source: str


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        pass
    return values


def _cgroup_limit() -> int | None:
    for candidate in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(candidate).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


def memory() -> Memory:
    """RAM as llama.cpp will see it: the smaller of physical RAM and the cgroup limit.

    LOCALSEEK_RAM_BYTES overrides detection (containers that hide their limit, or what-if checks).
    """
    override = os.environ.get("LOCALSEEK_RAM_BYTES")
    if override:
        n = int(override)
        return Memory(total=n, available=n, swap_free=0, source="LOCALSEEK_RAM_BYTES")
    info = _meminfo()
    if not info:
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        size = pages * os.sysconf("SC_PAGE_SIZE") if pages else 0
        return Memory(total=size, available=size, swap_free=0, source="sysconf")
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    limit = _cgroup_limit()
    source = "/proc/meminfo"
    if limit is not None and limit < total:
        total, available, source = limit, min(available, limit), "cgroup"
    return Memory(total=total, available=available, swap_free=info.get("SwapFree", 0), source=source)


def physical_cores() -> int:
    """Physical cores (llama.cpp runs best with one thread per core, not per hyper-thread)."""
    try:
        seen = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                seen.add((phys, core))
        if seen:
            return min(len(seen), usable_cpus())
    except OSError:
        pass
    return usable_cpus()


def usable_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
