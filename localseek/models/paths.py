"""Names that come from a Hub, and paths we touch: what a Hugging Face Hub can legitimately send, and proof that a
path lies inside its root before anything is written, linked or deleted there.

Two independent defences (issue 20: a mirror's ETag, file name or commit became a path outside the cache):
1. every string a server sends that could end up in a path is checked against the form the Hub gives it: a commit
   is 40 hex digits, a blob is named by its sha256 (64 hex) or git sha1 (40 hex), a file name is a short relative
   path with no `..`, no drive letter, no backslash and no control character;
2. independently, every path is resolved (symlinks included) and must lie inside its root — the repo's folder in
   the HF cache, or LOCALSEEK_HOME — before it is touched (`inside`). Callers use the path `inside` returns, so
   what was checked is what gets opened.

Not covered: a local user racing us between the check and the use (they could write there anyway).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from localseek.errors import HubError, LocalseekError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
MAX_NAME_BYTES = 255  # one path component: what ext4, APFS and NTFS allow
MAX_PATH_BYTES = 1024  # a whole path inside a repo
MAX_FILE_SIZE = 1 << 50  # 1 PiB: no listed size above this is real


class UnsafeNameError(HubError):
    """A name that no Hugging Face Hub can send (a commit, blob or file name shaped like a path elsewhere)."""


class OutsideRootError(LocalseekError):
    """A path to write or delete resolves outside the folder it must stay in; nothing was touched."""


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(SHA256_RE.match(value))


def is_sha1(value: object) -> bool:
    return isinstance(value, str) and bool(SHA1_RE.match(value))


def is_blob_name(value: object) -> bool:
    """The name of a blob in the HF cache: a sha256 (LFS files) or a git sha1 (small files)."""
    return is_sha256(value) or is_sha1(value)


def shown(value: object, limit: int = 80) -> str:
    """A value from outside, safe to put in a one-line message: repr (control characters escaped), shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def repo_path_problem(name: object) -> str | None:
    """Why `name` cannot be a file path inside a Hugging Face repo, or None when it can."""
    if not isinstance(name, str):
        return "not a string"
    if not name:
        return "empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name):
        return "contains a control character"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "absolute"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' component"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"has a component longer than {MAX_NAME_BYTES} bytes"
    return None


def check_repo_id(repo: object) -> str:
    """An OWNER/NAME repo id as the Hub allows it (it becomes the cache folder `models--OWNER--NAME`)."""
    if not isinstance(repo, str) or not REPO_ID_RE.match(repo) or ".." in repo or "--" in repo:
        raise UnsafeNameError(f"{shown(repo)} is not a Hugging Face repo id (OWNER/NAME: letters, digits, '-', '_', "
                              "'.'); check the name.")
    return repo


def _resolved(path: str | os.PathLike[str], follow: bool) -> str:
    """The absolute path the kernel would reach: symlinks and '..' resolved in order. With follow=False the last
    component is kept as it is (deleting a symlink removes the link, not what it points at)."""
    if follow:
        return os.path.realpath(path)
    text = os.fspath(path)
    base = os.path.basename(text.rstrip("/")) if text.rstrip("/") else ""
    if base in ("", ".", ".."):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(os.path.dirname(text.rstrip("/")) or "."), base)


def is_inside(path: str | os.PathLike[str], root: str | os.PathLike[str], *, sub: str = "", follow: bool = True,
              allow_root: bool = False) -> Path | None:
    """`path` resolved, if it lies inside `root`/`sub`; else None.

    `root` itself may be a symlink (HF_HOME on another disk is the user's choice): it is resolved. `sub` is not:
    a `blobs` or `snapshots` folder that is a symlink leading elsewhere does not count as inside.
    """
    real_root = os.path.realpath(root)
    base = os.path.normpath(os.path.join(real_root, sub)) if sub else real_root
    target = _resolved(path, follow)
    try:
        common = os.path.commonpath([base, target])
    except ValueError:  # different drives (Windows)
        return None
    if common != base or (target == base and not allow_root):
        return None
    return Path(target)


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str], *, sub: str = "", action: str = "write",
           follow: bool = True, allow_root: bool = False) -> Path:
    """Prove that `path` lies inside `root`/`sub` (see `is_inside`) before `action`-ing it; returns the resolved path.

    follow=True resolves the last component too (for writing through a path: a symlink there must not lead out);
    follow=False checks where the entry itself is (for unlinking or replacing a symlink).
    Raises OutsideRootError (one line, nothing touched).
    """
    got = is_inside(path, root, sub=sub, follow=follow, allow_root=allow_root)
    if got is None:
        where = os.path.join(os.fspath(root), sub) if sub else os.fspath(root)
        raise OutsideRootError(
            f"Refusing to {action} {shown(os.fspath(path), 160)}: it resolves to "
            f"{shown(_resolved(path, follow), 160)}, outside {where}; nothing was changed. A symlink there "
            "or an edited registry.json points out of localseek's folders — remove it and try again."
        )
    return got


__all__ = [
    "MAX_FILE_SIZE", "OutsideRootError", "UnsafeNameError", "check_repo_id", "inside", "is_blob_name", "is_inside",
    "is_sha1", "is_sha256", "repo_path_problem", "shown",
]
