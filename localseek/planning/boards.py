"""Small ARM boards (Raspberry Pi and the like): what to expect, and which DeepSeek model to run on each.

Decoding on a CPU reads every active weight once per token, so tokens/s ≈ effective memory bandwidth ÷ bytes read per
token. The effective bandwidth of a Pi 5 is not a datasheet figure (LPDDR4X-4267 on a 32-bit bus: 17 GB/s peak) but
what llama.cpp reaches on it, back-computed from published runs of the same kernels: Ollama on a Pi 5 (CPU) gives
deepseek-r1:14b (Q4_K_M, 8.99 GB) 1.20 tok/s, llama3.1:8b (4.9 GB) 2.0–2.2 and llama3.2:3b (2.0 GB) 4.6–4.9
(geerlingguy/ollama-benchmark) — 9.2 to 10.8 GB/s read per second of decoding; 10 GB/s is used. Prompt processing is
compute-bound and not estimated here.
"""

from __future__ import annotations

from dataclasses import dataclass

from localseek.models.catalog import Catalog, ModelSpec, load_catalog
from localseek.planning.hardware import Hardware
from localseek.sizes import GiB, MiB, format_size

USABLE_TPS = 2.0  # below this a reasoning model (hundreds of tokens of thinking) is not usable interactively
BOARD_CTX = 2048  # the context planned on a small board: a chat fits, and the KV cache leaves room for the OS
# Quants llama.cpp repacks at load for the ARMv8.2 dot-product kernels (GGML_CPU_REPACK: Q4_0 → 4x4, Q4_K → 8x4).
REPACKED = ("Q4_0", "Q4_K_M", "Q4_K_S")


@dataclass(frozen=True)
class BoardProfile:
    name: str
    threads: int  # llama.cpp's own default (physical cores); llama-cpp-python's would be cpu_count() // 2
    bandwidth: float | None  # effective bytes/s while decoding (None: no published measurement to base it on)
    basis: str  # where `bandwidth` comes from, said to the user with every estimate
    os_reserve: int  # RAM Raspberry Pi OS (Lite) and its services keep for themselves


PI5 = BoardProfile(
    "Raspberry Pi 5", 4, 10e9,
    "estimate: 10 GB/s effective read bandwidth, from published Pi 5 CPU results (deepseek-r1:14b Q4_K_M at "
    "1.20 tok/s in geerlingguy/ollama-benchmark) ÷ bytes read per token", 640 * MiB)
GENERIC = BoardProfile("small ARM board", 4, None, "no published measurement for this board", 640 * MiB)


def profile(hw: Hardware) -> BoardProfile | None:
    """The profile of a small ARM board, None for anything else."""
    if not hw.is_small_arm_board or hw.board is None:
        return None
    if hw.board.raspberry_pi == 5:
        return PI5
    return GENERIC


def bytes_per_token(spec: ModelSpec, size: int) -> float:
    """Weights read per generated token: all of a dense model, the active share of a MoE."""
    return size * spec.active / spec.params


def estimate_tps(board: BoardProfile, spec: ModelSpec, size: int) -> float | None:
    if board.bandwidth is None:
        return None
    return board.bandwidth / bytes_per_token(spec, size)


@dataclass(frozen=True)
class Recommendation:
    ref: str  # what to type: `localseek run REF`
    spec: ModelSpec
    quant: str
    size: int
    tps: float | None
    basis: str

    def line(self, *, basis: bool = True) -> str:
        speed = f"≈{self.tps:.2f} tok/s" if self.tps is not None else "speed unknown"
        why = f" ({self.basis})" if basis else ""
        return f"{self.ref} ({self.spec.title} {self.quant}, {format_size(self.size)}): {speed}{why}"


def candidates(hw: Hardware, board: BoardProfile, catalog: Catalog | None = None) -> list[Recommendation]:
    """Catalog models in a repacked quant that fit this board's RAM beside the OS, smallest first."""
    catalog = catalog or load_catalog()
    room = hw.memory.total - board.os_reserve
    out = []
    for spec in catalog.models:
        if spec.status != "ready":
            continue
        for quant in REPACKED:
            size = spec.size_of(quant)
            if size is None:
                continue
            kv = spec.kv_bytes(min(BOARD_CTX, spec.context)) or 0
            if size + kv + 256 * MiB > room:
                continue
            ref = spec.aliases[0] if spec.aliases else spec.id
            if quant != spec.default_quant:
                ref = f"{ref}-{quant.lower()}"
            out.append(Recommendation(ref, spec, quant, size, estimate_tps(board, spec, size), board.basis))
            break
    return sorted(out, key=lambda r: r.size)


def recommend(hw: Hardware, catalog: Catalog | None = None) -> tuple[Recommendation | None, Recommendation | None]:
    """(the largest model that runs at a usable speed, the largest that fits at all if it is a different one).
    Reasoning models (the R1 family) first: they are what localseek is for; others only when none fits."""
    board = profile(hw)
    if board is None:
        return None, None
    fits = candidates(hw, board, catalog)
    fits = [r for r in fits if r.spec.reasoning] or fits
    usable = [r for r in fits if r.tps is None or r.tps >= USABLE_TPS]
    best = usable[-1] if usable else None
    largest = fits[-1] if fits else None
    return best, (largest if largest is not None and largest != best else None)


def summary(hw: Hardware) -> list[str]:
    """What `doctor` says on a board: the board, its RAM, and what to expect."""
    board = profile(hw)
    if board is None or hw.board is None:
        return []
    lines = [f"{hw.board.model} with {format_size(hw.memory.total)} RAM: llama.cpp runs on its {board.threads} cores "
             f"(NEON{' + dot product' if 'DOTPROD' in hw.cpu.build_features or board is PI5 else ''}); "
             f"{', '.join(q for q in REPACKED[:2])} weights are repacked for its kernels at load."]
    best, largest = recommend(hw)
    if best is not None:
        lines.append(f"Runs well: `localseek run {best.ref}` — {best.line()}")
    if largest is not None:
        lines.append(f"Fits but slow: {largest.line()}")
    if best is None and largest is None:
        lines.append(f"No DeepSeek model fits in {format_size(hw.memory.total)} beside the OS.")
    if hw.memory.total < 5 * GiB:
        lines.append("With 4 GB or less, add swap on an SSD (not the SD card) before converting or building anything.")
    return lines


__all__ = ["BOARD_CTX", "GENERIC", "PI5", "REPACKED", "USABLE_TPS", "BoardProfile", "Recommendation", "candidates",
           "estimate_tps", "profile", "recommend", "summary"]
