"""llama.cpp's own `convert_hf_to_gguf.py` (from the pinned sdist) as a reference for quantize's output.

`converter()` finds it (downloading the sdist once into a cache, see llama_cpp_sdist.py) and checks that its
Python dependencies import; when it cannot be had the caller's test is skipped with the reason — or fails
when LOCALSEEK_REQUIRE_REFERENCE=1 (CI sets it), so CI never silently skips the byte-identical checks.
`compare()` puts two GGUFs side by side, tensor by tensor and key by key.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import pytest
from llama_cpp_sdist import converter_command, llama_cpp_dir

REQUIRED = os.environ.get("LOCALSEEK_REQUIRE_REFERENCE") == "1"
# what convert_hf_to_gguf.py and its gguf-py import (transformers brings tokenizers and pyyaml)
CONVERTER_MODULES = ("torch", "transformers", "numpy", "yaml")


def unavailable(reason: str):
    """Skip — or fail when the reference checks are required."""
    if REQUIRED:
        pytest.fail(f"LOCALSEEK_REQUIRE_REFERENCE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@functools.lru_cache(maxsize=1)
def _find() -> tuple[Path | None, str]:
    missing = [m for m in CONVERTER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return None, f"llama.cpp's converter needs {', '.join(missing)}: pip install -e '.[reference]'"
    try:
        src = llama_cpp_dir()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return None, f"llama.cpp's converter is not available (pinned sdist not fetched: {exc})"
    if not (src / "convert_hf_to_gguf.py").is_file():
        return None, f"no convert_hf_to_gguf.py in {src}"
    return src, ""


def converter() -> Path:
    """llama.cpp's source tree holding convert_hf_to_gguf.py, or skip/fail the calling test."""
    src, reason = _find()
    if src is None:
        unavailable(reason)
    return src  # type: ignore[return-value]


def run_converter(
    src: Path, model: Path, out: Path, *, pre: str, outtype: str = "q8_0", args: tuple = ()
) -> str:
    """Convert `model` with llama.cpp's converter; return its log (stderr). Fails the test if it fails."""
    argv, env = converter_command(src, out.with_suffix(".wrap.py"), pre)
    r = subprocess.run(
        [*argv, str(model), "--outtype", outtype, "--outfile", str(out), *args],
        capture_output=True, text=True, check=False, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, f"llama.cpp's converter failed:\n{r.stderr[-3000:]}"
    return r.stderr


@dataclass
class Comparison:
    identical: list[str] = field(default_factory=list)  # same type, shape and bytes
    other_type: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (ours, theirs)
    different: list[str] = field(default_factory=list)  # same type and shape, different bytes (or shape)
    only_ours: list[str] = field(default_factory=list)
    only_theirs: list[str] = field(default_factory=list)
    keys_differ: list[str] = field(default_factory=list)


def compare(ours: Path, theirs: Path, ignore_keys: tuple[str, ...] = ("general.name",)) -> Comparison:
    ra, rb = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    a, b = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
    c = Comparison(only_ours=sorted(set(a) - set(b)), only_theirs=sorted(set(b) - set(a)))
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        if x.tensor_type != y.tensor_type:
            c.other_type[name] = (x.tensor_type.name, y.tensor_type.name)
        elif list(x.shape) == list(y.shape) and np.array_equal(
            np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8)
        ):
            c.identical.append(name)
        else:
            c.different.append(name)
    fa, fb = ra.fields, rb.fields
    c.keys_differ = sorted(
        k
        for k in set(fa) | set(fb)
        if k not in (*ignore_keys, "GGUF.kv_count")
        and (k not in fa or k not in fb or fa[k].contents() != fb[k].contents())
    )
    return c
