"""Sizes as users read and type them: one convention, binary units, everywhere.

Every size localseek prints (`models`, `list`, `show`, `plan`, `doctor`, progress bars, messages) goes through
`format_size`, and every size flag (`--ram`, `--vram`, `--split-max-size`, `worker --mem`) through `parse_size`.
Binary, because what sizes are compared with is memory, which is sold in GiB even when labelled GB: a "24 GB" GPU
has 24 GiB. So `24G` = `24GB` = `24GiB` = 24 × 2³⁰ bytes, and output always says `GiB`, never an ambiguous `GB`.
"""

from __future__ import annotations

import math
import re

from localseek.errors import UsageError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

_UNITS = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def format_size(n: float | None) -> str:
    """1234567890 → "1.1 GiB"; None → "?"."""
    if n is None:
        return "?"
    for unit, scale in _UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def parse_size(text: str, what: str = "size") -> int:
    """"24GiB", "24G", "24GB", "1.5T", "512M", "4096" → bytes (binary units; see the module docstring)."""
    m = _SIZE_RE.match(text or "")
    if not m or (m[3] and not m[2] and m[3].lower() != "b"):
        raise UsageError(f"Cannot read the {what} {text!r}; write it like 24GiB, 16G or 512M (binary units).")
    value = float(m[1]) * 1024 ** "bkmgt".index((m[2] or "b").lower())
    if not math.isfinite(value) or value > 2**62:
        raise UsageError(f"The {what} {text!r} is too large.")
    return int(value)


def format_count(n: float) -> str:
    """A parameter or token count: 1_780_000_000 → "1.78B", 2_300_000 → "2.3M"."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(int(n))
