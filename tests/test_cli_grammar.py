"""One grammar of flags and words across commands (issue 18): each short flag means one thing, help screens in
plain words and true, the version as Ollama users ask for it, shell completion, piped output at full width."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer
from factory import SCRIPT_ANSWER

LOCALSEEK = [sys.executable, "-m", "localseek"]
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, input: str | None = None, env: dict | None = None, timeout: float = 120,
        columns: str | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    e.pop("COLUMNS", None)  # piped output must not depend on the caller's terminal
    if columns:
        e["COLUMNS"] = columns
    return subprocess.run([*LOCALSEEK, *args], input=input, capture_output=True, text=True, timeout=timeout, env=e,
                          check=False)


def _commands() -> dict:
    from localseek.cli import _register, app

    _register()
    return typer.main.get_command(app).commands


def test_each_short_flag_means_one_thing_across_commands() -> None:
    meaning: dict[str, dict[str, str]] = {}
    for name, cmd in _commands().items():
        for param in cmd.params:
            longs = [o for o in param.opts if o.startswith("--")]
            for short in (o for o in param.opts if not o.startswith("--")):
                meaning.setdefault(short, {})[name] = longs[0] if longs else param.name
    clashes = {s: m for s, m in meaning.items() if len(set(m.values())) > 1}
    assert not clashes, clashes
    assert set(meaning["-t"].values()) == {"--threads"} and "quantize" in meaning["-t"]
    assert set(meaning["-n"].values()) == {"--max-tokens"} and {"run", "bench"} <= set(meaning["-n"])
    assert meaning["-q"] == {"quantize": "--type"}


def test_force_has_one_meaning() -> None:
    helps = {name: next((p.help for p in cmd.params if "--force" in p.opts and not p.hidden), None)
             for name, cmd in _commands().items()}
    shown = {h for h in helps.values() if h}
    assert len(shown) == 1 and "plan" in shown.pop()
    assert helps["quantize"] is None  # quantize overwrites with --overwrite


def test_version_with_v() -> None:
    for flag in ("-v", "--version"):
        r = cli(flag)
        assert r.returncode == 0 and re.fullmatch(r"localseek \d+\.\d+\.\d+\S*\n", r.stdout), r


def test_help_screens_in_plain_words() -> None:
    top = cli("--help")
    assert top.returncode == 0
    listed = re.findall(r"^│ (\w+)\s{2,}", top.stdout, re.MULTILINE)
    assert listed[:3] == ["run", "pull", "list"], listed
    assert "--install-completion" in top.stdout
    names = list(_commands())
    for name, screen in zip(names, _help_screens(names), strict=True):
        usage = next(line for line in screen.splitlines() if "Usage:" in line)
        assert f"Usage: localseek {name} " in usage and "{" not in usage and "python" not in usage, usage
        for label in ("<bool>", "<str>", "<int", "<float", "<path>"):
            assert label not in screen, (name, label)


def _help_screens(names: list[str]) -> list[str]:
    """`localseek NAME --help` for each name, in one process (each would otherwise pay the start-up)."""
    code = ("import sys\nfrom localseek.cli import main\nfor name in sys.argv[1:]:\n"
            "    sys.argv = ['localseek', name, '--help']\n    try:\n        main()\n    except SystemExit:\n"
            "        pass\n    print('\\x00', flush=True)\n")
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, COLUMNS="200"), check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\x00\n")[:-1]


def test_help_texts_say_what_the_command_does() -> None:
    pull = cli("pull", "--help", columns="200").stdout
    assert "table" not in pull  # pull prints no table, so --json replaces none
    quantize = cli("quantize", "--help", columns="200").stdout
    assert "--overwrite" in quantize and "--force" not in quantize


def test_every_localseek_environment_variable_is_documented() -> None:
    used = set()
    for path in (ROOT / "localseek").rglob("*.py"):
        used |= set(re.findall(r"\b(LOCALSEEK_[A-Z_]+)\b", path.read_text(encoding="utf-8")))
    used -= {"LOCALSEEK_REQUIRE_REFERENCE", "LOCALSEEK_REQUIRE_TMUX"}  # CI switches of the test suite
    help_text = cli("--help", columns="400").stdout
    assert used and not {name for name in used if name not in help_text}


def test_shell_completion_of_commands_and_model_names() -> None:
    r = cli(env={"_LOCALSEEK_COMPLETE": "complete_bash", "COMP_WORDS": "localseek ru", "COMP_CWORD": "1"})
    assert r.stdout.split() == ["run"], r
    r = cli(env={"_LOCALSEEK_COMPLETE": "complete_bash", "COMP_WORDS": "localseek run deepseek-r1:1",
                 "COMP_CWORD": "2"})
    assert "deepseek-r1:1.5b" in r.stdout.split(), r
    # the script `--install-completion` writes (asked for directly: `--show-completion` guesses the shell from the
    # process tree, which a test run does not have)
    shown = cli(env={"_LOCALSEEK_COMPLETE": "source_bash"})
    assert shown.returncode == 0 and "_LOCALSEEK_COMPLETE" in shown.stdout


def test_prompt_from_a_file(tiny_gguf: Path, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("hello from a file\n", encoding="utf-8")
    r = cli("run", str(tiny_gguf), "-f", str(prompt), "--temperature", "0")
    assert r.returncode == 0 and r.stdout == SCRIPT_ANSWER + "\n", r.stderr
    r = cli("run", str(tiny_gguf), "--file", "-", "--temperature", "0", input="hello on stdin")
    assert r.returncode == 0 and r.stdout == SCRIPT_ANSWER + "\n", r.stderr
    for path, needle in ((tmp_path / "missing.txt", "Cannot read --file"), (tmp_path, "is a folder")):
        r = cli("run", str(tiny_gguf), "-f", str(path))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and needle in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    r = cli("run", str(tiny_gguf), "-f", str(empty))
    assert r.returncode == 2 and "is empty" in r.stderr


def _one_line(stdout: str, *needles: str) -> bool:
    return any(all(n in line for n in needles) for line in stdout.splitlines())


def test_piped_output_is_not_wrapped_at_80_columns(tiny_gguf: Path, tmp_path: Path) -> None:
    doctor = cli("doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert _one_line(doctor.stdout, "llama-cpp-python", "GPU offload", "mmap", "mlock"), doctor.stdout
    plan = cli("plan", str(tiny_gguf))
    assert plan.returncode == 0, plan.stderr
    assert _one_line(plan.stdout, "context", "KV cache", "per token", "trained for"), plan.stdout
    bench = cli("bench", str(tiny_gguf), "-p", "8", "-n", "4", "-r", "1", "--no-warmup", "-t", "1")
    assert bench.returncode == 0, bench.stderr
    assert _one_line(bench.stdout, "test", "threads", "batch", "t/s (median)", "min – max", "±stdev", "notes")
    assert _one_line(bench.stdout, "pp8", "first token")
    out = tmp_path / ("a-folder-name-long-enough-that-the-whole-path-passes-eighty-columns" * 2) / "tiny-Q8_0.gguf"
    out.parent.mkdir()
    quantized = cli("quantize", str(tiny_gguf), "-q", "Q8_0", "-o", str(out))
    assert quantized.returncode == 0, quantized.stderr
    assert f"Wrote {out}\n" in quantized.stdout
