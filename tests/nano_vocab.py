"""Helpers for the nano tests: a vocab-only GGUF built from a Hugging Face tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

import gguf


def write_vocab_gguf(tokenizer_json: Path, out: Path, pre: str = "deepseek-v3") -> Path:
    """A GGUF holding only the tokenizer of `tokenizer_json` (byte-level BPE, llama.cpp's `gpt2` model).

    Added tokens marked special become CONTROL, the others USER_DEFINED — what llama.cpp's converter does.
    The architecture is a minimal `llama` so that llama.cpp can open it with vocab_only.
    """
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    by_id = {i: (t, gguf.TokenType.NORMAL) for t, i in data["model"]["vocab"].items()}
    for added in data["added_tokens"]:
        kind = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError("token ids are not contiguous")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    tmp = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_context_length(256)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(8)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list([by_id[i][0] for i in range(len(by_id))])
    w.add_token_types([int(by_id[i][1]) for i in range(len(by_id))])
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_pad_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out
