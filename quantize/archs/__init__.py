"""Architecture registry: Hugging Face `architectures[0]` → module (imported lazily) → class.

A new family is a module with an `ARCHS` table and a line here. DeepSeek-V3.2 (`deepseek32`) is a subclass of
the V3 class with the indexer's tensors and keys; V4 (`deepseek4`) has its own tensor names and its own module.
gguf-py 0.19.0 on PyPI knows neither GGUF architecture: their names and the tensor kinds it lacks are data in
those modules.
"""

from __future__ import annotations

import importlib

from quantize.archs.base import Arch, Context, OutTensor
from quantize.errors import UnsupportedArchitecture

REGISTRY: dict[str, str] = {
    "DeepseekV3ForCausalLM": "deepseek",
    "DeepseekV2ForCausalLM": "deepseek",
    "DeepseekV32ForCausalLM": "deepseek",
    "DeepseekV4ForCausalLM": "deepseek4",
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
