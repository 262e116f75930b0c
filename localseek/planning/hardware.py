"""What this machine has: CPU (physical cores, ISA features), RAM/swap (cgroup-aware), GPUs as llama.cpp sees them
(ggml backend devices), Apple unified memory, Raspberry Pi and other ARM boards.

Whatever cannot be detected goes into `Hardware.notes` — it is reported, never guessed. `simulated()` builds the
machine for what-if plans (`localseek plan --vram 24GiB --ram 192GiB`) and for tests.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from localseek.errors import UsageError
from localseek.planning.rpc import Worker
from localseek.sizes import GiB, format_size, parse_size  # noqa: F401  (re-exported for what-if callers)

ROOT = Path("/")  # where /proc and /sys are read from (tests point it at a fake tree)


def _p(path: str) -> Path:
    return ROOT / path.lstrip("/")

# ISA features that change which llama.cpp kernels run (x86 /proc/cpuinfo "flags", ARM "Features").
_X86_FEATURES = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512vbmi",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)
_ARM_FEATURES = ("asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2", "sme")
# Arm Ltd. (implementer 0x41) core part numbers, as the Linux kernel's cputype.h lists them.
_ARM_CORES = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd04"): "Cortex-A35", ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57", ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75", ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd41"): "Cortex-A78", ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd49"): "Neoverse-N2", ("0x41", "0xd4f"): "Neoverse-V2",
}
# The same capabilities under the names ggml's CPU backend reports (`ggml_backend_get_features`).
_BUILD_NAME = {
    "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx512f": "AVX512", "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16", "avx512vbmi": "AVX512_VBMI", "avx_vnni": "AVX_VNNI", "amx_int8": "AMX_INT8",
    "asimd": "NEON", "asimddp": "DOTPROD", "i8mm": "MATMUL_INT8", "sve": "SVE", "sme": "SME",
}


@dataclass(frozen=True)
class Memory:
    total: int
    available: int
    swap_free: int
    source: str
    swap_total: int = 0
    cgroup_limit: int | None = None


@dataclass(frozen=True)
class CPU:
    model: str
    arch: str
    physical_cores: int
    logical_cpus: int
    features: tuple[str, ...] = ()  # what the CPU has (the subset llama.cpp cares about)
    build_features: tuple[str, ...] = ()  # what this llama.cpp build's CPU backend uses
    performance_cores: int | None = None  # Apple silicon P-cores; None where there is no such split


@dataclass(frozen=True)
class GPU:
    name: str
    description: str
    backend: str  # CUDA, Metal, Vulkan, ROCm/HIP, SYCL… ("" for a GPU this build cannot use)
    memory_total: int
    memory_free: int
    unified: bool = False  # shares system RAM (Apple silicon, Jetson, integrated GPUs)
    usable: bool = True  # False: present on the machine but this llama.cpp build has no backend for it


@dataclass(frozen=True)
class Board:
    model: str
    raspberry_pi: int | None = None  # Pi generation (5 for "Raspberry Pi 5 Model B"), None otherwise


@dataclass(frozen=True)
class Hardware:
    system: str
    cpu: CPU
    memory: Memory
    gpus: tuple[GPU, ...] = ()
    board: Board | None = None
    backends: tuple[str, ...] = ("CPU",)
    notes: tuple[str, ...] = ()  # what could not be detected, said plainly
    simulated: bool = False
    workers: tuple[Worker, ...] = ()  # other machines lending memory over RPC (planning/rpc.py), in --rpc order

    @property
    def usable_gpus(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.usable)

    @property
    def unified_memory(self) -> bool:
        return any(g.unified for g in self.usable_gpus)

    @property
    def vram_free(self) -> int:
        """Memory the GPUs can take for this model (free, summed over usable GPUs)."""
        return sum(g.memory_free for g in self.usable_gpus)

    @property
    def is_small_arm_board(self) -> bool:
        return self.board is not None and self.cpu.arch in ("aarch64", "arm64", "armv7l") and not self.usable_gpus

    def to_dict(self) -> dict:
        data = asdict(self)
        data["unified_memory"] = self.unified_memory
        return data


# -- memory ----------------------------------------------------------------------------------------------------


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in _p("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        pass
    return values


def _cgroup_limit() -> tuple[int | None, int | None]:
    """(limit, usage) of this process's memory cgroup (v2, then v1); None where unlimited or unknown."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = _p(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            try:
                usage = int(_p(usage_file).read_text().strip())
            except (OSError, ValueError):
                usage = None
            return int(raw), usage
        return None, None
    return None, None


