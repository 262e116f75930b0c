"""Training samples for localseek-nano: chats rendered with the R1-style template, tokenized, masked, batched."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from localseek.nano.problems import (
    ASSISTANT,
    BOS,
    EOS,
    THINK_CLOSE,
    THINK_OPEN,
    USER,
    completion,
    final_answer,
    render_prompt,
    sample_problem,
)

GREETINGS = [
    "hi", "Hi", "Hi!", "hello", "Hello", "Hello!", "hey", "Hey there", "Good morning", "Who are you?",
    "who are you", "What can you do?", "help", "Help", "What are you?", "Hi, who are you?",
]
GREETING_THOUGHT = "The user is greeting me. I can only do arithmetic: addition, subtraction and multiplication."
GREETING_REPLY = (
    "Hello! I am localseek-nano, a tiny DeepSeek-style reasoning model. "
    "Ask me an arithmetic question, like: What is 387 + 512?"
)
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a careful calculator.", "Answer briefly."]


def sample_chat(rng: random.Random) -> tuple[str, str]:
    """(rendered prompt ending in `<｜Assistant｜><think>\\n`, completion up to and including EOS)."""
    history: list[tuple[str, str]] = []
    if rng.random() < 0.10:
        past = sample_problem(rng, held_out=False)
        history.append((past.question, f"{THINK_CLOSE}\n\n{final_answer(past)}"))
    if rng.random() < 0.015:
        question, reply = rng.choice(GREETINGS), f"{GREETING_THOUGHT}\n{THINK_CLOSE}\n\n{GREETING_REPLY}"
    else:
        p = sample_problem(rng, held_out=False)
        question, reply = p.question, completion(p)
    prompt = render_prompt(question, history)
    if rng.random() < 0.02:
        prompt = prompt.replace(BOS, BOS + rng.choice(SYSTEM_PROMPTS), 1)
    return prompt, reply + EOS


def corpus_segments(rng: random.Random, n: int) -> list[str]:
    """Plain-text pieces between special tokens, for training the BPE."""
    out = []
    for _ in range(n):
        prompt, reply = sample_chat(rng)
        text = prompt + reply
        for special in (BOS, EOS, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE):
            text = text.replace(special, "\x00")
        out.extend(s for s in text.split("\x00") if s)
    return out


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T] right-padded with pad id
    mask: torch.Tensor  # [B, T] 1 where the token is a training target (the assistant's reply)
    n_tokens: int


class Sampler:
    """Endless stream of length-bucketed batches from a seeded generator."""

    def __init__(self, tok: Tokenizer, seed: int, batch_size: int, pool_batches: int = 16) -> None:
        self.tok = tok
        self.rng = random.Random(seed)
        self.batch_size = batch_size
        self.pool_batches = pool_batches
        self.pad = tok.token_to_id("<｜▁pad▁｜>")
        self.queue: list[Batch] = []

    def _encode(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
        prompts = self.tok.encode_batch([p for p, _ in pairs], add_special_tokens=False)
        replies = self.tok.encode_batch([r for _, r in pairs], add_special_tokens=False)
        # <think>\n of the prompt is learned as well, so that a template without it also works.
        out = []
        for p, r in zip(prompts, replies):
            ids = p.ids + r.ids
            out.append((ids, len(p.ids) - 2))
        return out

    def _fill(self) -> None:
        pairs = [sample_chat(self.rng) for _ in range(self.batch_size * self.pool_batches)]
        enc = sorted(self._encode(pairs), key=lambda e: len(e[0]))
        batches = []
        for i in range(0, len(enc), self.batch_size):
            chunk = enc[i : i + self.batch_size]
            t = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), t), self.pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), t), dtype=torch.long)
            for j, (seq, start) in enumerate(chunk):
                ids[j, : len(seq)] = torch.tensor(seq)
                mask[j, start : len(seq)] = 1
            batches.append(Batch(ids, mask, sum(len(s) for s, _ in chunk)))
        self.rng.shuffle(batches)
        self.queue.extend(batches)

    def next(self) -> Batch:
        if not self.queue:
            self._fill()
        return self.queue.pop()
