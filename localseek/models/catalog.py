"""The model catalog: `models.toml` → validated, frozen model specs; names, aliases and "did you mean".

Pure data and lookups: nothing here touches the network or the disk beyond reading the catalog file.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from localseek.errors import LocalseekError
from localseek.models.quants import QUANT_BPW, QUANT_RE, is_quant, normalize_quant

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

GB = 1000**3
DEFAULT_CTX = 4096  # the context `run` opens by default (the planner's too); memory needs are quoted for it
STATUSES = ("ready", "convert", "bundled")  # bundled: ships inside the package (localseek-nano)
_QUANTISH = re.compile(r"^(ud-)?(i?q\d|tq|bf|fp?\d|mxfp)", re.IGNORECASE)  # looks like a quant, maybe misspelt


class CatalogError(LocalseekError):
    """models.toml is malformed (a packaging bug, or a broken LOCALSEEK_CATALOG file)."""


class UnknownModelError(LocalseekError):
    """A name that is neither in the catalog nor installed."""


@dataclass(frozen=True)
class KVShape:
    """What one token of KV cache costs. GQA: kv_heads × head_dim per K and V; MLA: the compressed latent (V3.2:
    plus the sparse-attention indexer's key, `indexer_dim`); DeepSeek-V4: one `head_dim` K per layer (llama.cpp's
    full-size window cache, as llama-cpp-python runs it), plus per 4 tokens the `csa_layers`' compressed K and
    indexer key, per 128 tokens the `hca_layers`' compressed K."""

    layers: int
    kv_heads: int | None = None
    head_dim: int | None = None
    kv_lora_rank: int | None = None
    rope_dim: int | None = None
    indexer_dim: int | None = None
    csa_layers: int | None = None
    hca_layers: int | None = None

    @property
    def compressed(self) -> bool:
        return self.csa_layers is not None

    def bytes_per_token(self, bytes_per_element: int = 2) -> int:
        idx = self.indexer_dim or 0
        if self.compressed:
            hd = self.head_dim or 0
            per = self.layers * hd + (self.csa_layers or 0) * (hd + idx) / 4 + (self.hca_layers or 0) * hd / 128
            return round(per * bytes_per_element)
        if self.kv_lora_rank is not None:
            return self.layers * (self.kv_lora_rank + (self.rope_dim or 0) + idx) * bytes_per_element
        return self.layers * 2 * (self.kv_heads or 0) * (self.head_dim or 0) * bytes_per_element


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float
    top_p: float


@dataclass(frozen=True)
class GGUFSource:
    repo: str
    sizes: tuple[tuple[str, int], ...] = ()  # (quant, bytes) as the Hub lists them
    pattern: str = "*.gguf"

    def size_of(self, quant: str) -> int | None:
        return dict(self.sizes).get(normalize_quant(quant))


