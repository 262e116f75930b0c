"""Build llama.cpp's own tools from the vendored sources of the pinned llama-cpp-python sdist (fetched and
unpacked by tests/llama_cpp_sdist.py, shared with the tests).

Everything lands in a cache directory outside the repository (LOCALSEEK_BENCH_CACHE, default
~/.cache/localseek-bench); nothing here is committed. The build uses llama.cpp's defaults (Release, native CPU,
OpenMP) like the llama-cpp-python wheel, which is built from the same tree with the same defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from llama_cpp_sdist import cache_dir, llama_cpp_python_version, sdist_tree  # shared with the tests

__all__ = ["build_tools", "cache_dir", "llama_cpp_python_version", "sdist_tree"]


def build_tools(version: str, targets: tuple[str, ...] = ("llama-bench",), jobs: int | None = None, log=print) -> Path:
    """Build llama.cpp's tools (CPU, Release) once; return the bin directory."""
    tree = sdist_tree(version, log)
    src = tree / "vendor" / "llama.cpp"
    server = "llama-server" in targets  # configured apart: the server (and its web UI) is off in the plain build
    build = cache_dir() / (f"build-{version}-server" if server else f"build-{version}")
    binaries = [build / "bin" / t for t in targets]
    if all(b.exists() for b in binaries):
        return build / "bin"
    jobs = jobs or os.cpu_count() or 2
    build_log = cache_dir() / f"{build.name}.log"
    log(f"building {', '.join(targets)} from {src} into {build} ({jobs} jobs; several minutes; log: {build_log})")
    with open(build_log, "a") as out:
        for cmd in (
            ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
             "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             f"-DLLAMA_BUILD_SERVER={'ON' if server else 'OFF'}", "-DGGML_NATIVE=ON"],
            ["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *targets],
        ):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise RuntimeError(f"building llama.cpp failed; see {build_log}")
    return build / "bin"


if __name__ == "__main__":
    print(build_tools(llama_cpp_python_version(), ("llama-bench", "llama-cli")))
