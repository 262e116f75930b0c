"""The pinned llama-cpp-python sdist, unpacked once into a cache: llama.cpp's own converter for the tests, and
its sources for the benchmarks (bench/_llamacpp_build.py builds its tools from the same tree).

The cache lives outside the repository (LOCALSEEK_BENCH_CACHE, default ~/.cache/localseek-bench) and is kept
across runs; a file lock makes concurrent users (a test run and a benchmark) wait for one download. Nothing
here is committed. `LOCALSEEK_LLAMA_CPP_SRC` points at an existing llama.cpp tree instead (offline use).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from filelock import FileLock


def cache_dir() -> Path:
    root = Path(os.environ.get("LOCALSEEK_BENCH_CACHE", Path.home() / ".cache" / "localseek-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def llama_cpp_python_version() -> str:
    from importlib.metadata import version

    return version("llama_cpp_python")


def sdist_tree(version: str | None = None, log=lambda msg: None) -> Path:
    """The unpacked sdist of llama-cpp-python `version` (default: the installed one), downloaded with pip
    the first time. Raises RuntimeError when it cannot be had (no network, pip failure)."""
    version = version or llama_cpp_python_version()
    root = cache_dir()
    tree = root / f"llama_cpp_python-{version}"
    if (tree / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        return tree
    with FileLock(str(root / f".sdist-{version}.lock"), timeout=1800):
        if (tree / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
            return tree  # another process finished it while we waited
        archive = root / f"llama_cpp_python-{version}.tar.gz"
        if not archive.exists():
            log(f"downloading the llama-cpp-python {version} sdist with pip")
            r = subprocess.run(
                [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary",
                 ":all:", "--no-deps", "-d", str(root), "-q"],
                capture_output=True, text=True, check=False, timeout=1200,
            )  # fmt: skip
            if not archive.exists():
                raise RuntimeError(
                    f"pip could not download the llama-cpp-python {version} sdist "
                    f"(exit {r.returncode}): {r.stderr.strip()[-500:]}"
                )
        part = root / (tree.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir()
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(part, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            archive.unlink(missing_ok=True)  # a damaged download: fetched again next time
            shutil.rmtree(part, ignore_errors=True)
            raise RuntimeError(f"{archive.name} could not be unpacked ({exc}); it was deleted") from exc
        shutil.rmtree(tree, ignore_errors=True)  # a half-unpacked tree from an interrupted run
        (part / tree.name).rename(tree)
        shutil.rmtree(part, ignore_errors=True)
    return tree


def llama_cpp_dir(version: str | None = None, log=lambda msg: None) -> Path:
    """llama.cpp's source tree: LOCALSEEK_LLAMA_CPP_SRC if set, else the vendored copy in the sdist."""
    if env := os.environ.get("LOCALSEEK_LLAMA_CPP_SRC"):
        return Path(env)
    return sdist_tree(version, log) / "vendor" / "llama.cpp"


# llama.cpp's converter recognises tokenizers by a hash of what they produce; the factory's tiny tokenizer is
# not in its table, so the wrapper names the pre-tokenizer (`pre`) directly. Its V3.2 class asserts that the
# transformers tokenizer says `add_bos_token`, which transformers 5 no longer reads from tokenizer_config.json
# (the file says true; gguf's SpecialVocab, which writes the GGUF key, reads it there): that check is skipped.
# Tokenizer handling is not what the comparisons are about; everything else runs as llama.cpp ships it.
CONVERTER_WRAPPER = """
import sys
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[1:]
sys.path.insert(0, {src!r})
import convert_hf_to_gguf
from conversion.base import TextModel
from conversion.deepseek import DeepseekV32Model
TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
DeepseekV32Model.set_vocab = lambda self: self._set_vocab_gpt2()
convert_hf_to_gguf.main()
"""


def converter_command(src: Path, wrapper: Path, pre: str) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, environment) to run llama.cpp's convert_hf_to_gguf.py from tree `src` with its own gguf-py;
    append the model folder and the converter's options."""
    wrapper.write_text(CONVERTER_WRAPPER.format(src=str(src), pre=pre))
    env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"))
    env.pop("NO_LOCAL_GGUF", None)
    return [sys.executable, str(wrapper)], env
