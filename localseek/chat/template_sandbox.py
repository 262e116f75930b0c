"""Chat templates rendered in a worker process with hard limits on time, memory and output.

A chat template is a program that came with the model file (or from a mirror). Jinja's sandbox keeps it from
touching anything but its own variables, but not from spinning forever (nested `range(100000)` loops) or from
building a string of gigabytes in one step (`'x' * 10**10`, `'x'.ljust(10**10)`), and neither can be stopped
from inside the same Python process. So templates render in one long-lived helper process (started on first
use, a plain `python -I` running this file: stdlib and jinja2 only, found where this process found them), which
- runs under an address-space limit of its own baseline + `MEMORY` (a MemoryError there is an answer, not a
  crash of the chat),
- gets a CPU-time limit per render, and is killed by the caller after `SECONDS` of wall-clock time,
- stops as soon as the output passes `MAX_OUTPUT` characters.
A killed helper is replaced on the next render. LOCALSEEK_TEMPLATE_PYTHON names another interpreter command for
the helper (e.g. `qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3` where an emulated Python cannot be
exec'd directly; qemu-user accepts but does not enforce address-space limits, so there only time and output are
bounded). Each failure is a `TemplateFailure` whose `kind` says which
limit it hit; `chat.conversation` turns it into one line that names the limit.

Protocol: one JSON request per line on the helper's stdin ({"source", "vars", "seconds", "max_output"}), one JSON
answer per line on its stdout ({"ok": text} or {"error": kind, "message": text}).
"""

from __future__ import annotations

import json
import math
import os
import select
import shlex
import subprocess
import sys
import threading
from datetime import datetime
from typing import Any

SECONDS = 5.0  # wall-clock time one render may take
MEMORY = 256 * 1024 * 1024  # address space the helper may grow by, beyond what it needs to start
MAX_OUTPUT = 4 * 1024 * 1024  # characters of rendered prompt (a 163,840-token context is ~650k characters)


class TemplateFailure(Exception):
    """A template did not render. `kind`: "rejected" (it called raise_exception), "error" (a Jinja or Python error
    in the template), "time", "memory", "output" (a limit), or "helper" (the helper could not run)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- the helper process (runs this file as a script) ------------------------------------------------------------

class _Rejected(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _Rejected(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def environment() -> Any:
    """The sandboxed Jinja environment templates render in (the names HF's and llama.cpp's templates use)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = lambda v, indent=None, ensure_ascii=False: json.dumps(
        v, indent=indent, ensure_ascii=ensure_ascii
    )
    return env


def _render_one(env: Any, cache: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    import jinja2

    limit = int(request["max_output"])
    try:
        template = cache.get(request["source"])
        if template is None:
            template = env.from_string(request["source"])
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[request["source"]] = template
        out, size = [], 0
        for piece in template.generate(**request["vars"]):
            size += len(piece)
            if size > limit:
                return {"error": "output", "message": f"more than {limit:,} characters"}
            out.append(piece)
        return {"ok": "".join(out)}
    except _Rejected as exc:
        return {"error": "rejected", "message": str(exc)}
    except MemoryError:
        return {"error": "memory", "message": "out of memory"}
    except RecursionError:
        return {"error": "error", "message": "too deeply nested"}
    except jinja2.TemplateError as exc:
        return {"error": "error", "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 — a template's own error (TypeError, ZeroDivisionError...)
        return {"error": "error", "message": f"{type(exc).__name__}: {exc}"}


def _serve(memory: int) -> None:
    import resource

    env = environment()
    cache: dict[str, Any] = {}
    env.from_string("{{ x }}").render(x=1)  # warm up before measuring the baseline
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    base = _vm_size()
    if base:
        resource.setrlimit(resource.RLIMIT_AS, (base + memory, resource.RLIM_INFINITY))
    for line in sys.stdin:
        request = json.loads(line)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = math.ceil(usage.ru_utime + usage.ru_stime)
        resource.setrlimit(resource.RLIMIT_CPU, (used + math.ceil(request["seconds"]) + 1, resource.RLIM_INFINITY))
        try:
            answer = json.dumps(_render_one(env, cache, request))
        except MemoryError:
            answer = json.dumps({"error": "memory", "message": "out of memory"})
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0  # not Linux: no address-space limit (the time limit still holds)


# -- the caller's side --------------------------------------------------------------------------------------------

class Renderer:
    """The helper process, started on first use and replaced when it is killed. Thread-safe (one render at a
    time)."""

    def __init__(self, memory: int = MEMORY) -> None:
        self.memory = memory
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def render(self, source: str, variables: dict[str, Any], *, seconds: float = SECONDS,
               max_output: int = MAX_OUTPUT) -> str:
        request = json.dumps({"source": source, "vars": variables, "seconds": seconds, "max_output": max_output})
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(request.encode() + b"\n")
                proc.stdin.flush()
            except OSError:
                self._stop()
                raise TemplateFailure("helper", "the template helper process is not running") from None
            ready, _, _ = select.select([proc.stdout], [], [], seconds)
            if not ready:
                self._stop()
                raise TemplateFailure("time", f"more than {seconds:g} s")
            line = proc.stdout.readline()
            if not line:  # killed: its CPU limit, or memory it could not even report
                code = self._stop()
                kind = "time" if code in (-9, -24) else "memory"
                raise TemplateFailure(kind, f"stopped by the {kind} limit (helper exit {code})")
        answer = json.loads(line)
        if "ok" in answer:
            return str(answer["ok"])
        raise TemplateFailure(str(answer["error"]), str(answer["message"]))

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        try:
            self._proc = subprocess.Popen(
                [*interpreter(), "-I", os.path.abspath(__file__), str(self.memory), *_library_paths()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise TemplateFailure("helper", f"cannot start the template helper ({exc.strerror or exc})") from None
        return self._proc

    def _stop(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        proc.kill()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return proc.wait()

    def close(self) -> None:
        with self._lock:
            self._stop()


def interpreter() -> list[str]:
    """The command that starts the helper's Python: LOCALSEEK_TEMPLATE_PYTHON (split like a shell would), else
    this interpreter."""
    configured = os.environ.get("LOCALSEEK_TEMPLATE_PYTHON", "").strip()
    if not configured:
        return [sys.executable]
    try:
        command = shlex.split(configured)
    except ValueError as exc:
        raise TemplateFailure("helper", f"LOCALSEEK_TEMPLATE_PYTHON is not a command line ({exc})") from None
    return command or [sys.executable]


def _library_paths() -> list[str]:
    """The folders jinja2 and markupsafe were imported from here: `-I` ignores PYTHONPATH and user site-packages, so
    the helper is told where they are (they may come from PYTHONPATH, a --target install or another interpreter)."""
    import jinja2
    import markupsafe

    paths: list[str] = []
    for module in (jinja2, markupsafe):
        folder = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))
        if folder not in paths:
            paths.append(folder)
    return paths


_renderer = Renderer()


def render(source: str, variables: dict[str, Any], *, seconds: float | None = None,
           max_output: int | None = None) -> str:
    """Render `source` with `variables` in the shared helper, within the module's limits (read at call time, so
    tests can lower them). Raises TemplateFailure."""
    return _renderer.render(source, variables, seconds=SECONDS if seconds is None else seconds,
                            max_output=MAX_OUTPUT if max_output is None else max_output)


def close() -> None:
    """Stop the helper (it also ends by itself when this process does: its stdin closes)."""
    _renderer.close()


if __name__ == "__main__":
    sys.path += [p for p in sys.argv[2:] if p not in sys.path]  # where the caller found jinja2; never before stdlib
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else MEMORY)