def _darwin_memory() -> Memory | None:
    try:
        total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], check=False, capture_output=True, text=True, timeout=5).stdout)
        vm = subprocess.run(["vm_stat"], check=False, capture_output=True, text=True, timeout=5).stdout
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    page = int(m[1]) if (m := re.search(r"page size of (\d+) bytes", vm)) else 16384
    pages = {k.strip(): int(v.strip(" .")) for k, v in re.findall(r"^(Pages [^:]+):\s+(\d+)\.?", vm, re.MULTILINE)}
    free = sum(pages.get(f"Pages {k}", 0) for k in ("free", "inactive", "speculative", "purgeable")) * page
    return Memory(total=total, available=min(free, total) or total, swap_free=0, source="sysctl/vm_stat")


def memory() -> Memory:
    """RAM as llama.cpp will see it: the smaller of physical RAM and the cgroup limit.

    LOCALSEEK_RAM_BYTES overrides detection (containers that hide their limit, or what-if checks).
    """
    override = os.environ.get("LOCALSEEK_RAM_BYTES")
    if override:
        n = parse_size(override.strip(), "LOCALSEEK_RAM_BYTES value")
        return Memory(total=n, available=n, swap_free=0, source="LOCALSEEK_RAM_BYTES")
    if platform.system() == "Darwin":
        mac = _darwin_memory()
        if mac:
            return mac
    info = _meminfo()
    if not info:
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        size = pages * os.sysconf("SC_PAGE_SIZE") if pages else 0
        return Memory(total=size, available=size, swap_free=0, source="sysconf")
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    limit, usage = _cgroup_limit()
    source = "/proc/meminfo"
    if limit is not None and limit < total:
        in_cgroup = limit - usage if usage is not None else limit
        total, available, source = limit, max(0, min(available, in_cgroup)), "cgroup"
    return Memory(
        total=total, available=available, swap_free=info.get("SwapFree", 0), source=source,
        swap_total=info.get("SwapTotal", 0), cgroup_limit=limit,
    )


# -- CPU -------------------------------------------------------------------------------------------------------


