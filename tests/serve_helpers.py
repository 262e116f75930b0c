"""A real `localseek serve` process on a free loopback port for the server tests, and the tiny models they need."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from factory import TinyConfig, write_qwen2_gguf

# A cut-down DeepSeek-R1-0528 template: tools listed in the system part, an assistant's calls in DeepSeek's tool-call
# tokens (R1's form, with a json fence), tool results in the tool-output tokens.
TOOL_TEMPLATE = (
    "{{ bos_token }}{% if tools %}{{ 'Tools: ' }}{% for tool in tools %}{{ tool['function']['name'] + ' ' }}"
    "{% endfor %}{% endif %}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' %}{{ message['content'] }}"
    "{%- elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}"
    "{{ '<｜Assistant｜><｜tool▁calls▁begin｜>' }}{% for tool in message['tool_calls'] %}"
    "{{ '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n```json\\n' "
    "+ tool['function']['arguments'] + '\\n```<｜tool▁call▁end｜>' }}{% endfor %}"
    "{{ '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>' }}"
    "{%- elif message['role'] == 'assistant' %}{% set c = message['content'] %}"
    "{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + c + '<｜end▁of▁sentence｜>' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{ '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>"
    "<｜tool▁outputs▁end｜>' }}"
    "{%- endif -%}{%- endfor -%}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)


def tool_caller_model(model_dir: Path) -> Path:
    """A scripted model that answers every prompt with one call, get_weather({"city": "Oslo"}), in V3.1's form."""
    from factory import EOS, THINK_CLOSE, THINK_OPEN, byte_level

    path = model_dir / "tiny-toolcaller.gguf"
    if path.exists():
        return path
    pieces = ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "get_weather", "<｜tool▁sep｜>", '{"city":', '"Oslo"}',
              "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>")
    script = (THINK_OPEN, "Ċ", "ok", THINK_CLOSE, "ĊĊ", *map(byte_level, pieces), EOS)
    return write_qwen2_gguf(path, TinyConfig(template=TOOL_TEMPLATE, script=script))


def tool_model(model_dir: Path) -> Path:
    path = model_dir / "tiny-tools.gguf"
    return path if path.exists() else write_qwen2_gguf(path, TinyConfig(template=TOOL_TEMPLATE))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LOCALSEEK_HOME=str(home / "localseek-home"), HF_HOME=str(home / "hf-home"), HF_HUB_OFFLINE="1",
               LOCALSEEK_THREADS="1")
    env.pop("LOCALSEEK_API_KEY", None)
    env.update(extra)
    return env


class Server:
    """`localseek serve ARGS` on 127.0.0.1:<free port>, its log in a file; stopped with `stop()`."""

    def __init__(self, args: list[str], workdir: Path, *, key: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key
        self.log_path = workdir / f"server-{self.port}.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localseek", "serve", *args, "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env or server_env(workdir),
        )
        self.wait_healthy(timeout)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not become healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        """Resident memory of the server process (bytes)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
