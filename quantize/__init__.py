"""Hugging Face → GGUF conversion and quantization, including direct FP8 → integer quantization.

Standalone: imports nothing from `localseek`, prints nothing, reports progress through callbacks.

    from quantize import convert
    convert("DeepSeek-R1", "r1-q4_k_m.gguf", qtype="Q4_K_M", experts_type="Q2_K", keep_mtp=True)
"""

from quantize.convert import ConvertResult, Progress, convert, default_output, needs_mtp_file, plan_conversion
from quantize.errors import (
    BadWeights,
    OutputError,
    OutputExists,
    QuantizeError,
    SourceError,
    UnsupportedArchitecture,
    UnsupportedType,
)
from quantize.types import FTYPES, TENSOR_TYPES

__all__ = [
    "FTYPES",
    "TENSOR_TYPES",
    "BadWeights",
    "ConvertResult",
    "OutputError",
    "OutputExists",
    "Progress",
    "QuantizeError",
    "SourceError",
    "UnsupportedArchitecture",
    "UnsupportedType",
    "convert",
    "default_output",
    "needs_mtp_file",
    "plan_conversion",
]
