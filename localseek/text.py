"""Text from files and servers made safe to print: no terminal escape sequences, no invisible reordering.

Anything a model file, a mirror or a chat template says (an architecture name, a general.name, a template, a
tensor name in an error) may carry ANSI escape sequences, carriage returns or bidi overrides that would rewrite
what the terminal shows. `printable` turns every such character into a visible escape (`\\x1b`, `\\u202e`), so
the text is shown for what it is. Rich markup is a separate matter: the faces print with `markup=False` or
escape with `rich.markup.escape` (this module imports nothing of Rich; core code may use it too).
"""

from __future__ import annotations

import unicodedata

# Format characters that change how the *surrounding* text is laid out (Trojan-source style spoofing).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, multiline: bool = False, limit: int | None = None) -> str:
    """`text` (any value; non-strings through `str`) with control characters, bidi overrides and line/paragraph
    separators shown as escapes. `multiline` keeps newlines and tabs; `limit` cuts to that many characters
    (plus "…")."""
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "…"
    out = []
    for ch in s:
        if multiline and ch in "\n\t":
            out.append(ch)
        elif ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


__all__ = ["printable"]
