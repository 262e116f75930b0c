"""Sampling defaults for a model, from the most specific source that has them.

Order: a flag the user passed > the catalog entry (models.toml) > the GGUF's own `general.sampling.*`
keys > DeepSeek's advice for R1 (temperature 0.6, top-p 0.95) and llama.cpp's defaults for the rest.

The catalog is optional here (see `_catalog_lookup`): without `localseek.catalog`, the GGUF and the
built-in defaults decide.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from localseek.engine import Sampling
from localseek.errors import LocalseekError
from localseek.ggufinfo import GGUFInfo

KNOBS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens")
_GGUF_KEYS = {
    "temperature": "general.sampling.temp",
    "top_p": "general.sampling.top_p",
    "top_k": "general.sampling.top_k",
    "min_p": "general.sampling.min_p",
    "repeat_penalty": "general.sampling.penalty_repeat",
}
BUILTIN = Sampling()  # temperature 0.6, top_p 0.95 (DeepSeek's R1 advice), top_k 40, min_p 0.05

CatalogLookup = Callable[[str, GGUFInfo], "Mapping[str, Any] | None"]


def _catalog_lookup() -> CatalogLookup | None:
    """The catalog's defaults for a model reference, if a catalog module is present.

    Wired to the catalog of the `pull` work: `load_catalog().resolve(ref).spec.sampling` (temperature, top_p)
    for a catalog name or alias; for an installed model (by its name or OWNER/REPO), the catalog entry it was
    pulled from (`pull.find_installed(ref).catalog_id`). A catalog may instead offer `sampling_defaults`.
    """
    try:
        catalog = importlib.import_module("localseek.catalog")
    except ImportError:
        return None
    direct = getattr(catalog, "sampling_defaults", None)
    if direct is not None:
        return direct  # type: ignore[no-any-return]
    if not hasattr(catalog, "load_catalog"):
        return None

    def lookup(ref: str, info: GGUFInfo) -> Mapping[str, Any] | None:
        try:
            cat = catalog.load_catalog()
            resolved = cat.resolve(ref)
            spec = resolved.spec if resolved is not None else None
            if spec is None:
                pull = importlib.import_module("localseek.pull")
                model = pull.find_installed(ref)
                spec = cat.get(model.catalog_id) if model is not None and model.catalog_id else None
        except (LocalseekError, ImportError, AttributeError, OSError, ValueError):
            return None  # a bad catalog must not stop a local file from running
        sampling = getattr(spec, "sampling", None)
        if sampling is None:
            return None
        return {k: getattr(sampling, k) for k in KNOBS if getattr(sampling, k, None) is not None}

    return lookup


def _gguf_values(info: GGUFInfo) -> dict[str, Any]:
    out = {}
    for knob, key in _GGUF_KEYS.items():
        value = info.metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[knob] = value
    return out


def _typed(knob: str, value: Any) -> Any:
    return int(value) if knob in ("top_k", "max_tokens") else float(value)


def resolve_sampling(
    ref: str,
    info: GGUFInfo,
    flags: Mapping[str, Any],
    *,
    catalog: CatalogLookup | None = None,
) -> tuple[Sampling, dict[str, str]]:
    """The sampling settings for this run, and where each knob came from ("flag", "catalog", "gguf", "default").

    `flags` holds what the user passed (None = not passed); `seed` passes straight through.
    """
    lookup = catalog if catalog is not None else _catalog_lookup()
    layers: list[tuple[str, Mapping[str, Any]]] = [("flag", {k: v for k, v in flags.items() if v is not None})]
    if lookup is not None:
        layers.append(("catalog", lookup(ref, info) or {}))
    layers.append(("gguf", _gguf_values(info)))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for knob in KNOBS:
        for source, layer in layers:
            if layer.get(knob) is not None:
                values[knob] = _typed(knob, layer[knob])
                sources[knob] = source
                break
        else:
            sources[knob] = "default"
    if flags.get("seed") is not None:
        values["seed"] = int(flags["seed"])
    return replace(BUILTIN, **values), sources