@dataclass(frozen=True)
class ModelSpec:
    id: str
    title: str
    family: str
    repo: str
    hf_arch: str
    gguf_arch: str
    params: int
    active: int
    context: int
    license: str
    reasoning: bool
    status: str
    aliases: tuple[str, ...] = ()
    default_quant: str | None = None
    original_bytes: int | None = None
    sampling: SamplingDefaults | None = None
    kv: KVShape | None = None
    note: str = ""
    gguf: tuple[GGUFSource, ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def is_moe(self) -> bool:
        return self.active < self.params

    def quants(self) -> list[tuple[str, int | None]]:
        """Every quant the catalog knows a source for, with its size (first source that lists it)."""
        seen: dict[str, int | None] = {}
        for src in self.gguf:
            for q, size in src.sizes:
                if seen.get(q) is None:
                    seen[q] = size
        return sorted(seen.items(), key=lambda kv: (kv[1] is None, kv[1] or 0))

    def size_of(self, quant: str | None = None) -> int | None:
        """The GGUF's size as a source lists it; for a bundled model (converted locally), parameters × the quant's
        bits per weight."""
        q = normalize_quant(quant or self.default_quant or "")
        for src in self.gguf:
            size = src.size_of(q)
            if size is not None:
                return size
        if self.status == "bundled":
            bpw = dict(QUANT_BPW).get(q)
            return int(self.params * bpw / 8) if bpw else None
        return None

    def kv_bytes(self, n_ctx: int) -> int | None:
        return self.kv.bytes_per_token() * n_ctx if self.kv else None

    def memory_need(self, quant: str | None = None, n_ctx: int | None = None) -> int | None:
        """Bytes to run `quant` with an `n_ctx` context: the weights as published plus the F16 KV cache."""
        size = self.size_of(quant)
        if size is None:
            return None
        ctx = min(n_ctx or DEFAULT_CTX, self.context)
        return size + (self.kv_bytes(ctx) or 0)


@dataclass(frozen=True)
class Resolved:
    spec: ModelSpec
    quant: str | None  # None: the catalog default


@dataclass(frozen=True)
class Catalog:
    models: tuple[ModelSpec, ...]
    source: str = "models.toml"

    def __post_init__(self) -> None:
        index: dict[str, ModelSpec] = {}
        for spec in self.models:
            for name in spec.names:
                index[name.lower()] = spec
        object.__setattr__(self, "_index", index)

    def names(self) -> list[str]:
        return [n for spec in self.models for n in spec.names]

    def get(self, name: str) -> ModelSpec | None:
        return self._index.get(name.strip().lower())  # type: ignore[attr-defined]

    def resolve(self, ref: str) -> Resolved | None:
        """`NAME`, `NAME:QUANT`, `NAME-QUANT` (Ollama's `deepseek-r1:7b-q8_0`), case-insensitive; None if unknown.

        Raises UnknownModelError when the model is known but the part after it is not a quantization type.
        """
        ref = ref.strip()
        spec = self.get(ref)
        if spec:
            return Resolved(spec, None)
        near: tuple[ModelSpec, str] | None = None  # longest known name followed by ":" and a non-quant
        for pos in range(len(ref) - 1, 0, -1):
            if ref[pos] not in ":-":
                continue
            head, tail = ref[:pos], ref[pos + 1:]
            spec = self.get(head)
            if spec is None:
                continue
            if is_quant(tail):
                return Resolved(spec, normalize_quant(tail))
            if ref[pos] == ":" and near is None and _QUANTISH.match(tail):
                near = (spec, tail)
        if near:
            spec, tail = near
            known = ", ".join(q for q, _ in spec.quants()) or "none (original weights only)"
            raise UnknownModelError(f"{tail!r} is not a quantization type; quants listed for {spec.id}: {known}.")
        return None

    def suggest(self, name: str, extra: list[str] | None = None, n: int = 3) -> list[str]:
        """Known names close to `name` (never `name` itself: "did you mean" the very thing typed helps nobody)."""
        typed = name.strip().lower()
        pool = self.names() + list(extra or [])
        lowered = {p.lower(): p for p in pool if p.lower() != typed}
        hits = difflib.get_close_matches(typed, list(lowered), n=n, cutoff=0.55)
        return [lowered[h] for h in hits]

    def unknown(self, name: str, extra: list[str] | None = None) -> UnknownModelError:
        hits = self.suggest(name, extra)
        hint = f" Did you mean {' or '.join(repr(h) for h in hits)}?" if hits else ""
        return UnknownModelError(
            f"No model named {name!r}.{hint} See `localseek models` for the catalog, `localseek list` for what is "
            "installed, or pull any Hub repo as OWNER/REPO."
        )


# ───────────────────────────── loading and validation ─────────────────────────────

_MODEL_KEYS = {
    "id": str, "aliases": list, "title": str, "family": str, "repo": str, "hf_arch": str, "gguf_arch": str,
    "params": (int, float), "active": (int, float), "context": int, "license": str, "reasoning": bool,
    "status": str, "default_quant": str, "original_gb": (int, float), "sampling": dict, "kv": dict, "note": str,
    "gguf": list,
}
_REQUIRED = ("id", "title", "family", "hf_arch", "gguf_arch", "params", "active", "context", "license",
             "reasoning", "status")
_KV_KEYS = {"layers", "kv_heads", "head_dim", "kv_lora_rank", "rope_dim", "indexer_dim", "csa_layers", "hca_layers"}
_KV_FORMS = (  # GQA, MLA (V3.2: + indexer), DeepSeek-V4's compressed cache
    ({"kv_heads", "head_dim"}, set()),
    ({"kv_lora_rank", "rope_dim"}, {"indexer_dim"}),
    ({"head_dim", "indexer_dim", "csa_layers", "hca_layers"}, set()),
)
_SOURCE_KEYS = {"repo": str, "sizes_gb": dict, "pattern": str}


def _check_type(where: str, key: str, value: Any, typ: Any) -> None:
    if isinstance(value, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise CatalogError(f"{where}: '{key}' has the wrong type (bool)")
    if not isinstance(value, typ):
        raise CatalogError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")


def _repo(where: str, key: str, value: str) -> str:
    owner, _, name = value.partition("/")
    if not owner or not name or "/" in name or " " in value:
        raise CatalogError(f"{where}: '{key}' must be OWNER/NAME, got {value!r}")
    return value


def _parse_source(where: str, raw: Any) -> GGUFSource:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: each [[models.gguf]] must be a table")
    for key, value in raw.items():
        if key not in _SOURCE_KEYS:
            raise CatalogError(f"{where}: unknown key '{key}'")
        _check_type(where, key, value, _SOURCE_KEYS[key])
    if "repo" not in raw:
        raise CatalogError(f"{where}: missing key 'repo'")
    sizes = []
    for quant, gb in raw.get("sizes_gb", {}).items():
        if not QUANT_RE.match(quant):
            raise CatalogError(f"{where}: sizes_gb key {quant!r} is not a quantization type")
        if isinstance(gb, bool) or not isinstance(gb, (int, float)) or gb <= 0:
            raise CatalogError(f"{where}: sizes_gb.{quant} must be a positive number of GB")
        sizes.append((normalize_quant(quant), round(gb * GB)))
    return GGUFSource(repo=_repo(where, "repo", raw["repo"]), sizes=tuple(sizes), pattern=raw.get("pattern", "*.gguf"))


def _parse_model(i: int, raw: Any) -> ModelSpec:
    where = f"models[{i}]"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: must be a table")
    if isinstance(raw.get("id"), str):
        where = f"models[{i}] ({raw['id']})"
    for key, value in raw.items():
        if key not in _MODEL_KEYS:
            raise CatalogError(f"{where}: unknown key '{key}'")
        _check_type(where, key, value, _MODEL_KEYS[key])
    for key in _REQUIRED:
        if key not in raw:
            raise CatalogError(f"{where}: missing key '{key}'")
    if raw["status"] not in STATUSES:
        raise CatalogError(f"{where}: 'status' must be one of {', '.join(STATUSES)}")
    if raw["status"] != "bundled" and "repo" not in raw:
        raise CatalogError(f"{where}: missing key 'repo'")
    aliases = raw.get("aliases", [])
    if not all(isinstance(a, str) and a.strip() for a in aliases):
        raise CatalogError(f"{where}: 'aliases' must be a list of names")
    sources = tuple(_parse_source(f"{where}.gguf[{j}]", s) for j, s in enumerate(raw.get("gguf", [])))
    default = raw.get("default_quant")
    if raw["status"] == "ready":
        if not sources:
            raise CatalogError(f"{where}: status 'ready' needs at least one [[models.gguf]] source")
        if not default:
            raise CatalogError(f"{where}: status 'ready' needs 'default_quant'")
    if default is not None and not QUANT_RE.match(default):
        raise CatalogError(f"{where}: 'default_quant' {default!r} is not a quantization type")
    sampling = None
    if "sampling" in raw:
        s = raw["sampling"]
        if set(s) != {"temperature", "top_p"}:
            raise CatalogError(f"{where}: 'sampling' needs exactly temperature and top_p")
        sampling = SamplingDefaults(float(s["temperature"]), float(s["top_p"]))
    kv = None
    if "kv" in raw:
        k = raw["kv"]
        bad = set(k) - _KV_KEYS
        if bad:
            raise CatalogError(f"{where}: unknown key 'kv.{min(bad)}'")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in k.values()):
            raise CatalogError(f"{where}: 'kv' values must be positive integers")
        keys = set(k) - {"layers"}
        if "layers" not in k or not any(need <= keys <= need | optional for need, optional in _KV_FORMS):
            raise CatalogError(
                f"{where}: 'kv' needs layers plus either kv_heads+head_dim, kv_lora_rank+rope_dim (and optionally "
                "indexer_dim), or head_dim+indexer_dim+csa_layers+hca_layers (DeepSeek-V4)"
            )
        if k.get("csa_layers", 0) + k.get("hca_layers", 0) > k["layers"]:
            raise CatalogError(f"{where}: 'kv' has more compressed layers than layers")
        kv = KVShape(**k)
    if raw["params"] <= 0 or raw["active"] <= 0 or raw["active"] > raw["params"]:
        raise CatalogError(f"{where}: need 0 < active <= params")
    return ModelSpec(
        id=raw["id"], title=raw["title"], family=raw["family"],
        repo=_repo(where, "repo", raw["repo"]) if "repo" in raw else "",
        hf_arch=raw["hf_arch"], gguf_arch=raw["gguf_arch"], params=int(raw["params"]), active=int(raw["active"]),
        context=raw["context"], license=raw["license"], reasoning=raw["reasoning"], status=raw["status"],
        aliases=tuple(aliases), default_quant=normalize_quant(default) if default else None,
        original_bytes=int(raw["original_gb"] * GB) if "original_gb" in raw else None,
        sampling=sampling, kv=kv, note=raw.get("note", ""), gguf=sources,
    )


def parse_catalog(text: str, source: str = "models.toml") -> Catalog:
    """Parse and validate catalog text. Raises CatalogError naming the bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML ({exc})") from exc
    unknown = set(data) - {"schema", "models"}
    if unknown:
        raise CatalogError(f"{source}: unknown top-level key '{min(unknown)}'")
    if data.get("schema") != 1:
        raise CatalogError(f"{source}: 'schema' must be 1")
    models = tuple(_parse_model(i, m) for i, m in enumerate(data.get("models", [])))
    seen: dict[str, str] = {}
    for spec in models:
        for name in spec.names:
            key = name.lower()
            if key in seen:
                raise CatalogError(f"{source}: name {name!r} is used by both {seen[key]} and {spec.id}")
            if ":" in name and is_quant(name.rsplit(":", 1)[1]):
                raise CatalogError(f"{source}: name {name!r} ends in a quant and would be ambiguous")
            seen[key] = spec.id
    return Catalog(models=models, source=source)


def catalog_path() -> Path:
    """LOCALSEEK_CATALOG, else the copy inside the installed package, else the source tree's models.toml."""
    override = os.environ.get("LOCALSEEK_CATALOG")
    if override:
        return Path(override).expanduser()
    packaged = Path(__file__).with_name("models.toml")
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "models.toml"


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Catalog:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"Cannot read the model catalog {p}: {exc.strerror}.") from exc
    return parse_catalog(text, str(p))


def load_catalog() -> Catalog:
    path = catalog_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return _load(str(path), mtime)


__all__ = [
    "Catalog", "CatalogError", "GGUFSource", "KVShape", "ModelSpec", "Resolved", "SamplingDefaults",
    "UnknownModelError", "load_catalog", "parse_catalog",
]
