"""Exact-answer accuracy of localseek-nano on held-out arithmetic, for any way of running the model.

The harness only needs a `generate(prompt) -> text` callable: `prompt` is the chat template's rendering of
one question (it ends with `<｜Assistant｜><think>\\n`), `text` is what the model wrote after it (greedy,
up to end-of-sentence). `llama_generate` builds such a callable for a GGUF through llama-cpp-python; the
training package builds one for the torch model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from localseek.nano.problems import Problem, eval_problems, extract_answer, render_prompt

Generate = Callable[[str], str]
GenerateMany = Callable[[Sequence[str]], list[str]]

# The longest worked solution (3-digit × 2-digit with carries everywhere) is ~300 tokens.
MAX_NEW_TOKENS = 400


@dataclass
class Result:
    n: int
    correct: int
    by_op: dict[str, tuple[int, int]] = field(default_factory=dict)  # op -> (correct, total)
    failures: list[tuple[Problem, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def summary(self) -> str:
        ops = ", ".join(f"{op} {c}/{t}" for op, (c, t) in sorted(self.by_op.items()))
        return f"{self.correct}/{self.n} = {100 * self.accuracy:.1f}% ({ops})"


def score(problems: Sequence[Problem], outputs: Sequence[str]) -> Result:
    total, good = Counter(), Counter()
    failures = []
    for p, out in zip(problems, outputs, strict=True):
        total[p.op] += 1
        if extract_answer(out) == p.answer:
            good[p.op] += 1
        else:
            failures.append((p, out))
    return Result(
        n=len(problems),
        correct=sum(good.values()),
        by_op={op: (good[op], total[op]) for op in total},
        failures=failures,
    )


def evaluate_many(generate_many: GenerateMany, problems: Sequence[Problem] | None = None,
                  batch_size: int = 100) -> Result:
    """Accuracy with a batched generator (a list of prompts in, a list of completions out)."""
    problems = list(problems) if problems is not None else eval_problems()
    outputs: list[str] = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        outputs.extend(generate_many([render_prompt(p.question) for p in chunk]))
    return score(problems, outputs)


def evaluate(generate: Generate, problems: Sequence[Problem] | None = None) -> Result:
    """Accuracy with a one-prompt-at-a-time generator."""
    return evaluate_many(lambda prompts: [generate(p) for p in prompts], problems)


def llama_generate(llm, max_new_tokens: int = MAX_NEW_TOKENS) -> Generate:
    """A greedy `generate` for a `llama_cpp.Llama` (the prompt's special tokens are parsed as such)."""

    import llama_cpp

    def generate(prompt: str) -> str:
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        out = bytearray()
        for i, token in enumerate(llm.generate(tokens, temp=0.0, top_k=1, reset=True)):
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or i >= max_new_tokens:
                break
            out += llm.detokenize([token], special=True)
        return out.decode("utf-8", errors="replace")

    return generate
