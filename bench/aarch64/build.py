"""Build the aarch64 runtime that `run.py` emulates: llama.cpp for Cortex-A76, a Debian arm64 Python, its wheels.

Four cached steps, each a directory under the cache (LOCALSEEK_BENCH_CACHE/aarch64, default
~/.cache/localseek-bench/aarch64), created under a `.part` name and renamed when complete so an interrupted run
redoes only the step it broke:

- `libs-<version>-<arch>/`: libllama, libggml, libggml-base, libggml-cpu cross-compiled with Debian's
  `g++-aarch64-linux-gnu` from the llama.cpp that the pinned llama-cpp-python sdist vendors (the same tree and the
  same CMake project the x86 wheel is built from), with `GGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=<arch>`;
- `sysroot/`: Debian bookworm's arm64 `python3.11` and the libraries it and llama.cpp need (libstdc++, libgomp),
  unpacked with `dpkg-deb -x` (no chroot, no binfmt_misc: programs run as `qemu-aarch64-static -L sysroot ...`);
- `site-<version>/`: aarch64 wheels of localseek's dependencies (`pip install --target --platform`);
- `pkg-<version>-<arch>/llama_cpp/`: llama-cpp-python's Python package from the sdist with the cross-built libraries
  in `llama_cpp/lib/`, laid out as the wheel lays it out (localseek's `backends.py` opens libggml from there; the
  bindings also get `LLAMA_CPP_LIB_PATH`).

localseek itself is never installed there: the emulated Python gets the checkout on PYTHONPATH.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _llamacpp_build

REPO = Path(__file__).resolve().parents[2]
# Cortex-A76 (Raspberry Pi 5): ARMv8.2-A with dotprod and FP16 arithmetic; no i8mm, no SVE. This is what
# GGML_NATIVE=ON gives on a Pi 5 (gcc -mcpu=native resolves to cortex-a76), so the emulated build takes the Pi's paths.
DEFAULT_ARCH = "armv8.2-a+dotprod+fp16"
PYTHON = "3.11"  # Debian bookworm's python3 on arm64
DEBIAN_PACKAGES = ("python3-minimal", "python3", "python3.11", "libgomp1", "libstdc++6")
SKIP_PACKAGES = {"dpkg", "tar", "install-info"}  # pulled in by maintainer scripts we never run
LIBS = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so")


@dataclass(frozen=True)
class Runtime:
    """Everything needed to run the emulated Python: see `command()` and `env()`."""

    sysroot: Path
    package: Path  # the directory holding llama_cpp/ (with lib/)
    site: Path
    cpu: str = "cortex-a76"

    def command(self, *args: str) -> list[str]:
        return ["qemu-aarch64-static", "-L", str(self.sysroot), str(self.sysroot / "usr/bin/python3"), *args]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.pop("VIRTUAL_ENV", None)
        env.update(
            QEMU_CPU=self.cpu,
            LLAMA_CPP_LIB_PATH=str(self.package / "llama_cpp" / "lib"),
            PYTHONPATH=os.pathsep.join([str(REPO), str(self.package), str(self.site)]),
            PYTHONNOUSERSITE="1",
            PYTHONDONTWRITEBYTECODE="1",  # the emulated side writes nothing into the checkout
            # no binfmt_misc here: the chat-template helper process must be started through qemu as well
            LOCALSEEK_TEMPLATE_PYTHON=shlex.join(self.command()),
        )
        return env


def cache_root() -> Path:
    root = _llamacpp_build.cache_dir() / "aarch64"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _run(cmd: list[str], log_file: Path | None = None, **kw) -> None:
    if log_file is None:
        subprocess.run(cmd, check=True, **kw)
        return
    with open(log_file, "a") as out:
        out.write("+ " + " ".join(cmd) + "\n")
        out.flush()
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **kw).returncode != 0:
            raise RuntimeError(f"command failed: {' '.join(cmd[:3])} …; see {log_file}")


def _fresh(path: Path) -> Path:
    part = path.with_name(path.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    return part


def ensure_host_tools(log=print) -> None:
    """Debian's cross compiler and qemu-user, and the arm64 package lists (root: apt-get)."""
    need = [pkg for tool, pkg in (("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
                                  ("qemu-aarch64-static", "qemu-user-static"), ("cmake", "cmake"))
            if shutil.which(tool) is None]
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True,
                             check=False).stdout.split()
    if "arm64" not in foreign:
        log("adding Debian's arm64 architecture (dpkg --add-architecture arm64)")
        _run(["dpkg", "--add-architecture", "arm64"])
    if need or "arm64" not in foreign:
        log(f"apt-get update{' and install ' + ' '.join(need) if need else ''}")
        _run(["apt-get", "update", "-qq"])
    if need:
        _run(["apt-get", "install", "-y", "-qq", *need], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def build_libs(version: str, arch: str = DEFAULT_ARCH, jobs: int = 2, log=print) -> Path:
    """Cross-compile llama.cpp's shared libraries for aarch64; cached per version and -march."""
    out = cache_root() / f"libs-{version}-{arch}"
    if out.is_dir():  # complete: each step builds under .part and renames at the end
        return out
    src = _llamacpp_build.sdist_tree(version, log) / "vendor" / "llama.cpp"
    build = cache_root() / f"build-{version}-{arch}"
    build_log = cache_root() / f"build-{version}-{arch}.log"
    log(f"cross-compiling llama.cpp for aarch64 -march={arch} ({jobs} jobs, ~10-25 min on 2 cores; log: {build_log})")
    _run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
          "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
          "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc", "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++",
          "-DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER", "-DBUILD_SHARED_LIBS=ON",
          # as the wheel: each library finds the others beside it
          "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN",
          "-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={arch}", "-DGGML_CCACHE=OFF",
          "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_BUILD_TESTS=OFF",
          "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
          "-DLLAMA_BUILD_APP=OFF"], build_log)
    _run(["nice", "-n", "10", "cmake", "--build", str(build), "--config", "Release", "-j", str(jobs),
          "--target", "llama", "ggml", "ggml-base", "ggml-cpu"], build_log)
    part = _fresh(out)
    for lib in (build / "bin").glob("lib*.so*"):  # the files and their SONAME links (libggml.so.0 → …)
        shutil.copy2(lib, part / lib.name, follow_symlinks=False)
    missing = [lib for lib in LIBS if not (part / lib).exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not built; see {build_log}")
    part.rename(out)
    return out


def _debian_packages() -> list[str]:
    """The arm64 packages python3.11 and llama.cpp need at run time, resolved by apt from the package lists."""
    listing = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
         "--no-replaces", "--no-enhances", *[p + ":arm64" for p in DEBIAN_PACKAGES]],
        capture_output=True, text=True, check=True).stdout
    names = {line.strip() for line in listing.splitlines() if line and not line.startswith((" ", "<"))}
    arm = sorted(n for n in names if n.endswith(":arm64") and n.split(":")[0] not in SKIP_PACKAGES)
    if not any(n.startswith("python3.11-minimal") for n in arm):
        raise RuntimeError("apt does not know python3.11:arm64; run `dpkg --add-architecture arm64 && apt-get update`")
    return arm


