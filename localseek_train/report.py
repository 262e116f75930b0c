"""Markdown tables of a training run (for docs/NANO.md): `python -m localseek_train.report build/nano`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def curve_table(log_dir: Path, every: int = 250) -> str:
    rows = [json.loads(line) for line in (log_dir / "train_log.jsonl").read_text().splitlines()]
    acc = {r["step"]: r["heldout_acc_100"] for r in rows if "heldout_acc_100" in r}
    lines = ["| step | elapsed (s) | lr | loss | MTP loss | tokens/s | max expert load | held-out acc (100) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "loss" in r and (r["step"] % every == 0 or r["step"] in (25, 100)):
            a = f"{100 * acc[r['step']]:.0f}%" if r["step"] in acc else ""
            lines.append(f"| {r['step']} | {r['elapsed_s']:.0f} | {r['lr']:.5f} | {r['loss']:.4f} | "
                         f"{r['mtp_loss']:.4f} | {r['tok_per_s']} | {r['max_expert_load']:.2f} | {a} |")
    return "\n".join(lines)


def main() -> int:
    log_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "build/nano")
    print(curve_table(log_dir))
    metrics = log_dir / "metrics.json"
    if metrics.exists():
        print("\n```json\n" + metrics.read_text().strip() + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
