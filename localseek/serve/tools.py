"""Tool calls in DeepSeek's own tokens, and JSON grammars for `response_format` and `tool_choice`.

DeepSeek's templates (R1-0528, V3-0324, V3.1 and later) write a call as

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```<｜tool▁call▁end｜>…  (R1, V3)
    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>…                          (V3.1+)

followed by `<｜tool▁calls▁end｜>`. `parse_tool_calls` reads both; `call_grammar` forces the template's own form when
a request requires a call (`tool_choice`), with each tool's arguments constrained by its JSON schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from localseek.runtime.options import Grammar
from localseek.serve.errors import bad_request

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
MARKERS = (CALLS_BEGIN, CALL_BEGIN)  # where the answer stops and calls start

_R1_CALL = re.compile(
    re.escape(CALL_BEGIN) + r"\s*(?:function)?" + re.escape(SEP) + r"\s*(?P<name>[^\n`]+?)\s*\n```(?:json)?\s*\n?"
    r"(?P<args>.*?)\s*```\s*" + re.escape(CALL_END), re.DOTALL,
)
_V31_CALL = re.compile(
    re.escape(CALL_BEGIN) + r"\s*(?P<name>[^<\n]+?)\s*" + re.escape(SEP) + r"(?P<args>.*?)" + re.escape(CALL_END),
    re.DOTALL,
)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function",
                               "function": {"name": self.name, "arguments": self.arguments}}
        if index is not None:
            out["index"] = index
        return out

    def ollama(self) -> dict[str, Any]:
        try:
            args = json.loads(self.arguments)
        except ValueError:
            args = {}
        return {"function": {"name": self.name, "arguments": args if isinstance(args, dict) else {}}}


class CallParser:
    """Tool calls as the text after the first marker arrives: `feed` returns the calls completed by that piece (each
    once, with the id it keeps), `calls` all of them so far; text that is not a call is ignored."""

    def __init__(self) -> None:
        self.text = ""
        self.pos = 0  # where the next call may begin
        self.calls: list[ToolCall] = []

    def feed(self, piece: str) -> list[ToolCall]:
        self.text += piece
        new = []
        while True:
            start = self.text.find(CALL_BEGIN, self.pos)
            if start < 0:
                break
            match = _R1_CALL.match(self.text, start) or _V31_CALL.match(self.text, start)
            if match is None:
                break  # not complete yet (or never: then nothing more is parsed)
            args = match["args"].strip()
            try:
                args = json.dumps(json.loads(args), ensure_ascii=False)  # normalised when it is JSON
            except ValueError:
                pass
            new.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", match["name"].strip(), args))
            self.pos = match.end()
        self.calls += new
        return new


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The calls in `text` (what follows the first marker), in order; text that is not a call is ignored."""
    return CallParser().feed(text)


def template_supports_tools(source: str) -> bool:
    return "tool_calls" in source or CALL_BEGIN in source


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _converter() -> Any:
    from llama_cpp.llama_grammar import SchemaConverter

    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def schema_grammar(schema: Any, param: str) -> Grammar:
    """A grammar for JSON that follows `schema` (llama.cpp's converter). A schema it cannot convert is a 400."""
    if not isinstance(schema, dict):
        raise bad_request("The JSON schema must be an object.", param)
    try:
        conv = _converter()
        conv.visit(conv.resolve_refs(schema, "request"), "")
        return Grammar(conv.format_grammar())
    except RecursionError:
        raise bad_request("The JSON schema nests too deeply to compile.", param) from None
    except Exception as exc:  # noqa: BLE001 — the converter raises bare Exceptions and asserts
        raise bad_request(f"The JSON schema cannot be compiled to a grammar: {exc or type(exc).__name__}.",
                          param) from None


JSON_OBJECT = {"type": "object"}


def call_grammar(tools: list[dict[str, Any]], name: str | None, template_source: str) -> Grammar:
    """A grammar that makes the reply one call (to `name`, or to any of `tools`) in the template's form."""
    chosen = [t for t in tools if name is None or t["function"]["name"] == name]
    if not chosen:
        raise bad_request(f"tool_choice names {name!r}, which is not among the tools.", "tool_choice")
    r1 = "```json" in template_source
    conv = _converter()
    alternatives = []
    for i, tool in enumerate(chosen):
        fn = tool["function"]
        params = fn.get("parameters") or JSON_OBJECT
        try:
            conv.visit(conv.resolve_refs(params, "tool"), f"args-{i}")
        except Exception as exc:  # noqa: BLE001
            raise bad_request(f"The parameters of tool {fn['name']!r} cannot be compiled to a grammar: {exc}.",
                              "tools") from None
        head = f"function{SEP}{fn['name']}\n```json\n" if r1 else f"{fn['name']}{SEP}"
        tail = "\n```" if r1 else ""
        alternatives.append(f"{_literal(head)} args-{i} {_literal(tail) if tail else ''}".strip())
    rules = conv.format_grammar()
    root = (f"call-root ::= {_literal(CALLS_BEGIN + CALL_BEGIN)} ( {' | '.join(alternatives)} ) "
            f"{_literal(CALL_END + CALLS_END)}\n")
    return Grammar(rules + "\n" + root, root="call-root")