def build_sysroot(log=print) -> Path:
    """Debian's arm64 python3 (and libc, libstdc++, libgomp) unpacked into a directory."""
    out = cache_root() / "sysroot"
    if out.is_dir():
        return out
    part = _fresh(out)
    debs = cache_root() / "debs"
    debs.mkdir(exist_ok=True)
    packages = _debian_packages()
    log(f"downloading {len(packages)} Debian arm64 packages (python3.{PYTHON.split('.')[1]}, libc, libstdc++, libgomp)")
    _run(["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", *packages], cwd=debs)
    for deb in sorted(debs.glob("*_arm64.deb")) + sorted(debs.glob("*_all.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(part)])
    # qemu -L resolves the interpreter path /lib/ld-linux-aarch64.so.1 inside the sysroot (usrmerge: lib → usr/lib).
    for link in ("lib", "bin", "sbin"):
        if not (part / link).exists():
            (part / link).symlink_to(f"usr/{link}")
    part.rename(out)
    return out


def _requirements(version: str) -> list[str]:
    """localseek's runtime dependencies (pyproject) without llama-cpp-python, plus llama-cpp-python's own."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    deps = [d for d in deps if not d.startswith("llama-cpp-python")]
    sdist = tomllib.loads((_llamacpp_build.sdist_tree(version) / "pyproject.toml").read_text())
    return deps + list(sdist["project"]["dependencies"])


def build_site(version: str, log=print) -> Path:
    """aarch64 site-packages: wheels for manylinux aarch64 / CPython 3.11, and llama_cpp from the sdist."""
    out = cache_root() / f"site-{version}"
    if out.is_dir():
        return out
    part = _fresh(out)
    reqs = _requirements(version)
    log(f"installing aarch64 wheels of {len(reqs)} requirements for CPython {PYTHON} (pip --platform)")
    platforms = [f"--platform=manylinux_2_{m}_aarch64" for m in (36, 34, 31, 28, 27, 17)] + [
        "--platform=manylinux2014_aarch64"]
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts", "--target", str(part),
          *platforms, f"--python-version={PYTHON}", "--implementation=cp", f"--abi=cp{PYTHON.replace('.', '')}",
          "--only-binary=:all:", *reqs], cache_root() / f"site-{version}.log")
    _check_aarch64(part)
    part.rename(out)
    return out


def build_package(version: str, libs: Path) -> Path:
    """llama_cpp/ from the sdist plus the cross-built libraries in llama_cpp/lib/ (as in the wheel)."""
    out = cache_root() / f"pkg-{libs.name.removeprefix('libs-')}"
    if out.is_dir():
        return out
    part = _fresh(out)
    shutil.copytree(_llamacpp_build.sdist_tree(version) / "llama_cpp", part / "llama_cpp",
                    ignore=shutil.ignore_patterns("server", "__pycache__", "lib"))
    shutil.copytree(libs, part / "llama_cpp" / "lib", symlinks=True)
    _check_aarch64(part)
    part.rename(out)
    return out


def _check_aarch64(root: Path) -> None:
    bad = [str(p.relative_to(root)) for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink()
           and _elf_machine(p) not in ("aarch64", None)]
    if bad:
        raise RuntimeError(f"non-aarch64 binaries in {root}: {bad[:3]}")


def _elf_machine(path: Path) -> str | None:
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return None
    return {0xB7: "aarch64", 0x3E: "x86_64"}.get(int.from_bytes(head[18:20], "little"), "other")


def build_all(version: str, arch: str = DEFAULT_ARCH, jobs: int = 2, log=print) -> Runtime:
    if not re.fullmatch(r"[a-z0-9.+-]+", arch):
        raise ValueError(f"bad -march value {arch!r}")
    ensure_host_tools(log)
    libs = build_libs(version, arch, jobs, log)
    return Runtime(sysroot=build_sysroot(log), package=build_package(version, libs), site=build_site(version, log))


def pinned_version() -> str:
    """The llama-cpp-python version pyproject.toml pins (the x86 venv has the same one installed)."""
    for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        if dep.startswith("llama-cpp-python=="):
            return dep.split("==", 1)[1]
    raise RuntimeError("pyproject.toml does not pin llama-cpp-python")


if __name__ == "__main__":
    rt = build_all(pinned_version())
    print(rt)
