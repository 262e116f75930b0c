"""localseek-nano is a model like the others: a catalog entry, converted once with our own FP8 path, registered, and
known to `models`, `list`, `show`, `plan`, `run`, `bench` and `rm` — which all resolve and open it the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env
from hf_factory import write_deepseek_v3
from typer.testing import CliRunner

from localseek import nano
from localseek.errors import ModelFileError
from localseek.models import store
from localseek.models.resolve import resolve
from localseek.runtime import open as runtime_open


def test_nano_is_a_bundled_catalog_entry() -> None:
    from localseek.models.catalog import load_catalog

    spec = load_catalog().get("nano")
    assert spec is not None and spec.id == "localseek-nano" and spec.status == "bundled"
    assert load_catalog().resolve("localseek-nano:q4_k_m").quant == "Q4_K_M"  # type: ignore[union-attr]
    assert spec.size_of("Q8_0") and spec.kv is not None


def test_converts_once_registers_and_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              isolated_home: Path) -> None:
    ckpt = write_deepseek_v3(tmp_path / "ckpt")
    monkeypatch.setattr(nano, "CHECKPOINT", ckpt)
    messages: list[str] = []
    first = resolve("nano", notify=messages.append)
    assert first.path.is_file() and first.path.is_relative_to(isolated_home) and len(messages) == 1
    assert first.name == "localseek-nano:Q8_0" and first.spec is not None and first.spec.id == "localseek-nano"
    assert store.get("localseek-nano:Q8_0") is not None
    mtime = first.path.stat().st_mtime_ns
    again = resolve("localseek-nano", notify=messages.append)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime and len(messages) == 1
    other = resolve("nano:Q4_0")
    assert other.path != first.path and other.name == "localseek-nano:Q4_0"
    first.path.unlink()  # a converted file that went missing is converted again, not an error
    assert resolve("nano").path.is_file()


def test_missing_checkpoint_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nano, "CHECKPOINT", tmp_path / "absent")
    with pytest.raises(ModelFileError, match="reinstall"):
        resolve("nano")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", *args], capture_output=True, text=True, timeout=180,
                          env=cli_env())


def test_every_command_knows_nano() -> None:
    """list, show, plan, run, bench and rm agree on what nano is (the shipped checkpoint, as shipped)."""
    assert "localseek-nano" in _cli("models").stdout
    assert "Nothing installed" in _cli("list").stdout + _cli("list").stderr
    run = _cli("run", "nano", "What is 387 + 512?")
    assert run.returncode == 0 and "899" in run.stdout, run.stderr
    listed = json.loads(_cli("list", "--json").stdout)
    assert [m["name"] for m in listed] == ["localseek-nano:Q8_0"]
    path = listed[0]["path"]
    shown = json.loads(_cli("show", "nano", "--json").stdout)
    assert shown["name"] == "localseek-nano:Q8_0" and shown["path"] == path and shown["catalog"]["id"] == "localseek-nano"
    plan = _cli("plan", "nano")
    assert plan.returncode == 0 and "2.43M params" in plan.stdout and "localseek run nano" in plan.stdout
    planned = json.loads(_cli("plan", "nano", "--json").stdout)
    assert planned["model"]["params"] > 2_000_000 and planned["plan"]["load_mtp"] is True
    bench = _cli("bench", "nano", "-p", "16", "-n", "8", "-r", "1", "--no-warmup", "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["model"] == path
    removed = _cli("rm", "nano", "--yes")
    assert removed.returncode == 0 and "Removed localseek-nano:Q8_0" in removed.stderr
    assert not Path(path).exists()
    assert json.loads(_cli("list", "--json").stdout) == []


def test_run_bench_plan_share_one_resolve_and_open(monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path) -> None:
    """Each command resolves the reference once, through runtime.open, and loads through open_model."""
    from localseek.cli import _register, app

    _register()
    resolved: list[str] = []
    opened: list[str] = []
    real_resolve, real_open = runtime_open.resolve, runtime_open.open_model

    def spy_resolve(ref: str, **kw):  # type: ignore[no-untyped-def]
        resolved.append(ref)
        return real_resolve(ref, **kw)

    def spy_open(ref, *a, **kw):  # type: ignore[no-untyped-def]
        opened.append(str(getattr(ref, "text", ref)))
        return real_open(ref, *a, **kw)

    monkeypatch.setattr(runtime_open, "resolve", spy_resolve)
    monkeypatch.setattr(runtime_open, "open_model", spy_open)
    runner = CliRunner()
    ref = str(tiny_gguf)
    for args, loads in ((["plan", ref], 0), (["run", ref, "hi", "-n", "20"], 1),  # 20: room to answer
                        (["bench", ref, "-p", "8", "-n", "4", "-r", "1", "--no-warmup", "--json"], 1)):
        resolved.clear()
        opened.clear()
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert resolved == [ref], args
        assert opened == [ref] * loads, args