def env_threads() -> int | None:
    """LOCALSEEK_THREADS, when set: the user's thread count for every model on this machine."""
    raw = os.environ.get("LOCALSEEK_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"LOCALSEEK_THREADS must be a whole number of at least 1, not {raw!r}; fix or unset it.")
    return int(raw)


def default_threads(hw: Hardware | None = None) -> int:
    """The thread policy, in one place: LOCALSEEK_THREADS (on this machine, not a what-if), else one per
    performance core (efficiency cores slow every token down), else one per physical core (hyper-threads only
    contend for memory bandwidth)."""
    if hw is None or not hw.simulated:
        env = env_threads()
        if env:
            return env
    if hw is None:
        return physical_cores()
    if hw.cpu.performance_cores:
        return hw.cpu.performance_cores
    return max(1, hw.cpu.physical_cores)


def usable_cpus() -> int:
    """CPUs this process may run on (affinity masks, container CPU sets, and a cgroup CPU quota)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = _p("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _sysfs_physical_cores() -> int | None:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in cpus:
        topo = _p(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(), topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return None
    return len(cores) or None


def _cpuinfo_physical_cores(text: str) -> int | None:
    seen = set()
    phys = None
    for line in text.splitlines():
        if line.startswith("physical id"):
            phys = line.split(":")[1].strip()
        elif line.startswith("core id"):
            seen.add((phys, line.split(":")[1].strip()))
    return len(seen) or None


def _sysctl_int(name: str) -> int | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], check=False, capture_output=True, text=True, timeout=5).stdout.strip()
        return int(out) if out else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def physical_cores() -> int:
    """Physical cores (llama.cpp runs best with one thread per core, not per hyper-thread)."""
    cores = _sysfs_physical_cores()
    if cores is None:
        try:
            cores = _cpuinfo_physical_cores(_p("/proc/cpuinfo").read_text())
        except OSError:
            cores = None
    if cores is None and platform.system() == "Darwin":
        cores = _sysctl_int("hw.perflevel0.physicalcpu") or _sysctl_int("hw.physicalcpu")
    return min(cores, usable_cpus()) if cores else usable_cpus()


def _cpu(notes: list[str], build: dict[str, dict[str, str]]) -> CPU:
    arch = platform.machine().lower()
    model, flags = "", set()
    implementer = part = ""
    try:
        text = _p("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "cpu implementer" and not implementer:
            implementer = value.strip().lower()
        elif key == "cpu part" and not part:
            part = value.strip().lower()
    # ARM kernels print no model name, only the core's implementer and part numbers (a Pi 5: 0x41 0xd0b)
    model = model or _ARM_CORES.get((implementer, part), "")
    perf = None
    if platform.system() == "Darwin":
        model = model or _sysctl_str("machdep.cpu.brand_string")
        perf = _sysctl_int("hw.perflevel0.physicalcpu")
        if arch in ("arm64", "aarch64"):
            flags |= {"asimd", "asimddp", "fphp"}  # every Apple silicon core has NEON, dot product and FP16
    wanted = _X86_FEATURES if arch in ("x86_64", "amd64", "i686") else _ARM_FEATURES
    features = tuple(f for f in wanted if f in flags)
    if not model:
        notes.append("CPU model: not reported by the system")
    if not flags:
        notes.append("CPU features: /proc/cpuinfo not readable; only this build's compiled features are known")
    built = tuple(k for k, v in build.get("CPU", {}).items() if v not in ("0", ""))
    cores = _sysfs_physical_cores()
    if cores is None and text:
        cores = _cpuinfo_physical_cores(text)
    if cores is None:
        notes.append("physical cores: CPU topology not readable; counting logical CPUs instead")
    return CPU(
        model=model or "unknown", arch=arch, physical_cores=physical_cores(), logical_cpus=usable_cpus(),
        features=features, build_features=built, performance_cores=perf,
    )


def _sysctl_str(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], check=False, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def unused_cpu_features(cpu: CPU) -> list[str]:
    """CPU features this machine has that the llama.cpp build does not use (a native rebuild would)."""
    if not cpu.build_features:
        return []
    return [f for f in cpu.features if f in _BUILD_NAME and _BUILD_NAME[f] not in cpu.build_features]


# -- boards ----------------------------------------------------------------------------------------------------


def _board() -> Board | None:
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            model = _p(path).read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if model:
            return board_from_model(model)
    return None


def board_from_model(model: str) -> Board:
    m = re.match(r"Raspberry Pi (\d+)", model)
    if m:
        return Board(model=model, raspberry_pi=int(m[1]))
    if model.startswith("Raspberry Pi"):  # "Raspberry Pi Model B Rev 2", "Raspberry Pi Zero 2 W", CM modules
        return Board(model=model, raspberry_pi=1 if "Zero 2" not in model else 3)
    return Board(model=model)


# -- GPUs ------------------------------------------------------------------------------------------------------


def _unseen_gpus() -> list[GPU]:
    """GPUs on this machine that the llama.cpp build cannot use (found without any GPU library)."""
    found: list[GPU] = []
    nvsmi = shutil.which("nvidia-smi")
    if nvsmi:
        try:
            out = subprocess.run(
                [nvsmi, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                check=False, capture_output=True, text=True, timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[1].isdigit():
                found.append(GPU(parts[0], parts[0], "", int(parts[1]) << 20, int(parts[2] or 0) << 20, usable=False))
    if not found:
        for info in sorted(_p("/proc/driver/nvidia/gpus").glob("*/information")):
            m = re.search(r"^Model:\s*(.+)$", info.read_text(errors="replace"), re.MULTILINE)
            name = m[1].strip() if m else "NVIDIA GPU"
            found.append(GPU(name, name, "", 0, 0, usable=False))
    for card in sorted(_p("/sys/class/drm").glob("card[0-9]*/device")):
        try:
            vendor = card.joinpath("vendor").read_text().strip()
            vram = int(card.joinpath("mem_info_vram_total").read_text())
        except (OSError, ValueError):
            continue
        if vendor == "0x1002" and vram > 1 * GiB:
            used = 0
            try:
                used = int(card.joinpath("mem_info_vram_used").read_text())
            except (OSError, ValueError):
                pass
            found.append(GPU("AMD GPU", f"AMD GPU ({card.parent.name})", "", vram, vram - used, usable=False))
    return found


def _gpus(board: Board | None, notes: list[str]) -> tuple[list[GPU], list[str]]:
    from localseek.planning import backends

    gpus: list[GPU] = []
    try:
        regs = backends.registries()
        devs = backends.devices()
    except OSError as exc:
        notes.append(f"GPUs: llama.cpp's backend registry could not be read ({exc})")
        return gpus, ["CPU"]
    apple = platform.system() == "Darwin" and platform.machine().lower() in ("arm64", "aarch64")
    jetson = board is not None and "jetson" in board.model.lower()
    for d in devs:
        if d.kind == "CPU":
            continue
        unified = d.kind == "IGPU" or apple or jetson
        if d.memory_total == 0:
            notes.append(f"GPU {d.name}: the {d.backend} backend reports no memory size")
        gpus.append(GPU(d.description or d.name, d.name, d.backend, d.memory_total, d.memory_free, unified=unified))
    if not gpus:
        gpus.extend(_unseen_gpus())
    return gpus, regs


# -- the whole machine -----------------------------------------------------------------------------------------


def detect() -> Hardware:
    notes: list[str] = []
    try:
        from localseek.planning import backends

        build = backends.build_features()
    except OSError as exc:
        build = {}
        notes.append(f"llama.cpp build features: {exc}")
    board = _board()
    gpus, regs = _gpus(board, notes)
    mem = memory()
    if mem.total == 0:
        notes.append("RAM: not reported by the system")
    if mem.source == "/proc/meminfo" and "SwapTotal" not in _meminfo():
        notes.append("swap: not reported")
    return Hardware(
        system=platform.system(), cpu=_cpu(notes, build), memory=mem, gpus=tuple(gpus), board=board,
        backends=tuple(regs), notes=tuple(notes),
    )


def simulated(
    *,
    ram: int,
    vram: int = 0,
    unified: bool = False,
    cores: int | None = None,
    board: str | None = None,
    arch: str | None = None,
    base: Hardware | None = None,
    gpu_backend: str = "CUDA",
) -> Hardware:
    """A machine to plan for: `ram` bytes of RAM (all available), one GPU with `vram` bytes (none when 0).

    Unified memory (Apple silicon): `vram` is the part of RAM the GPU may wire (Metal's working-set limit).
    Anything not given is taken from `base` (the detected machine) or set to a plain default.
    """
    cpu = base.cpu if base else CPU(model="simulated", arch=arch or "x86_64", physical_cores=cores or 8, logical_cpus=cores or 8)
    if cores:
        cpu = replace(cpu, physical_cores=cores, logical_cpus=max(cores, cpu.logical_cpus if base else cores))
    if arch:
        cpu = replace(cpu, arch=arch)
    gpus: tuple[GPU, ...] = ()
    if vram:
        backend = "Metal" if unified and gpu_backend == "CUDA" else gpu_backend
        gpus = (GPU(f"simulated {backend} GPU", f"{backend}0", backend, vram, vram, unified=unified),)
    return Hardware(
        system=base.system if base else ("Darwin" if unified else "Linux"),
        cpu=cpu,
        memory=Memory(total=ram, available=ram, swap_free=0, source="simulated"),
        gpus=gpus,
        board=board_from_model(board) if board else None,
        backends=tuple(dict.fromkeys(([gpus[0].backend] if gpus else []) + ["CPU"])),
        simulated=True,
    )


def what_if(
    base: Hardware,
    *,
    ram: int | None = None,
    vram: int | None = None,
    unified: bool = False,
    cores: int | None = None,
    board: str | None = None,
) -> Hardware:
    """This machine with some parts replaced: RAM (all of it available), one GPU of `vram` (0: none), cores,
    a board model (e.g. "Raspberry Pi 5 Model B" plans with the small-board profile on an ARM CPU)."""
    if ram is None and vram is None and cores is None and board is None and not unified:
        return base
    hw = simulated(
        ram=ram if ram is not None else base.memory.available,
        vram=vram or 0,
        unified=unified,
        cores=cores,
        board=board,
        arch="aarch64" if board else None,
        base=None if board else base,
    )
    if vram is None and not unified:  # keep the detected GPUs
        hw = replace(hw, gpus=base.gpus, backends=base.backends)
    if board and cores is None:
        hw = replace(hw, cpu=replace(hw.cpu, physical_cores=4, logical_cpus=4, model=board))
    return hw


# -- advice ----------------------------------------------------------------------------------------------------

_CMAKE_FLAG = {"NVIDIA": "-DGGML_CUDA=on", "AMD": "-DGGML_HIP=on", "Apple": "-DGGML_METAL=on"}


def gpu_install_hint(hw: Hardware, python: str | None = None) -> str | None:
    """The exact command that reinstalls llama-cpp-python with the backend for a GPU this build cannot use."""
    import sys

    unseen = [g for g in hw.gpus if not g.usable]
    vendor = None
    if unseen:
        vendor = "AMD" if unseen[0].name.startswith("AMD") else "NVIDIA"
    elif hw.system == "Darwin" and hw.cpu.arch in ("arm64", "aarch64") and "Metal" not in hw.backends:
        vendor = "Apple"
    if vendor is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        pinned = version("llama-cpp-python")
    except PackageNotFoundError:
        pinned = "0.3.36"
    py = python or sys.executable
    return (
        f'CMAKE_ARGS="{_CMAKE_FLAG[vendor]}" {py} -m pip install --force-reinstall --no-cache-dir '
        f"--no-binary llama-cpp-python llama-cpp-python=={pinned}"
    )


__all__ = [
    "CPU",
    "GPU",
    "Board",
    "Hardware",
    "Memory",
    "board_from_model",
    "detect",
    "format_size",
    "gpu_install_hint",
    "memory",
    "parse_size",
    "physical_cores",
    "simulated",
    "unused_cpu_features",
    "usable_cpus",
    "what_if",
]

