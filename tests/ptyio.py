"""A `localseek` process on a real pseudo-terminal, and reading what it shows."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def plain(screen: str) -> str:
    return ANSI.sub("", screen)


def spawn(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """`python -m localseek ARGS` with a pty as stdin, stdout and stderr; returns the process and the master fd."""
    master, slave = pty.openpty()
    env = dict(env if env is not None else os.environ, TERM="xterm-256color", COLUMNS="100", LINES="30")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localseek", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    return proc, master


def read_until(master: int, needle: str, timeout: float = 60) -> str:
    """What the terminal shows until `needle` appears, the process closes it, or `timeout` seconds pass."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if needle.encode() in out:
                break
    return out.decode("utf-8", "replace")
