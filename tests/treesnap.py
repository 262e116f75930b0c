"""Proof that nothing outside some roots changed: snapshot a directory tree before and after, compare.

Each entry is recorded by its path relative to the top: files by size, mtime and sha256 of the contents, symlinks by
their target (never followed), folders by existence (their mtimes change whenever a root inside them is written).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

Entry = tuple[object, ...]


def snapshot(top: Path) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top):  # does not follow symlinked folders
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(top).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def changed_outside(before: dict[str, Entry], after: dict[str, Entry], allowed: list[str]) -> list[str]:
    """Every path created, deleted or changed that is not inside one of the `allowed` folders (relative to top)."""

    def free(rel: str) -> bool:
        return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allowed)

    return sorted(f"{rel}: {before.get(rel)} -> {after.get(rel)}" for rel in set(before) | set(after)
                  if before.get(rel) != after.get(rel) and not free(rel))


__all__ = ["changed_outside", "snapshot"]
