"""Sampling defaults for a model, from the most specific source that has them.

Order: a flag the user passed > the catalog entry (models.toml) > the GGUF's own `general.sampling.*`
keys > DeepSeek's advice for R1 (temperature 0.6, top-p 0.95) and llama.cpp's defaults for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gguf import Keys

from localseek.models.catalog import ModelSpec
from localseek.models.gguf_info import GGUFInfo
from localseek.runtime.options import Sampling

KNOBS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens")
PASS_THROUGH = ("frequency_penalty", "presence_penalty", "seed")  # only ever from the user (no GGUF key for them)
_GGUF_KEYS = {
    "temperature": Keys.General.SAMPLING_TEMP,
    "top_p": Keys.General.SAMPLING_TOP_P,
    "top_k": Keys.General.SAMPLING_TOP_K,
    "min_p": Keys.General.SAMPLING_MIN_P,
    "repeat_penalty": Keys.General.SAMPLING_PENALTY_REPEAT,
}
BUILTIN = Sampling()  # temperature 0.6, top_p 0.95 (DeepSeek's R1 advice), top_k 40, min_p 0.05


def catalog_values(spec: ModelSpec | None) -> dict[str, Any]:
    sampling = spec.sampling if spec is not None else None
    if sampling is None:
        return {}
    return {k: getattr(sampling, k) for k in KNOBS if getattr(sampling, k, None) is not None}


# The most a file may set each knob to (a hostile header may say 1e300 for top_k, which no sampler takes).
_GGUF_MAX = {"temperature": 100.0, "top_p": 1.0, "top_k": 1 << 20, "min_p": 1.0, "repeat_penalty": 100.0}


def _gguf_values(info: GGUFInfo) -> dict[str, Any]:
    out = {}
    for knob, key in _GGUF_KEYS.items():
        value = info.metadata.get(key)
        # A file's values are only taken when they are sane numbers (a hostile header may say NaN or -5).
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and 0 <= value <= _GGUF_MAX[knob]:
            out[knob] = value
    return out


def _typed(knob: str, value: Any) -> Any:
    return int(value) if knob in ("top_k", "max_tokens") else float(value)


def resolve_sampling(
    spec: ModelSpec | None,
    info: GGUFInfo,
    flags: Mapping[str, Any],
) -> tuple[Sampling, dict[str, str]]:
    """The sampling settings for this run, and where each knob came from ("flag", "catalog", "gguf", "default").

    `spec` is the model's catalog entry (None for a file the catalog does not know); `flags` holds what the user
    passed (None = not passed); the PASS_THROUGH knobs come from there only.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("flag", {k: v for k, v in flags.items() if v is not None}),
        ("catalog", catalog_values(spec)),
        ("gguf", _gguf_values(info)),
    ]
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
    for knob in PASS_THROUGH:
        if flags.get(knob) is not None:
            values[knob] = int(flags[knob]) if knob == "seed" else float(flags[knob])
    return replace(BUILTIN, **values), sources
