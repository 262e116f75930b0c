"""`localseek run` end to end: real process, real llama.cpp, tiny GGUFs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER, SCRIPT_REASONING

LOCALSEEK = [sys.executable, "-m", "localseek"]


def run_cli(*args: str, input: str | None = None, env: dict | None = None, timeout: int = 120):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [*LOCALSEEK, *args], input=input, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("localseek ")


@pytest.mark.parametrize("cmd", [[], ["run"]])
def test_help(cmd: list[str]) -> None:
    r = run_cli(*cmd, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout


def test_piped_answer_on_stdout_reasoning_on_stderr_with_show_thinking(tiny_gguf: Path) -> None:
    r = run_cli("run", str(tiny_gguf), "hello", "--temperature", "0", "--show-thinking")
    assert r.returncode == 0, r.stderr
    assert r.stdout == SCRIPT_ANSWER + "\n"
    assert SCRIPT_REASONING in r.stderr
    assert "\x1b[" not in r.stdout + r.stderr


def test_piped_reasoning_is_off_by_default(tiny_gguf: Path) -> None:
    r = run_cli("run", str(tiny_gguf), "hello", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == SCRIPT_ANSWER + "\n" and SCRIPT_REASONING not in r.stderr


def test_hide_thinking(tiny_gguf: Path) -> None:
    r = run_cli("run", str(tiny_gguf), "hello", "--temperature", "0", "--hide-thinking")
    assert r.returncode == 0
    assert r.stdout == SCRIPT_ANSWER + "\n" and SCRIPT_REASONING not in r.stderr


def test_template_that_opens_think_in_prompt(tiny_think_gguf: Path) -> None:
    r = run_cli("run", str(tiny_think_gguf), "hello", "--temperature", "0", "--show-thinking")
    assert r.returncode == 0, r.stderr
    assert r.stdout == SCRIPT_ANSWER + "\n"
    assert SCRIPT_REASONING in r.stderr


def test_stdin_is_the_prompt(tiny_gguf: Path) -> None:
    r = run_cli("run", str(tiny_gguf), "--temperature", "0", input="hello from a pipe\n")
    assert r.returncode == 0 and r.stdout == SCRIPT_ANSWER + "\n"


def test_max_tokens_caps_reply(tiny_random_gguf: Path) -> None:
    from localseek.runtime.engine import Engine
    from localseek.runtime.options import LoadOptions, Sampling
    from localseek.chat.generation import Done, respond

    engine = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=512, n_threads=1))
    events = list(respond(engine, [{"role": "user", "content": "x"}], Sampling(temperature=0, max_tokens=7)))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.stats.generated_tokens == 7 and done.stats.stop_reason == "length"


def test_greedy_is_reproducible_and_seed_controls_sampling(tiny_random_gguf: Path) -> None:
    def go(*extra: str) -> str:
        r = run_cli("run", str(tiny_random_gguf), "abc", "-n", "24", "--hide-thinking", *extra)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert go("--temperature", "0") == go("--temperature", "0")
    a, b = go("--temperature", "1.5", "--seed", "1"), go("--temperature", "1.5", "--seed", "1")
    assert a == b
    others = {go("--temperature", "1.5", "--seed", str(s), "--top-k", "0", "--top-p", "1") for s in (2, 3, 4)}
    assert len(others | {a}) > 1


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "missing.gguf", "No such file"),
        (lambda d: (d / "x.gguf").write_text("hello") and d / "x.gguf", "not a GGUF"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path: Path, make, expected: str) -> None:
    path = make(tmp_path)
    r = run_cli("run", str(path), "hi")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in r.stderr


def test_truncated_model_is_one_line(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:-1000])
    r = run_cli("run", str(cut), "hi")
    assert r.returncode == 2 and "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_model_too_large_for_ram(tiny_gguf: Path) -> None:
    r = run_cli("run", str(tiny_gguf), "hi", env={"LOCALSEEK_RAM_BYTES": "100000"})
    assert r.returncode == 2 and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # -n 20: room for the scripted reasoning and answer (a reply cut before its answer exits 3)
    forced = run_cli("run", str(tiny_gguf), "hi", "--force", "-n", "20", env={"LOCALSEEK_RAM_BYTES": "100000"})
    assert forced.returncode == 0, forced.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = run_cli("--debug", "run", str(tmp_path / "missing.gguf"), "hi")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_unloadable_gguf_is_engine_error(tmp_path: Path) -> None:
    """A well-formed GGUF llama.cpp cannot load (unknown architecture) → one line, exit 2."""
    import gguf
    import numpy as np

    p = tmp_path / "alien.gguf"
    w = gguf.GGUFWriter(str(p), "no-such-arch")
    w.add_tensor("x.weight", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = run_cli("run", str(p), "hi")
    assert r.returncode == 2 and "could not load" in r.stderr and "Traceback" not in r.stderr


def test_a_home_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = run_cli("plan", "nano", env={"LOCALSEEK_HOME": str(blocker / "home")})
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr and "unexpected" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOCALSEEK_HOME" in lines[0] and str(blocker / "home") in lines[0]
    # a folder that cannot be made at all (the OS says no): also one line, not "unexpected"
    r = run_cli("plan", "nano", env={"LOCALSEEK_HOME": "/proc/localseek-cannot-be-here"})
    assert r.returncode == 1 and "Traceback" not in r.stderr and "unexpected" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOCALSEEK_HOME" in lines[0] and "/proc/localseek-cannot-be-here" in lines[0]
