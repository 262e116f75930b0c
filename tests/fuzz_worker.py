"""Fuzz worker: runs inputs through the real code path under `resource` limits (see tests/fuzzing.py).

    python fuzz_worker.py gguf|safetensors|config CPU_SECONDS MEMORY_MB < paths.json

Writes "S <i>" before input i and "R [i, outcome, detail]" after it on its original stdout (the protocol; fd 1
itself is pointed at /dev/null so nothing else can interleave). Outcomes: "ok" (detail: the last stage reached),
"typed" (a LocalseekError/QuantizeError; detail: its message), "badmsg" (a typed error whose message is not one
clean line), "crash" (any other exception; detail: where), "blowup" (MemoryError). A hang ends the process by
SIGXCPU, which the parent sees as death after "S <i>".
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import resource
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _gguf_runner() -> Callable[[int, Path], str]:
    from localseek.cli.models import show
    from localseek.models.gguf_info import file_type_name, parameter_count, read_gguf, summarize_types
    from localseek.planning import hardware
    from localseek.planning.footprint import from_gguf
    from localseek.planning.plan import Request, make_plan
    from localseek.runtime import speculative
    from localseek.runtime.defaults import resolve_sampling

    gib = 1 << 30
    machines = [hardware.simulated(ram=64 * gib), hardware.simulated(ram=64 * gib, vram=24 * gib),
                hardware.simulated(ram=4 * gib, board="Raspberry Pi 5 Model B", arch="aarch64"),
                hardware.simulated(ram=32 * gib, vram=16 * gib, unified=True)]

    def run(i: int, path: Path) -> str:
        info = read_gguf(path)
        file_type_name(info), parameter_count(info), summarize_types(info.tensors), info.chat_template
        fp = from_gguf(info)
        use_mtp = speculative.resolve(info, mtp=None, draft=None)
        resolve_sampling(None, info, {})
        for j, hw in enumerate(machines):
            if j == i % len(machines) or j == 0:
                request = Request(load_mtp=use_mtp, cpu_moe=bool(i % 5 == 1), n_ctx=None if i % 3 else 4096)
                make_plan(fp, hw, request)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            show(str(path), as_json=bool(i % 2), template=bool(i % 4 == 0))
        if "\x1b" in out.getvalue():
            raise AssertionError("show printed an escape character from the file")
        return "show"

    return run


def _safetensors_runner() -> Callable[[int, Path], str]:
    from quantize.reader import RowSource
    from quantize.safetensors import Checkpoint

    def run(i: int, path: Path) -> str:
        with Checkpoint(path) as ckpt:
            for name in sorted(ckpt.tensors):
                if name.endswith("_scale_inv"):
                    continue
                for _ in RowSource(ckpt, name).chunks():
                    pass
        return "read"

    return run


def _config_runner() -> Callable[[int, Path], str]:
    from quantize import plan_conversion

    def run(i: int, path: Path) -> str:
        ckpt = plan_conversion(path, qtype="Q8_0")[4]
        ckpt.close()
        return "plan"

    return run


def _selftest(runner: Callable[[int, Path], str]) -> Callable[[int, Path], str]:
    """Inputs that misbehave on purpose, to test the harness: SPIN loops, BOOM raises, EAT! allocates."""

    def run(i: int, path: Path) -> str:
        file = next(path.iterdir(), path) if path.is_dir() else path
        head = file.read_bytes()[:4] if file.is_file() else b""
        if head == b"SPIN":
            while True:
                pass
        if head == b"BOOM":
            raise TypeError("boom")
        if head == b"EAT!":
            return str(len(bytearray(1 << 34)))
        return runner(i, path)

    return run


def main() -> None:
    kind, cpu_seconds, memory_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    paths = [Path(p) for p in json.loads(sys.stdin.read())]
    from localseek.errors import LocalseekError
    from quantize.errors import QuantizeError

    typed: tuple[type[BaseException], ...] = (LocalseekError, QuantizeError)
    runner = {"gguf": _gguf_runner, "safetensors": _safetensors_runner, "config": _config_runner}[kind]()
    if os.environ.get("LOCALSEEK_FUZZ_SELFTEST"):
        runner = _selftest(runner)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    base = _vm_size()
    if base:
        resource.setrlimit(resource.RLIMIT_AS, (base + memory_mb * 1024 * 1024, resource.RLIM_INFINITY))
    for i, path in enumerate(paths):
        proto.write(f"S {i}\n")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = math.ceil(usage.ru_utime + usage.ru_stime)
        resource.setrlimit(resource.RLIMIT_CPU, (used + cpu_seconds, resource.RLIM_INFINITY))
        result: list[Any]
        try:
            result = [i, "ok", runner(i, path)]
        except typed as exc:
            msg = str(exc)
            clean = "\n" not in msg and not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in msg)
            result = [i, "typed" if clean else "badmsg", msg[:300]]
        except MemoryError:
            result = [i, "blowup", "MemoryError"]
        except RecursionError:
            result = [i, "crash", "RecursionError"]
        except Exception as exc:  # noqa: BLE001 — every other exception is the finding
            tb = traceback.extract_tb(exc.__traceback__)
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb[-4:]))
            result = [i, "crash", f"{type(exc).__name__}: {str(exc)[:200]} at {where}"]
        proto.write("R " + json.dumps(result) + "\n")
    proto.close()


if __name__ == "__main__":
    main()
