"""Find the pinned llama-cpp-python sdist, unpack it, and build llama.cpp's own tools from its vendored sources.

Everything lands in a cache directory outside the repository (LOCALSEEK_BENCH_CACHE, default
~/.cache/localseek-bench); nothing here is committed. The build uses llama.cpp's defaults (Release, native CPU,
OpenMP) like the llama-cpp-python wheel, which is built from the same tree with the same defaults.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path


def cache_dir() -> Path:
    root = Path(os.environ.get("LOCALSEEK_BENCH_CACHE", Path.home() / ".cache" / "localseek-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def llama_cpp_python_version() -> str:
    from importlib.metadata import version

    return version("llama_cpp_python")


def sdist_tree(version: str, log=print) -> Path:
    """The unpacked sdist (downloaded with pip if not cached)."""
    root = cache_dir()
    tree = root / f"llama_cpp_python-{version}"
    if (tree / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        return tree
    archives = sorted(root.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not archives:
        log(f"downloading the llama-cpp-python {version} sdist with pip")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary", ":all:",
             "--no-deps", "-d", str(root), "-q"],
            check=True,
        )
        archives = sorted(root.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not archives:
        raise RuntimeError(f"pip did not leave llama_cpp_python-{version}.tar.gz in {root}")
    part = root / (tree.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    with tarfile.open(archives[0]) as tar:
        tar.extractall(part, filter="data")
    (part / tree.name).rename(tree)
    shutil.rmtree(part, ignore_errors=True)
    return tree


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
