"""Architecture registry: Hugging Face `architectures[0]` → module (imported lazily) → class.

To add DeepSeek-V3.2 (`DeepseekV32ForCausalLM` → `deepseek32`) or V4 (`DeepseekV4ForCausalLM` → `deepseek4`):
subclass `deepseek.DeepseekV2` with their `gguf_arch`, extra tensor kinds and keys, and add a line here.
(gguf-py 0.19.0 on PyPI does not know those GGUF architectures yet; `Arch` then says to upgrade gguf.)
"""

from __future__ import annotations

import importlib

from quantize.archs.base import Arch, Context, OutTensor
from quantize.errors import UnsupportedArchitecture

REGISTRY: dict[str, str] = {
    "DeepseekV3ForCausalLM": "deepseek",
    "DeepseekV2ForCausalLM": "deepseek",
    "Qwen2ForCausalLM": "dense",
    "Qwen3ForCausalLM": "dense",
    "LlamaForCausalLM": "dense",
}


def supported() -> list[str]:
    return sorted(REGISTRY)


def for_config(config: dict) -> Arch:
    archs = config.get("architectures") or []
    name = archs[0] if archs else config.get("model_type", "?")
    module = REGISTRY.get(name)
    if module is None:
        raise UnsupportedArchitecture(
            f"Architecture {name!r} is not supported; localseek converts {', '.join(supported())}."
        )
    cls = importlib.import_module(f"quantize.archs.{module}").ARCHS[name]
    return cls(config)


__all__ = ["REGISTRY", "Arch", "Context", "OutTensor", "for_config", "supported"]
