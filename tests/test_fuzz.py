"""Seeded, bounded fuzzing (tests/fuzzing.py): every malformed GGUF header and safetensors checkpoint ends in
success or a typed, one-line error — within 5 CPU seconds and 256 MB of address space above the worker's own,
enforced by `resource` limits in worker subprocesses. The long campaign is bench/fuzz.py (counts in
docs/SECURITY.md)."""

from __future__ import annotations

from pathlib import Path

import fuzzing
import pytest

CPU_SECONDS = 5
MEMORY_MB = 256


def _check(report: fuzzing.Report) -> None:
    print(report.summary(), dict(report.stages))
    assert report.bad == 0, report.summary()


def test_gguf_headers(tmp_path: Path) -> None:
    """Structured mutations (value-type swaps: text, NaN, infinities, lists where counts belong; huge counts,
    dimensions, types, offsets, hostile names), byte-level ones, and truncation at every offset of the dense
    seed's header (every 4th of the MoE seed's), through read_gguf + from_gguf + make_plan + `show`."""
    cases = [c for c in fuzzing.gguf_cases(seed=20, n_mutants=1200, truncate_every=1)
             if not c.label.startswith("moe: truncated at ") or int(c.label.rsplit(" ", 1)[1]) % 4 == 0]
    assert len(cases) > 3000
    report = fuzzing.run_cases("gguf", cases, tmp_path, cpu_seconds=CPU_SECONDS, memory_mb=MEMORY_MB)
    _check(report)
    assert report.stages["show"] >= 200  # the mutants also reach the planner and `show`, not only the parser


def test_safetensors_headers(tmp_path: Path) -> None:
    """Header mutations (dtype/shape/offset types, overlaps, negative offsets, deep nesting, lying lengths,
    hostile names), truncation at every header offset, hostile indexes; through Checkpoint + RowSource."""
    cases = list(fuzzing.safetensors_cases(seed=20, n_mutants=1500, truncate_every=1))
    assert len(cases) > 2000
    report = fuzzing.run_cases("safetensors", cases, tmp_path, cpu_seconds=CPU_SECONDS, memory_mb=MEMORY_MB)
    _check(report)
    assert report.stages["read"] >= 100


def test_the_harness_sees_hangs_and_crashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: an input that spins is killed by its CPU limit and reported as a hang, an untyped
    exception as a crash, each re-run alone; the inputs after them still run."""
    monkeypatch.setenv("LOCALSEEK_FUZZ_SELFTEST", "1")
    cases = [fuzzing.Case(label, {"model.safetensors": (content, 0)}, "")
             for label, content in [("fine", b"FINE"), ("spin", b"SPIN"), ("boom", b"BOOM"), ("eat", b"EAT!"),
                                    ("after", b"FINE")]]
    report = fuzzing.run_cases("safetensors", cases, tmp_path, cpu_seconds=1, memory_mb=64)
    outcomes = {f.label: f.outcome for f in report.failures}
    assert outcomes == {"spin": "hang", "boom": "crash", "eat": "blowup"}, report.summary()
    assert report.outcomes["typed"] == 2  # "fine" and "after": not safetensors files → typed errors
