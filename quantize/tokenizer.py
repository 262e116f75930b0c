"""tokenizer.json / tokenizer_config.json / generation_config.json → GGUF vocabulary, merges, special tokens,
chat template — without transformers.

Like llama.cpp's converter: the token list is padded to config.json's `vocab_size` with `[PAD<i>]` (UNUSED)
entries; added tokens become CONTROL when marked special (or when they look like `<｜…｜>` / `<|…|>`), else
USER_DEFINED. `tokenizer.ggml.pre` — which pre-tokenizer regexes llama.cpp applies — is recognised from the
pre-tokenizer that tokenizer.json itself declares, with the architecture's usual value as the fallback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import gguf

from quantize.errors import SourceError

log = logging.getLogger(__name__)


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    pre: str
    merges: list[str]


def _looks_special(token: str) -> bool:
    return (
        (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or token in ("<pad>", "<mask>")
    )


def _regexes(node: object) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "Split":
            pat = node.get("pattern", {})
            out.append(pat.get("Regex") or pat.get("String") or "")
        if node.get("type") == "Digits":
            out.append("<digits>")
        for v in node.values():
            if isinstance(v, (list, dict)):
                out += _regexes(v)
    elif isinstance(node, list):
        for v in node:
            out += _regexes(v)
    return out


def detect_pre(tokenizer: dict, fallback: str) -> str:
    """Name llama.cpp's pre-tokenizer from the regexes tokenizer.json declares."""
    regexes = _regexes(tokenizer.get("pre_tokenizer") or {})
    joined = "\n".join(regexes)
    specials = {t.get("content", "") for t in tokenizer.get("added_tokens", [])}
    deepseek_specials = any("begin▁of▁sentence" in s for s in specials)
    if "\\p{N}{1,3}" in regexes and any("[一-龥" in r for r in regexes):
        return "deepseek-v3"
    if "[\r\n]" in regexes and "<digits>" in regexes:
        return "deepseek-llm"
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in joined:
        if "\\p{N}{1,3}" in joined:
            return "llama-bpe"
        if "\\p{N}|" in joined:
            return "deepseek-r1-qwen" if deepseek_specials and _is_qwen2_distill(tokenizer) else "qwen2"
    return fallback


def _is_qwen2_distill(tokenizer: dict) -> bool:
    # R1-Distill-Qwen keeps Qwen's regex but swaps in DeepSeek's special tokens; llama.cpp names it apart.
    return not any(t.get("content") == "<|im_start|>" for t in tokenizer.get("added_tokens", []))


def read_vocab(model_dir: Path, vocab_size: int | None, fallback_pre: str, arch_name: str = "") -> Vocab:
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise SourceError(f"{path} is missing; localseek needs the model's tokenizer.json to convert it.")
    try:
        tok = json.loads(path.read_text(encoding="utf-8"))
        model = tok["model"]
    except (ValueError, KeyError):
        raise SourceError(f"{path} is not a valid tokenizer.json; download it again.") from None
    if model.get("type") != "BPE":
        raise SourceError(
            f"{path.name} has a {model.get('type')} model; only byte-level BPE tokenizers are supported."
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tok.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = int(t["id"])
    n = max(vocab.values()) + 1
    if vocab_size is not None:
        if vocab_size < n:
            raise SourceError(
                f"tokenizer.json has token id {n - 1} but config.json says vocab_size {vocab_size}."
            )
        n = vocab_size
    reverse = {i: s for s, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        s = reverse.get(i)
        if s is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif s in added:
            special = added[s].get("special", False) or _looks_special(s)
            tokens.append(s)
            types.append(int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(s)
            types.append(int(gguf.TokenType.NORMAL))
    merges = model.get("merges") or []
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return Vocab(tokens, types, detect_pre(tok, fallback_pre), merges)


def add_to_gguf(w: gguf.GGUFWriter, model_dir: Path, vocab: Vocab) -> None:
    """Vocabulary, merges, special-token ids, add_bos/eos, chat template (gguf.SpecialVocab reads the
    tokenizer_config.json / generation_config.json / config.json details exactly as llama.cpp's converter)."""
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    vocab_log = logging.getLogger("gguf.vocab")
    level = vocab_log.level
    vocab_log.setLevel(logging.ERROR)  # its TemplateProcessing heuristics warn on every DeepSeek tokenizer
    try:
        special = gguf.SpecialVocab(Path(model_dir), load_merges=True, n_vocab=len(vocab.tokens))
    finally:
        vocab_log.setLevel(level)
    if not special.merges and vocab.merges:
        special.merges = vocab.merges
    special.add_to_gguf(w, quiet=True)
