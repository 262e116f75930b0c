"""localseek-nano: the bundled, trained DeepSeek-V3-architecture reasoning model (a few MB, FP8 like V3).

`localseek run nano` converts the shipped FP8 checkpoint with our own FP8 → integer path on first use, keeps the GGUF
under LOCALSEEK_HOME/converted/ (keyed by the checkpoint's contents) and registers it like a pulled model, so it
works offline on any machine and `list`, `show`, `rm` and `plan` know it. Its catalog entry is `localseek-nano`
(status "bundled") in models.toml.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from localseek.errors import ModelFileError, UsageError
from localseek.models import store

CHECKPOINT = Path(__file__).parent / "localseek-nano"
CATALOG_ID = "localseek-nano"
DEFAULT_QUANT = "Q8_0"


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
    from quantize.types import parse_ftype

    try:  # checked before anything is announced or written
        quant = parse_ftype(quant)[0]
    except UnsupportedType as exc:
        raise UsageError(f"{exc} (nano:{quant})") from exc
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


def install(quant: str = DEFAULT_QUANT, *, on_convert: Callable[[str], None] | None = None) -> store.InstalledModel:
    """localseek-nano at `quant` as an installed model: converted once, registered as `localseek-nano:QUANT`."""
    path = ensure_gguf(quant, on_convert=on_convert)
    name = f"{CATALOG_ID}:{quant}"
    model = store.get(name)
    size = path.stat().st_size
    if model is None or model.primary != path or model.missing():
        stat = path.stat()
        model = store.InstalledModel(
            name=name, kind="gguf", source="bundled", catalog_id=CATALOG_ID, quant=quant, pulled_at=time.time(),
            files=(store.StoredFile(path=str(path), blob=str(path), size=size, mtime_ns=stat.st_mtime_ns),),
        )
        store.register(model)
    return model
