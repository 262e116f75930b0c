"""localseek: run DeepSeek models locally."""

__version__ = "0.1.0"
