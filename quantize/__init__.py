"""Hugging Face → GGUF conversion and quantization, including direct FP8 → integer quantization.

Standalone: imports nothing from `localseek`, prints nothing, reports progress through callbacks.
"""
