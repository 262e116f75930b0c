"""Arithmetic problems for localseek-nano: generation, worked reasoning, chat rendering, answer checking.

Pure Python (no torch, no tokenizer library) so that the evaluation harness runs wherever localseek runs.

Three kinds of problem: addition and subtraction of numbers up to 4 digits, multiplication of numbers up to
3 digits by numbers up to 2 digits. The reasoning is written column by column, the way it is done on paper:
every step is a one-digit fact plus a carry (or borrow), and the digits of the result are collected in a
running partial result so that the final answer is always a copy, never a mental reversal.

A fixed hash of the unordered operand pair decides whether a problem is held out: training never sees a
held-out pair (in either order or phrasing), and the evaluation problems are drawn only from held-out pairs.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

OPS = ("+", "-", "×")
HELD_OUT_PERCENT = 5

# R1-style chat template: system prompt first, past reasoning stripped, generation prompt opens <think>.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% endif %}{% endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Problem:
    """One question: `a op b`, asked as `question`."""

    op: str
    a: int
    b: int
    question: str

    @property
    def answer(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "×": self.a * self.b}[self.op]

    @property
    def canonical(self) -> str:
        return f"{self.a} {self.op} {self.b}"


def is_held_out(op: str, a: int, b: int) -> bool:
    """True for the ~5% of operand pairs reserved for evaluation (order-independent)."""
    lo, hi = min(a, b), max(a, b)
    return zlib.crc32(f"{op}|{lo}|{hi}".encode()) % 100 < HELD_OUT_PERCENT


# ---------------------------------------------------------------- worked reasoning


def _digits(n: int, width: int) -> list[int]:
    """Digits of n from the ones place up, padded with zeros to `width`."""
    return [(n // 10**i) % 10 for i in range(width)]


def _add_lines(a: int, b: int) -> list[str]:
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width), _digits(b, width)
    lines, partial, carry = [], "", 0
    for x, y in zip(da, db):
        s = x + y + carry
        partial = str(s % 10) + partial
        lines.append(f"{x}+{y}+{carry}={s}, carry {s // 10} → {partial}")
        carry = s // 10
    if carry:
        partial = str(carry) + partial
        lines.append(f"carry {carry} → {partial}")
    return lines


def _sub_lines(a: int, b: int) -> list[str]:
    """Column subtraction a - b for a >= b."""
    width = len(str(a))
    da, db = _digits(a, width), _digits(b, width)
    lines, partial, borrow = [], "", 0
    for x, y in zip(da, db):
        d = x - y - borrow
        if d < 0:
            partial = str(d + 10) + partial
            lines.append(f"{x}-{y}-{borrow}={d}+10={d + 10}, borrow 1 → {partial}")
            borrow = 1
        else:
            partial = str(d) + partial
            lines.append(f"{x}-{y}-{borrow}={d}, borrow 0 → {partial}")
            borrow = 0
    if len(partial) > 1 and partial.startswith("0"):
        lines.append(f"{partial} = {int(partial)}")
    return lines


def _mul_digit_lines(a: int, d: int) -> list[str]:
    """a × d for one digit d, column by column."""
    if d == 0:
        return [f"{a}×0=0"]
    lines, partial, carry = [], "", 0
    for x in _digits(a, len(str(a))):
        p = x * d + carry
        partial = str(p % 10) + partial
        lines.append(f"{x}×{d}+{carry}={p}, carry {p // 10} → {partial}")
        carry = p // 10
    if carry:
        partial = str(carry) + partial
        lines.append(f"carry {carry} → {partial}")
    return lines


def _mul_lines(a: int, b: int) -> list[str]:
    """a × b where b has at most 2 digits (callers put the shorter number second)."""
    if b < 10:
        return [f"{a}×{b}:"] + _mul_digit_lines(a, b)
    ones, tens = b % 10, b // 10
    lines = [f"{a}×{ones}:"] + _mul_digit_lines(a, ones)
    lines += [f"{a}×{tens}:"] + _mul_digit_lines(a, tens)
    p1, p2 = a * ones, a * tens * 10
    lines.append(f"{a * tens}×10={p2}")
    lines.append(f"{p1}+{p2}:")
    lines += _add_lines(p1, p2)
    return lines


def reasoning(p: Problem) -> str:
    """The step-by-step work that goes inside <think>…</think> (no surrounding newlines)."""
    a, b = p.a, p.b
    head = f"{a}{p.op}{b}"
    if p.op == "+":
        lines = [head] + _add_lines(a, b)
    elif p.op == "-":
        if a >= b:
            lines = [head] + _sub_lines(a, b)
        else:
            lines = [head, f"{a}<{b}, so the result is negative: -({b}-{a})"] + _sub_lines(b, a)
    else:
        if len(str(b)) > len(str(a)):
            lines = [f"{head} = {b}×{a}"] + _mul_lines(b, a)
        else:
            lines = [head] + _mul_lines(a, b)
    return "\n".join(lines)


def final_answer(p: Problem) -> str:
    return f"{p.canonical} = {p.answer}"


def completion(p: Problem) -> str:
    """What the model writes after the generation prompt (which already holds `<think>\\n`)."""
    return f"{reasoning(p)}\n{THINK_CLOSE}\n\n{final_answer(p)}"


# ---------------------------------------------------------------- phrasings

_SYMBOLS = {"+": ["+", "+", "+", "＋"], "-": ["-", "-", "-", "−"], "×": ["×", "×", "*", "x", "X"]}
_WORDS = {"+": ["plus", "added to"], "-": ["minus", "take away"], "×": ["times", "multiplied by"]}
_EXPR_TEMPLATES = [
    "What is {e}?", "What is {e}?", "What's {e}?", "what is {e}", "Compute {e}.", "Compute {e}",
    "Calculate {e}.", "calculate {e}", "{e} = ?", "{e}=?", "{e} =", "{e}", "{e}?", "Evaluate {e}.",
    "How much is {e}?", "Please compute {e}.", "Can you work out {e}?", "Solve: {e}", "Find {e}.",
    "What does {e} equal?", "Work out {e}.", "Tell me {e}.", "Quick: {e}?", "What is {e} ?",
]
_VERBAL = {
    "+": ["What is the sum of {a} and {b}?", "Add {a} and {b}.", "Add {a} to {b}.", "What do you get if you add {a} and {b}?"],
    "-": ["Subtract {b} from {a}.", "What is {a} take away {b}?", "What do you get if you subtract {b} from {a}?"],
    "×": ["What is the product of {a} and {b}?", "Multiply {a} by {b}.", "Multiply {a} and {b}.",
          "What do you get if you multiply {a} by {b}?"],
}


def phrase(rng: random.Random, op: str, a: int, b: int) -> str:
    """A question about `a op b` in one of many everyday phrasings."""
    if rng.random() < 0.15:
        return rng.choice(_VERBAL[op]).format(a=a, b=b)
    if rng.random() < 0.2:
        sym = rng.choice(_WORDS[op])
        expr = f"{a} {sym} {b}"
    else:
        sym = rng.choice(_SYMBOLS[op])
        spacing = rng.random()
        expr = f"{a} {sym} {b}" if spacing < 0.6 else f"{a}{sym}{b}" if spacing < 0.9 else f"{a} {sym}{b}"
    text = rng.choice(_EXPR_TEMPLATES).format(e=expr)
    if rng.random() < 0.05:
        text = text + " "
    return text


# ---------------------------------------------------------------- sampling


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _operands(rng: random.Random, op: str) -> tuple[int, int]:
    if op in "+-":
        da, db = rng.choices([1, 2, 3, 4], weights=[1, 3, 4, 4], k=2)
        return _number(rng, da), _number(rng, db)
    da = rng.choices([1, 2, 3], weights=[1, 4, 4])[0]
    db = rng.choices([1, 2], weights=[2, 3])[0]
    a, b = _number(rng, da), _number(rng, db)
    return (a, b) if rng.random() < 0.7 else (b, a)


def sample_problem(rng: random.Random, *, held_out: bool) -> Problem:
    """A random problem from the training split (held_out=False) or the evaluation split (True)."""
    while True:
        op = rng.choices(OPS, weights=[3, 3, 4])[0]
        a, b = _operands(rng, op)
        if is_held_out(op, a, b) == held_out:
            return Problem(op, a, b, phrase(rng, op, a, b))


def eval_problems(n: int = 500, seed: int = 2024) -> list[Problem]:
    """The fixed evaluation set: n distinct held-out problems."""
    rng = random.Random(seed)
    seen: set[tuple[str, int, int]] = set()
    out: list[Problem] = []
    while len(out) < n:
        p = sample_problem(rng, held_out=True)
        if (p.op, p.a, p.b) not in seen:
            seen.add((p.op, p.a, p.b))
            out.append(p)
    return out


# ---------------------------------------------------------------- chat rendering and answers


def render_prompt(question: str, history: list[tuple[str, str]] = ()) -> str:
    """The chat template's output for past (question, answer) turns plus a new question, ready to generate.

    Equal to rendering CHAT_TEMPLATE with add_generation_prompt=True (a test checks this).
    """
    parts = [BOS]
    for q, a in history:
        kept = a.split(THINK_CLOSE)[-1]
        parts.append(f"{USER}{q}{ASSISTANT}{kept}{EOS}")
    parts.append(f"{USER}{question}{ASSISTANT}{THINK_OPEN}\n")
    return "".join(parts)


_INT = re.compile(r"-?\d+")


def extract_answer(output: str) -> int | None:
    """The integer a reply gives as its answer: the first one after the last '=' of the text after </think>."""
    if THINK_CLOSE not in output:
        return None
    answer = output.rsplit(THINK_CLOSE, 1)[1]
    if "=" in answer:
        answer = answer.rsplit("=", 1)[1]
    m = _INT.search(answer)
    return int(m.group()) if m else None
