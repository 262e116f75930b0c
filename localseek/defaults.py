"""Sampling defaults for a model, from the most specific source that has them.

Order: a flag the user passed > the catalog entry (models.toml) > the GGUF's own `general.sampling.*`
keys > DeepSeek's advice for R1 (temperature 0.6, top-p 0.95) and llama.cpp's defaults for the rest.

The catalog is optional here: if `localseek.catalog` provides
`sampling_defaults(ref: str, info: GGUFInfo) -> Mapping[str, float | int] | None` (keys among
temperature, top_p, top_k, min_p, repeat_penalty, max_tokens), its values are used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from localseek.engine import Sampling
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
    try:
        catalog = importlib.import_module("localseek.catalog")
    except ImportError:
        return None
    return getattr(catalog, "sampling_defaults", None)


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
