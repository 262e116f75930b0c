"""`localseek bench`: what it measures (counted by llama.cpp itself), its sweeps, JSON, and bad input."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from deepseek_factory import TinyDeepseekConfig, write_deepseek2_gguf

from localseek.runtime.bench import time_generation, time_prompt
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", *args], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ), check=False)


@pytest.fixture(scope="module")
def mtp_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_deepseek2_gguf(tmp_path_factory.mktemp("bench") / "ds.gguf", TinyDeepseekConfig())


def _perf(engine: Engine) -> tuple[int, int]:
    import llama_cpp

    data = llama_cpp.llama_perf_context(engine.llm._ctx.ctx)
    return int(data.n_p_eval), int(data.n_eval)


def test_pp_and_tg_decode_what_llama_bench_decodes(tiny_random_gguf: Path) -> None:
    """ppN: N prompt tokens in one pass; tgN: N single-token decodes — counted by llama.cpp's own perf counters."""
    import llama_cpp

    engine = Engine.load(tiny_random_gguf, LoadOptions(n_ctx=256, n_threads=1, n_batch=32, n_ubatch=32))
    try:
        llama_cpp.llama_perf_context_reset(engine.llm._ctx.ctx)
        assert time_prompt(engine, list(range(5, 5 + 70))) > 0
        # 70 prompt tokens (3 batches of ≤32), no single-token decode (llama.cpp reports its counters as at least 1)
        assert _perf(engine) == (70, 1)
        llama_cpp.llama_perf_context_reset(engine.llm._ctx.ctx)
        assert time_generation(engine, [1], 16) > 0
        assert _perf(engine) == (1, 16)  # 16 decodes of one token each (and no multi-token batch)
    finally:
        engine.close()


def test_json_with_sweeps_and_mtp(mtp_gguf: Path) -> None:
    r = _cli("bench", str(mtp_gguf), "-p", "16", "-n", "8", "-r", "2", "-t", "1,2", "-b", "8,16", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["arch"] == "deepseek2" and doc["n_params"] > 0 and doc["spec"]["drafter"] == "mtp"
    rows = [(x["test"], x["n_threads"], x["n_batch"]) for x in doc["results"]]
    assert rows == [(t, th, b) for b in (8, 16) for th in (1, 2) for t in ("pp16", "tg8", "tg8+mtp")]
    by_row = {(x["test"], x["n_threads"], x["n_batch"]): x for x in doc["results"]}
    for x in doc["results"]:
        n = 16 if x["test"] == "pp16" else 8
        # every figure follows from the measured seconds: tokens / seconds per run, their median, min and max
        # (seconds are printed to the microsecond: a tiny model's 0.2 ms runs round by up to 0.5 %)
        assert x["samples_tps"] == pytest.approx([n / s for s in x["seconds"]], rel=1e-2)
        assert x["median_tps"] == pytest.approx(statistics.median(x["samples_tps"]), rel=1e-3)
        assert (x["min_tps"], x["max_tps"]) == pytest.approx((min(x["samples_tps"]), max(x["samples_tps"])), rel=1e-3)
        if x["test"] != "tg8+mtp":
            # llama.cpp's own decode time (its perf counters) is part of each run's wall time, never more
            assert len(x["llama_seconds"]) == 2
            assert all(0 < inside <= wall * 1.01 for wall, inside in zip(x["seconds"], x["llama_seconds"]))
            assert x["loop_overhead"] == pytest.approx(statistics.median(
                (w - c) / c for w, c in zip(x["seconds"], x["llama_seconds"])), rel=0.02, abs=2e-3)
        else:
            plain = by_row[("tg8", x["n_threads"], x["n_batch"])]
            assert x["extra"]["speedup"] == pytest.approx(x["median_tps"] / plain["median_tps"], rel=1e-3)
            # the scripted MTP head predicts the next token: most drafts are kept, never more than were made
            assert 0 < x["accepted"] <= x["drafted"] and x["acceptance"] >= 0.8


def test_no_mtp_and_table_output(mtp_gguf: Path) -> None:
    r = _cli("bench", str(mtp_gguf), "-p", "0", "-n", "4", "-r", "1", "-t", "1", "--no-mtp")
    assert r.returncode == 0, r.stderr
    rows = [line.split("│")[1].strip() for line in r.stdout.splitlines() if line.startswith("│")]
    assert [x for x in rows if x] == ["tg4"]  # no pp row, no +mtp row
    assert "outside" in r.stdout and "llama.cpp" in r.stdout  # the loop-overhead note (wrapped in a narrow table)


@pytest.mark.parametrize("args,message", [
    (["-t", "0"], "--threads values must be at least 1"),
    (["-b", "x"], "--batch takes comma-separated whole numbers"),
    (["-p", "0", "-n", "0"], "Nothing to measure"),
])
def test_bad_input_is_one_line(tiny_random_gguf: Path, args: list[str], message: str) -> None:
    r = _cli("bench", str(tiny_random_gguf), *args)
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_mtp_requested_on_a_model_without_it(tiny_random_gguf: Path) -> None:
    r = _cli("bench", str(tiny_random_gguf), "--mtp", "-r", "1")
    assert r.returncode == 2 and "no MTP module" in r.stderr


def test_auto_threads_and_the_machine_load(mtp_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-t auto` (the default without -t) measures what `run` does: counts that adapt, reported with where they
    ended; the machine's load goes to stderr before, and into the JSON."""
    monkeypatch.delenv("LOCALSEEK_THREADS")
    r = _cli("bench", str(mtp_gguf), "-p", "16", "-n", "8", "-r", "2", "-t", "1,auto", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = [(x["test"], x["adaptive"]) for x in doc["results"]]
    assert rows == [("pp16", False), ("tg8", False), ("tg8+mtp", False), ("pp16", True), ("tg8", True),
                    ("tg8+mtp", True)]
    assert all(x["n_threads"] >= 1 for x in doc["results"])
    load = doc["load"]
    assert load["cpus"] >= 1 and load["busy"] >= 0 and load["load_average"] >= 0
    assert r.stderr.startswith("machine: other work uses ") and " CPUs" in r.stderr.splitlines()[0]
    table = _cli("bench", str(mtp_gguf), "-p", "0", "-n", "4", "-r", "1", "--no-mtp")
    assert table.returncode == 0 and "auto→" in table.stdout

