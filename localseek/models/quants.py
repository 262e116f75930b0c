"""Quantization names as they appear in GGUF file names on the Hub, and split-file naming.

One place for the parsing that the catalog (default quants), the Hub resolver (which files are "Q4_K_M") and
the store (names of installed models) all need. Pure string work, no I/O.
"""

from __future__ import annotations

import re

# Q4_K_M, IQ1_S, Q8_0, Q4_0_4_4, TQ1_0, BF16, F16, F32, MXFP4, and Unsloth's dynamic "UD-" variants. Matched as a
# whole token: delimited by start/end or one of - . _ / (so "Qwen3" or "V3" never look like a quant).
_QUANT = r"(?:UD-)?(?:I?Q[1-8](?:_[0-9A-Z]+)*|TQ[12]_0|BF16|F16|F32|FP16|FP8|MXFP4(?:_MOE)?)"
QUANT_TOKEN_RE = re.compile(rf"(?<![A-Za-z0-9])({_QUANT})(?=[-._/]|$)", re.IGNORECASE)
QUANT_RE = re.compile(rf"^{_QUANT}$", re.IGNORECASE)
SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<idx>\d{5})-of-(?P<count>\d{5})\.gguf$")


def normalize_quant(text: str) -> str:
    """Canonical spelling: upper case ("q4_k_m" → "Q4_K_M", "ud-iq1_s" → "UD-IQ1_S"); FP16 is F16."""
    q = text.strip().upper()
    return "F16" if q == "FP16" else q


def is_quant(text: str) -> bool:
    return bool(QUANT_RE.match(text.strip()))


def quant_of_path(path: str) -> str | None:
    """The quant a GGUF file holds, judged by its name (last quant token), else by its folder's name.

    "DeepSeek-R1-Q8_0/DeepSeek-R1-BF16-256x20B-Q8_0-00001-of-00016.gguf" → "Q8_0";
    "UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00001-of-00004.gguf" → "UD-IQ1_S".
    """
    parts = path.split("/")
    name = parts[-1]
    stem = name[:-5] if name.lower().endswith(".gguf") else name
    m = SPLIT_RE.match(name)
    if m:
        stem = m["stem"]
    found = QUANT_TOKEN_RE.findall(stem)
    if found:
        return normalize_quant(found[-1])
    for folder in reversed(parts[:-1]):
        found = QUANT_TOKEN_RE.findall(folder)
        if found:
            return normalize_quant(found[-1])
    return None


def split_name(stem: str, index: int, count: int) -> str:
    """The file name of part `index` (1-based) of `count`: llama.cpp's `stem-00001-of-00003.gguf`."""
    return f"{stem}-{index:05d}-of-{count:05d}.gguf"


def split_info(name: str) -> tuple[str, int, int] | None:
    """("stem", index, count) for "stem-00002-of-00005.gguf", else None."""
    m = SPLIT_RE.match(name)
    if not m:
        return None
    return m["stem"], int(m["idx"]), int(m["count"])


# When a catalog model's default quant is not published by any of its sources, the closest one is taken in this
# order (sizes near Q4_K_M first, then larger, then smaller).
# Bits per weight of llama.cpp's file types (MODELS.md rules of thumb), largest first: sizes of quants no source
# lists, and "a smaller quant fits" advice.
QUANT_BPW = (
    ("Q8_0", 8.5), ("Q6_K", 6.56), ("Q5_K_M", 5.7), ("Q4_K_M", 4.9), ("Q4_0", 4.5), ("Q3_K_M", 3.9),
    ("Q2_K", 2.96), ("IQ2_XXS", 2.06), ("IQ1_S", 1.56),
)

FALLBACK_ORDER = (
    "Q4_K_M", "Q4_K_S", "IQ4_XS", "IQ4_NL", "Q4_0", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0", "Q3_K_L", "Q3_K_M",
    "IQ3_M", "Q3_K_S", "Q2_K_L", "Q2_K", "UD-Q2_K_XL", "UD-IQ2_XXS", "UD-IQ1_M", "UD-IQ1_S",
)
