"""localseek-nano: the bundled, trained DeepSeek-V3-architecture reasoning model (a few MB, FP8 like V3).

`localseek run nano` converts the shipped FP8 checkpoint with our own FP8 → integer path on first use and caches
the GGUF under LOCALSEEK_HOME/converted/, keyed by the checkpoint's contents, so it works offline on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from localseek import store
from localseek.errors import ModelFileError, UsageError

CHECKPOINT = Path(__file__).parent / "localseek-nano"
NAMES = ("nano", "localseek-nano", "deepseek-nano")
DEFAULT_QUANT = "Q8_0"


def parse_ref(ref: str) -> str | None:
    """The quant asked for when `ref` names nano (`nano`, `nano:Q4_K_M`), else None."""
    name, _, quant = ref.partition(":")
    if name.lower() not in NAMES:
        return None
    return (quant or DEFAULT_QUANT).upper()


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_gguf(quant: str = DEFAULT_QUANT, *, on_convert: Callable[[str], None] | None = None) -> Path:
    """The GGUF of localseek-nano at `quant`, converting the bundled checkpoint once if needed."""
    if not (CHECKPOINT / "config.json").is_file():
        raise ModelFileError(
            f"localseek-nano's checkpoint is missing from this install ({CHECKPOINT}); reinstall localseek."
        )
    from quantize import QuantizeError, UnsupportedType, convert

    out_dir = store.home() / "converted"
    out = out_dir / f"localseek-nano-{_fingerprint(CHECKPOINT)}-{quant}.gguf"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with store.pull_lock(f"nano:{quant}"):
        if out.is_file():  # converted by another process while we waited
            return out
        if on_convert:
            on_convert(f"Converting the bundled localseek-nano checkpoint (FP8) to {quant} once → {out}")
        try:
            convert(CHECKPOINT, out, qtype=quant, force=True)
        except UnsupportedType as exc:
            raise UsageError(f"{exc} (nano:{quant})") from exc
        except QuantizeError as exc:
            raise ModelFileError(f"Could not convert localseek-nano: {exc}") from exc
    return out
