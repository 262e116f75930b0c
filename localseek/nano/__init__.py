"""localseek-nano: a tiny trained DeepSeek-V3-architecture reasoning model shipped inside the package.

The FP8 checkpoint (DeepSeek's own layout) lives in `CHECKPOINT_DIR`; `problems` generates the arithmetic it was
trained on and `evaluate` measures exact-answer accuracy through any generate(prompt) -> text callable.
"""

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).parent / "localseek-nano"
