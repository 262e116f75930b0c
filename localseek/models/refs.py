"""What people type for a model, brought to one spelling before anything else reads it.

Habits from other tools, accepted as they are written there:
- Ollama's Hugging Face references `hf.co/OWNER/REPO[:QUANT]` (also `huggingface.co/…` and the repo's web address,
  `https://huggingface.co/OWNER/REPO[/blob|resolve/REV/FILE.gguf]`) → `OWNER/REPO[:QUANT|FILE]`;
- Ollama's `:latest` tag (`deepseek-r1:latest`, `hf.co/OWNER/REPO:latest`) → the name without it, which means the
  default quant everywhere in localseek.
Pure string work: a path that exists is the caller's to check first (`resolve` does).
"""

from __future__ import annotations

import re

_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "https://hf.co/", "http://hf.co/",
                 "huggingface.co/", "hf.co/")
# .../OWNER/REPO/blob/REV/path/to/file.gguf or /resolve/REV/... (a web address copied from the Hub)
_FILE_URL_RE = re.compile(r"^(?P<repo>[^/]+/[^/]+)/(?:blob|resolve)/[^/]+/(?P<file>.+\.gguf)(?:\?.*)?$", re.IGNORECASE)
LATEST = ":latest"


def canonical(ref: str) -> str:
    """`hf.co/OWNER/REPO:Q4_K_M` → `OWNER/REPO:Q4_K_M`; `deepseek-r1:latest` → `deepseek-r1`; others unchanged."""
    text = ref.strip()
    low = text.lower()
    for prefix in _HUB_PREFIXES:
        if low.startswith(prefix):
            text = text[len(prefix):].rstrip("/")
            m = _FILE_URL_RE.match(text)
            if m:
                text = f"{m['repo']}:{m['file']}"
            break
    if text.lower().endswith(LATEST) and len(text) > len(LATEST):
        text = text[: -len(LATEST)]
    return text


__all__ = ["LATEST", "canonical"]
