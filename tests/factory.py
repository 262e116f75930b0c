"""Tiny, deterministic models for the tests: real GGUF files written with gguf-py.

Two kinds of weights, both seeded:
- `random`: plain Gaussian weights; output is gibberish but reproducible under greedy decoding.
- `scripted`: still a full transformer, but embeddings and the output head are built so that greedy
  decoding follows a fixed token chain (a "bigram" dominates the residual stream). After
  `<｜Assistant｜>` the model writes `SCRIPT_REASONING` inside `<think>…</think>`, then `SCRIPT_ANSWER`,
  then end-of-sentence — which lets end-to-end tests check how reasoning and answer are shown.

The vocabulary is a small byte-level BPE (GPT-2 byte alphabet + merges learned from a tiny corpus) with
DeepSeek's special tokens. Later factories (Hugging Face checkpoints) reuse `build_vocab()`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gguf
import numpy as np

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
PAD = "<｜▁pad▁｜>"
CONTROL_TOKENS = [BOS, EOS, USER, ASSISTANT, PAD]
USER_DEFINED_TOKENS = [THINK_OPEN, THINK_CLOSE]

# R1-style templates: past reasoning stripped; the "think" variant opens <think> in the prompt (R1-0528).
R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}"
    "{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)
R1_TEMPLATE_THINK = R1_TEMPLATE.replace(
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}",
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}",
)

SCRIPT_REASONING = "Hmm, the user says hello."
SCRIPT_ANSWER = "Hello! How can I help?"
# Token pieces (byte-level BPE alphabet: Ġ = space, Ċ = newline) of the scripted reply, each used once.
_SCRIPT_PIECES = [
    THINK_OPEN, "Ċ", "Hmm", ",", "Ġthe", "Ġuser", "Ġsays", "Ġhello", ".", THINK_CLOSE, "ĊĊ",
    "Hello", "!", "ĠHow", "Ġcan", "ĠI", "Ġhelp", "?", EOS,
]

_CORPUS = (
    "Hmm, the user says hello. Hello! How can I help? Let me think step by step about the problem. "
    "What is the answer? The answer is 42. Okay, so we need to add the numbers and carry the one. "
    "def main():\n    print('hello world')\n\nThis is a test of the tiny model that localseek builds.\n\n"
)


@cache
def byte_alphabet() -> tuple[str, ...]:
    """GPT-2's byte → printable-unicode table, index = byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    table = dict(zip(printable, codes))
    return tuple(chr(table[b]) for b in range(256))


def _encode_bytes(text: str) -> str:
    alphabet = byte_alphabet()
    return "".join(alphabet[b] for b in text.encode("utf-8"))


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]

    def id(self, piece: str) -> int:
        return self.tokens.index(piece)


@cache
def build_vocab(n_merges: int = 160, extra_pieces: tuple[str, ...] = ()) -> Vocab:
    """Byte alphabet + BPE merges learned (deterministically) from a small corpus + special tokens.
    `extra_pieces`: the pieces of another script (`TinyConfig.script`), each made a single token too; none (the
    default) gives the vocabulary every other tiny model shares."""
    words = []
    for chunk in _CORPUS.replace("\n", " \n ").split(" "):
        if chunk:
            words.append(_encode_bytes(" " + chunk if chunk != "\n" else "\n"))
    seqs = [list(w) for w in words]
    merges: list[tuple[str, str]] = []
    tokens = list(byte_alphabet())
    known = set(tokens)
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for s in seqs:
            pairs.update(zip(s, s[1:]))
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = best[0] + best[1]
        if merged not in known:
            tokens.append(merged)
            known.add(merged)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == best:
                    s[i : i + 2] = [merged]
                else:
                    i += 1
    # Make sure every scripted piece exists as a single token (added with its own merge chain).
    for piece in [*_SCRIPT_PIECES, *extra_pieces]:
        if piece in CONTROL_TOKENS or piece in USER_DEFINED_TOKENS or piece in known:
            continue
        prev = piece[0]
        for ch in piece[1:]:
            nxt = prev + ch
            if (prev, ch) not in merges:
                merges.append((prev, ch))
            if nxt not in known:
                tokens.append(nxt)
                known.add(nxt)
            prev = nxt
    n_normal = len(tokens)
    tokens += CONTROL_TOKENS + USER_DEFINED_TOKENS
    types = [gguf.TokenType.NORMAL] * n_normal + [gguf.TokenType.CONTROL] * len(CONTROL_TOKENS) + [
        gguf.TokenType.USER_DEFINED
    ] * len(USER_DEFINED_TOKENS)
    return Vocab(tokens=tokens, token_types=[int(t) for t in types], merges=[f"{a} {b}" for a, b in merges])


