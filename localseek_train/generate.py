"""Batched greedy decoding with the torch model (left padding, KV cache), as a `generate_many` callable."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer
from transformers import DynamicCache

from localseek.nano.evaluate import MAX_NEW_TOKENS
from localseek_train.model import NanoModel


@torch.no_grad()
def greedy(model: NanoModel, prompts: list[list[int]], eos: int, pad: int,
           max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = 0.0, top_p: float = 1.0,
           seed: int = 0) -> list[list[int]]:
    """Greedy decoding, or nucleus sampling when temperature > 0 (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    lm = model.lm
    lm.eval()
    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=lm.config)
    out = lm(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True)
    done = torch.zeros(n, dtype=torch.bool)
    generated: list[list[int]] = [[] for _ in range(n)]
    next_pos = pos[:, -1:] + 1
    for _ in range(max_new_tokens):
        nxt = _pick(out.logits[:, -1], temperature, top_p, gen)
        for i in range(n):
            if not done[i]:
                if int(nxt[i]) == eos:
                    done[i] = True
                else:
                    generated[i].append(int(nxt[i]))
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones((n, 1), dtype=torch.long)], dim=1)
        out = lm(input_ids=nxt.unsqueeze(1), attention_mask=attn, position_ids=next_pos,
                 past_key_values=out.past_key_values, use_cache=True)
        next_pos = next_pos + 1
    return generated


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest prefix whose mass reaches top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=gen)
    return order.gather(-1, choice).squeeze(-1)


def torch_generate_many(model: NanoModel, tok: Tokenizer, max_new_tokens: int = MAX_NEW_TOKENS,
                        temperature: float = 0.0, top_p: float = 1.0, seed: int = 0):
    eos, pad = tok.token_to_id("<｜end▁of▁sentence｜>"), tok.token_to_id("<｜▁pad▁｜>")

    def generate_many(prompts: Sequence[str]) -> list[str]:
        enc = [tok.encode(p, add_special_tokens=False).ids for p in prompts]
        outs = greedy(model, enc, eos, pad, max_new_tokens, temperature, top_p, seed)
        return [tok.decode(o, skip_special_tokens=False) for o in outs]

    return generate_many
