#!/usr/bin/env python3
"""Write a synthetic DeepSeek-V3-layout GGUF with an MTP block of known quality, to measure what MTP drafting costs
and gains on this machine before a trained model is at hand.

    python bench/mtp_model.py /tmp/mtp-ideal.gguf                  # MTP head always right (upper bound)
    python bench/mtp_model.py /tmp/mtp-wrong3.gguf --wrong-every 3 # MTP head wrong on every third step
    localseek bench /tmp/mtp-ideal.gguf -p 0 -n 128 -t 1 --draft-max 3 [--draft-fixed]

The model (tests/deepseek_factory.py, "scripted" weights with a cyclic chain): 8 main layers + 1 MTP layer, hidden
1024, q-LoRA 384 / kv-LoRA 256 MLA, 8 routed experts (2 used) + 1 shared, F16, ≈0.37 GB; greedy decoding cycles
through 64 tokens forever, and the MTP block predicts the same cycle one step ahead. Random weights otherwise, so
the acceptance rate is set by construction; the timing (verification batches, MoE expert spread, the MTP layer's
cost) is real.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from deepseek_factory import TinyDeepseekConfig, write_deepseek2_gguf

SHAPE = {"n_layer": 8, "n_dense": 1, "n_embd": 1024, "n_head": 8, "q_lora_rank": 384, "kv_lora_rank": 256,
         "qk_nope": 64, "qk_rope": 32, "v_head": 64, "n_ff": 2816, "n_expert": 8, "n_expert_used": 2,
         "n_expert_shared": 1, "n_ff_exp": 704, "dtype": "f16", "cycle": 64}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--wrong-every", type=int, default=0, help="the MTP head mispredicts every n-th step")
    args = ap.parse_args()
    path = write_deepseek2_gguf(args.out, TinyDeepseekConfig(**SHAPE, mtp_wrong_every=args.wrong_every))
    print(f"{path} ({path.stat().st_size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
