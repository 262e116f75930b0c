"""Build localseek-nano's byte-level BPE tokenizer (tokenizer.json) the way DeepSeek-V3 ships its own.

The pre-tokenizer is DeepSeek-V3's: three isolating regex splits, then byte-level mapping without a regex —
exactly the splits llama.cpp applies for `tokenizer.ggml.pre = deepseek-v3` (src/llama-vocab.cpp,
LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM), so llama.cpp tokenizes a GGUF of this model as training did.

BPE merges are learned from the training distribution. Merges that would join digits are dropped so that
every digit is its own token (the column-by-column reasoning reads numbers one digit at a time).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from localseek.nano.problems import ASSISTANT, BOS, EOS, PAD, THINK_CLOSE, THINK_OPEN, USER

# The three regexes of llama.cpp's deepseek-v3 pre-tokenizer, in order.
PRE_TOKENIZER_REGEXES = (
    r"\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
)
# Ids 0, 1, 2 as in DeepSeek-V3 (BOS 0, EOS 1); chat tokens are appended after the BPE vocabulary.
LEADING_SPECIAL = (BOS, EOS, PAD)
# DeepSeek marks these added tokens "special": false; llama.cpp's converter makes them USER_DEFINED.
CHAT_TOKENS = (USER, ASSISTANT, THINK_OPEN, THINK_CLOSE)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in PRE_TOKENIZER_REGEXES]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
    return pre_tokenizers.Sequence([*splits, byte_level])


def _is_multi_digit(piece: str) -> bool:
    return len(piece) > 1 and piece.isascii() and piece.isdigit()


def build_tokenizer(corpus: list[str], vocab_size: int) -> Tokenizer:
    """Train the BPE on `corpus`, drop digit merges, renumber, add the chat tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=20,
        special_tokens=list(LEADING_SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    data = json.loads(tok.to_str())
    merges = [m if isinstance(m, list) else m.split(" ") for m in data["model"]["merges"]]
    merges = [m for m in merges if not _is_multi_digit(m[0] + m[1])]
    old_vocab = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for piece, _ in old_vocab:
        if not _is_multi_digit(piece):
            vocab[piece] = len(vocab)
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = merges
    data["added_tokens"] = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in LEADING_SPECIAL
    ]
    for t in CHAT_TOKENS:
        data["added_tokens"].append(
            {"id": len(vocab) + CHAT_TOKENS.index(t), "content": t, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False}
        )
    data["normalizer"] = None
    data["decoder"] = json.loads(decoders.ByteLevel().__getstate__())
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": BOS, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {BOS: {"id": BOS, "ids": [0], "tokens": [BOS]}},
    }
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def tokenizer_config(chat_template: str, model_max_length: int) -> dict:
    """tokenizer_config.json in DeepSeek-V3's shape (LlamaTokenizerFast, BOS added, EOS not)."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": model_max_length,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": chat_template,
    }


def save_tokenizer(tok: Tokenizer, out: Path) -> None:
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True), encoding="utf-8")


def training_corpus(make_text, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [make_text(rng) for _ in range(n)]
