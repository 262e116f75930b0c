"""The long fuzzing campaign behind docs/SECURITY.md: many more inputs than the suite's tests/test_fuzz.py, the
same generators and limits (tests/fuzzing.py), plus config.json mutations through the converter's planning.

    python bench/fuzz.py                       # defaults below; ~8 minutes on 2 busy cores
    python bench/fuzz.py --gguf 50000 --seed 7 --json out.json

Every input must end in success or a typed error within 5 CPU seconds and 256 MB of address space above the
worker's own; the counts (inputs, typed errors, crashes, hangs, blow-ups) are printed per parser, with each
failing input re-run alone and reported with where it failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import fuzzing
import hf_factory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--gguf", type=int, default=20000, help="GGUF mutants (plus truncation at every header offset)")
    ap.add_argument("--safetensors", type=int, default=20000, help="safetensors mutants (plus every truncation)")
    ap.add_argument("--config", type=int, default=1000, help="config.json mutants")
    ap.add_argument("--cpu-seconds", type=int, default=5)
    ap.add_argument("--memory-mb", type=int, default=256)
    ap.add_argument("--json", type=Path, help="write the counts here")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="localseek-fuzz-") as tmp:
        work = Path(tmp)
        models = [hf_factory.write_qwen2(work / "qwen2", n_shards=1), hf_factory.write_deepseek_v3(work / "v3")]
        runs = {
            "gguf": list(fuzzing.gguf_cases(args.seed, args.gguf)),
            "safetensors": list(fuzzing.safetensors_cases(args.seed, args.safetensors)),
            "config": list(fuzzing.config_cases(args.seed, args.config, models)),
        }
        for kind, cases in runs.items():
            report = fuzzing.run_cases(kind, cases, work / kind, cpu_seconds=args.cpu_seconds,
                                       memory_mb=args.memory_mb, batch=2500)
            print(f"{kind}: {report.summary()}\n  reached: {dict(report.stages)}", flush=True)
            results[kind] = {"inputs": report.inputs, **dict(report.outcomes), "seconds": round(report.seconds, 1),
                             "failures": [f.__dict__ for f in report.failures]}
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, **results}, indent=2))
    return 1 if any(r.get(k) for r in results.values() for k in ("crash", "hang", "blowup", "died", "badmsg")) else 0


if __name__ == "__main__":
    sys.exit(main())
