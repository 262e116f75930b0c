"""Write tests/data/nano_tokens.json: texts and the ids the shipped tokenizer.json gives them (HF tokenizers).

The test suite (which has no `tokenizers`) checks that llama.cpp, reading the same vocabulary with the
`deepseek-v3` pre-tokenizer, produces exactly these ids.  Run after training:

    python -m localseek_train.golden
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from tokenizers import Tokenizer

from localseek.nano import CHECKPOINT
from localseek.nano.problems import completion, render_prompt, sample_problem
from localseek_train.data import sample_chat

EXTRA = [
    "What is 387 + 512?", "Compute 48 × 27.", "915 - 438 = ?", "915-438=?", "  spaces   and\ttabs \n\n\nnewlines ",
    "1234567890 12 123 1234", "3.14159 and -42, also 1,000,000!", "Ünïcödé ＋ − × ÷ → ‘quotes’ “double”",
    "中文字符和日本語のテキスト", "emoji 🙂 done", "it's we've they'll I'M", "<think>\nx\n</think>\n\nanswer",
    "a<｜User｜>b<｜Assistant｜>c", "\r\nwindows\r\nlines", "x=(a+b)*c/d-e^f", "@user #tag $5 %20 &amp;",
]


def main() -> int:
    tok = Tokenizer.from_file(str(CHECKPOINT / "tokenizer.json"))
    rng = random.Random(99)
    texts = list(EXTRA)
    for _ in range(40):
        prompt, reply = sample_chat(rng)
        texts.append(prompt + reply)
    for _ in range(20):
        p = sample_problem(rng, held_out=True)
        texts.append(render_prompt(p.question) + completion(p))
    samples = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
    out = Path(__file__).resolve().parent.parent / "tests" / "data" / "nano_tokens.json"
    out.write_text(json.dumps(samples, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(samples)} samples to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
