"""Typed errors of the conversion library. Each message says what went wrong and what to do next.

The library never prints or exits; callers (the `localseek quantize` command) turn these into one line.
"""

from __future__ import annotations


def shown(text: object, limit: int = 80) -> str:
    """A name or value from a (possibly hostile) file as it goes into a message: as it is when it is plain
    printable text, else quoted with control and invisible characters escaped (repr's rules); cut to `limit`."""
    s = text if isinstance(text, str) else str(text)
    if not s.isprintable() or not s:
        s = repr(s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


class QuantizeError(Exception):
    """Base class of every error `quantize` raises on bad input or a failed conversion."""


class SourceError(QuantizeError):
    """The source checkpoint is missing files, damaged, or inconsistent."""


class UnsupportedArchitecture(QuantizeError):
    """config.json names an architecture this version cannot convert."""


class UnsupportedType(QuantizeError):
    """The requested quantization type is unknown or cannot be produced from this source."""


class BadWeights(QuantizeError):
    """A tensor contains NaN or Inf values."""


class OutputExists(QuantizeError):
    """The output file exists and overwriting was not allowed."""


class OutputError(QuantizeError):
    """Writing the output failed (disk full, permission denied, ...)."""
