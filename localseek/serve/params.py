"""Reading a request body's fields: each wrong type or out-of-range value is a 400 that names the field."""

from __future__ import annotations

import math
import re
from typing import Any

from localseek.serve.errors import bad_request

_UNSET = object()


def number(body: dict[str, Any], key: str, lo: float, hi: float, *, param: str | None = None) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"`{key}` must be a number.", param or key)
    if not lo <= value <= hi:
        raise bad_request(f"`{key}` must be between {lo:g} and {hi:g}, not {value:g}.", param or key)
    return float(value)


def integer(body: dict[str, Any], key: str, lo: int, hi: int | None = None, *,
            param: str | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise bad_request(f"`{key}` must be an integer.", param or key)
    if value < lo or (hi is not None and value > hi):
        limit = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise bad_request(f"`{key}` must be {limit}, not {value}.", param or key)
    return int(value)


def boolean(body: dict[str, Any], key: str, *, param: str | None = None) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"`{key}` must be true or false.", param or key)
    return value


def string(body: dict[str, Any], key: str, *, param: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"`{key}` must be a string.", param or key)
    return value


def obj(body: dict[str, Any], key: str, *, param: str | None = None) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"`{key}` must be an object.", param or key)
    return value


def stops(body: dict[str, Any], key: str = "stop", most: int = 16) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise bad_request(f"`{key}` must be a string or a list of strings.", key)
    if len(value) > most:
        raise bad_request(f"`{key}` takes at most {most} strings.", key)
    return tuple(s for s in value if s)


_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(value: Any, what: str) -> float | None:
    """Ollama's keep-alive: "5m", "1h", "30s", a number of seconds; negative = forever (None)."""
    if isinstance(value, bool):
        raise bad_request(f"`{what}` must be a duration like 5m or a number of seconds.", what)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m[1]) * _UNIT[m[2]]
    else:
        raise bad_request(f"`{what}` must be a duration like 5m or a number of seconds.", what)
    return None if seconds < 0 else seconds


def message_text(content: Any, index: int) -> str | None:
    """A message's content: a string, or OpenAI's list of text parts (other parts are refused)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request("Only text content parts are supported (no images or audio).",
                                  f"messages[{index}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request("A message's content must be a string or a list of text parts.", f"messages[{index}].content")


ROLES = ("system", "user", "assistant", "tool", "developer")


def messages(body: dict[str, Any], key: str = "messages") -> list[dict[str, Any]]:
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise bad_request(f"`{key}` must be a non-empty list of messages.", key)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_request(f"messages[{i}] needs a role: one of {', '.join(ROLES)}.", f"{key}[{i}]")
        msg = {k: v for k, v in m.items() if k not in ("content", "reasoning_content", "reasoning", "thinking")}
        if msg["role"] == "developer":
            msg["role"] = "system"
        msg["content"] = message_text(m.get("content"), i)
        if msg["content"] is None and not m.get("tool_calls"):
            msg["content"] = ""
        out.append(msg)
    return out
