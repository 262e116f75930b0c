"""Tiny models for the chat tests, built on tests/factory.py (written once per session directory)."""

from __future__ import annotations

from pathlib import Path

from factory import TinyConfig, write_qwen2_gguf

# DeepSeek-V3.1's template, cut down to what decides reasoning: a `thinking` flag (default off) chooses
# between "<think>" (reason) and "<think></think>" (answer directly) after the assistant tag.
V31_TEMPLATE = (
    "{%- if not thinking is defined -%}{%- if enable_thinking is defined -%}{%- set thinking = enable_thinking -%}"
    "{%- else -%}{%- set thinking = false -%}{%- endif -%}{%- endif -%}"
    "{%- set ns = namespace(system_prompt='') -%}"
    "{%- for message in messages -%}{%- if message['role'] == 'system' -%}"
    "{%- set ns.system_prompt = ns.system_prompt + message['content'] -%}{%- endif -%}{%- endfor -%}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '<｜User｜>' + message['content'] }}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{% set content = message['content'] %}"
    "{%- if '</think>' in content -%}{%- set content = content.split('</think>', 1)[1] -%}{%- endif -%}"
    "{{ '<｜Assistant｜></think>' + content + '<｜end▁of▁sentence｜>' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<｜Assistant｜>' }}"
    "{%- if not thinking -%}{{ '<think></think>' }}{%- else -%}{{ '<think>' }}{%- endif -%}{%- endif %}"
)


def _cached(path: Path, cfg: TinyConfig) -> Path:
    return path if path.exists() else write_qwen2_gguf(path, cfg)


def loop_model(model_dir: Path) -> Path:
    """Scripted weights whose reasoning never ends ("Hmm, the user says hello." again and again) until the
    context is full, a budget closes it, or the user stops it; after `</think>` it answers SCRIPT_ANSWER."""
    return _cached(model_dir / "tiny-loop.gguf", TinyConfig(loop_reasoning=True, context_length=32768))


def hybrid_model(model_dir: Path) -> Path:
    """Scripted weights with a V3.1-style hybrid template (reasoning switched by `thinking`)."""
    return _cached(model_dir / "tiny-hybrid.gguf", TinyConfig(template=V31_TEMPLATE))