def byte_level(text: str) -> str:
    """`text` in the byte-level BPE alphabet (GPT-2's byte → character map), as a script piece must be written."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in keep}
    chars.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in chars)})
    return "".join(chars[b] for b in text.encode())


@dataclass(frozen=True)
class TinyConfig:
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    context_length: int = 2048
    weights: str = "scripted"  # or "random"
    think_in_prompt: bool = False
    seed: int = 0
    dtype: str = "f32"  # or "f16"
    chat_template: bool = True
    vocab_merges: int = 160  # another number gives another (incompatible) tokenizer
    split_max_tensors: int = 0  # >0: write a split model (stem-0000i-of-0000N.gguf, split.* metadata)
    loop_reasoning: bool = False  # scripted only: the reasoning repeats forever (for Ctrl-C and budget tests)
    # Scripted only: another reply, as token pieces in the byte-level alphabet (Ġ space, Ċ newline), each piece used
    # once (greedy decoding follows piece → next piece), ending with EOS; empty: the SCRIPT_* reply.
    script: tuple[str, ...] = ()
    loop: tuple[str, str] | None = None  # scripted only: piece A is followed by piece B instead (a reply that loops)
    template: str | None = None  # a chat template other than the R1 ones (e.g. a hybrid V3.1-style one)
    header_padding: int = 0  # bytes of one extra metadata string: a header as large as DeepSeek's (several MB)


def _write_vocab(writer: gguf.GGUFWriter, vocab: Vocab, pre: str) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.id(BOS))
    writer.add_eos_token_id(vocab.id(EOS))
    writer.add_pad_token_id(vocab.id(PAD))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def _scripted_embeddings(
    rng: np.random.Generator, vocab: Vocab, n_embd: int, loop_reasoning: bool = False,
    script: tuple[str, ...] = (), loop: tuple[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding and output matrices whose greedy bigram chain spells the scripted reply (`script`, else SCRIPT_*)."""
    pieces = list(script or _SCRIPT_PIECES)
    if len(set(pieces)) != len(pieces) or ASSISTANT in pieces:
        raise ValueError("a script uses each piece once (each token has one successor)")
    n_vocab = len(vocab.tokens)
    embd = rng.standard_normal((n_vocab, n_embd)).astype(np.float32)
    embd /= np.linalg.norm(embd, axis=1, keepdims=True)
    embd *= np.sqrt(n_embd)  # unit RMS, so RMSNorm leaves the direction (and scale) as is
    output = rng.standard_normal((n_vocab, n_embd)).astype(np.float32) * 0.02
    chain = [vocab.id(ASSISTANT)] + [vocab.id(p) for p in pieces]
    edges = [(chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
    if loop_reasoning:  # "." goes back to "Hmm" instead of closing the block: it reasons until stopped
        loop = (".", "Hmm")
    if loop is not None:
        edges = [(a, vocab.id(loop[1]) if a == vocab.id(loop[0]) else b) for a, b in edges]
    for prev, nxt in edges:
        output[nxt] += embd[prev] * (4.0 / np.sqrt(n_embd))
    return embd, output


def write_qwen2_gguf(path: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    """Write a tiny `qwen2` GGUF (the R1-Distill-Qwen layout, with q/k/v biases)."""
    vocab = build_vocab(cfg.vocab_merges, cfg.script)
    rng = np.random.default_rng(cfg.seed)
    n_vocab, d, hd = len(vocab.tokens), cfg.n_embd, cfg.n_embd // cfg.n_head
    tmp = path.with_name(path.name + ".part")
    if cfg.split_max_tensors:  # gguf-py names the parts after `path` and writes split.count/no/tensors.count
        tmp = path
    writer = gguf.GGUFWriter(str(tmp), "qwen2", split_max_tensors=cfg.split_max_tensors)
    writer.add_name(f"tiny-qwen2-{cfg.weights}")
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(d)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.n_ff)
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv(cfg.n_head_kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if cfg.dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _write_vocab(writer, vocab, "deepseek-r1-qwen")
    if cfg.chat_template:
        writer.add_chat_template(cfg.template or (R1_TEMPLATE_THINK if cfg.think_in_prompt else R1_TEMPLATE))
    if cfg.header_padding:
        writer.add_string("tiny.padding", "x" * cfg.header_padding)

    wdtype = np.float32 if cfg.dtype == "f32" else np.float16
    scale = 0.02 if cfg.weights == "scripted" else 0.2

    def w(*shape: int, s: float = scale) -> np.ndarray:
        return (rng.standard_normal(shape) * s).astype(wdtype)

    if cfg.weights == "scripted":
        embd, output = _scripted_embeddings(rng, vocab, d, cfg.loop_reasoning, cfg.script, cfg.loop)
    else:
        embd = rng.standard_normal((n_vocab, d)).astype(np.float32)
        output = rng.standard_normal((n_vocab, d)).astype(np.float32) * 0.5
    writer.add_tensor("token_embd.weight", embd.astype(wdtype))
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", w(cfg.n_head * hd, d))
        writer.add_tensor(p + "attn_q.bias", w(cfg.n_head * hd).astype(np.float32))
        writer.add_tensor(p + "attn_k.weight", w(cfg.n_head_kv * hd, d))
        writer.add_tensor(p + "attn_k.bias", w(cfg.n_head_kv * hd).astype(np.float32))
        writer.add_tensor(p + "attn_v.weight", w(cfg.n_head_kv * hd, d))
        writer.add_tensor(p + "attn_v.bias", w(cfg.n_head_kv * hd).astype(np.float32))
        writer.add_tensor(p + "attn_output.weight", w(d, cfg.n_head * hd))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", w(cfg.n_ff, d))
        writer.add_tensor(p + "ffn_up.weight", w(cfg.n_ff, d))
        writer.add_tensor(p + "ffn_down.weight", w(d, cfg.n_ff))
    writer.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    writer.add_tensor("output.weight", output.astype(wdtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if cfg.split_max_tensors:
        return sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))[0]
    tmp.replace(path)
    return path
