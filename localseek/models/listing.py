"""What a Hub repo holds and which of its files make one model: listings, quants, split GGUF sets, original weights.

Pure data and selection (no network): `hub.py` produces listings, `pull.py` picks files from them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from localseek.errors import HubError
from localseek.models.quants import QUANT_BPW, normalize_quant, quant_of_path, split_info


@dataclass(frozen=True)
class RemoteFile:
    path: str  # inside the repo
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git object id (what a small file's ETag is)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RepoListing:
    repo: str
    commit: str
    files: tuple[RemoteFile, ...]
    gated: bool = False
    from_cache: bool = False  # built from the local HF cache (offline): sizes from disk, no hashes

    def find(self, path: str) -> RemoteFile | None:
        return next((f for f in self.files if f.path == path), None)


@dataclass(frozen=True)
class FileSet:
    """One model inside a repo: a single GGUF, or all parts of a split GGUF (in order)."""

    quant: str | None
    files: tuple[RemoteFile, ...]
    expected_parts: int = 1

    @property
    def complete(self) -> bool:
        return len(self.files) == self.expected_parts

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def primary(self) -> RemoteFile:
        return self.files[0]


# ───────────────────────────── choosing files ─────────────────────────────

def is_mtp_file(name: str) -> bool:
    """An MTP-only GGUF that drafts for a model beside it (DeepSeek-V4): `mtp-` in its name, as llama.cpp's
    downloader looks for it and `localseek quantize --mtp-only` names it."""
    return name.lower().endswith(".gguf") and "mtp-" in name.lower()


def is_auxiliary(name: str) -> bool:
    """GGUFs that go with a model and are not one: projectors, importance matrices, MTP files."""
    return name.lower().startswith(("mmproj", "imatrix")) or is_mtp_file(name)


def mtp_sibling(listing: RepoListing, model: FileSet) -> RemoteFile | None:
    """The MTP file a repo publishes for `model`, chosen as llama.cpp's downloader chooses it: in the model's folder
    or one above it (the deepest first), then the same quant, then the nearest bits per weight. Single files only."""
    folder = model.primary.path.split("/")[:-1]
    best: tuple[tuple[int, int, float], RemoteFile] | None = None
    bits = dict(QUANT_BPW)
    want = bits.get(model.quant or "", 0.0)
    for f in listing.files:
        if not is_mtp_file(f.name) or split_info(f.name):
            continue
        own = f.path.split("/")[:-1]
        if own != folder[: len(own)]:
            continue
        quant = quant_of_path(f.path)
        rank = (len(own), int(quant is not None and quant == model.quant), -abs(bits.get(quant or "", 0.0) - want))
        if best is None or rank > best[0]:
            best = (rank, f)
    return best[1] if best else None


def gguf_sets(listing: RepoListing, pattern: str = "*.gguf") -> list[FileSet]:
    """Group the repo's GGUF files into models: split parts together, in order, each set with its quant."""
    groups: dict[tuple[str, str, int], dict[int, RemoteFile]] = {}
    for f in listing.files:
        name = f.name
        if not name.lower().endswith(".gguf") or is_auxiliary(name):
            continue
        if not fnmatch.fnmatch(f.path, pattern):
            continue
        folder = f.path[: -len(name)]
        info = split_info(name)
        if info:
            stem, idx, count = info
            groups.setdefault((folder + stem, "split", count), {})[idx] = f
        else:
            groups.setdefault((f.path, "single", 1), {})[1] = f
    sets = []
    for (_key, _kind, count), parts in groups.items():
        files = tuple(parts[i] for i in sorted(parts))
        sets.append(FileSet(quant=quant_of_path(files[0].path), files=files, expected_parts=count))
    sets.sort(key=lambda s: (len(s.primary.path), s.primary.path))
    return sets


def available_quants(listing: RepoListing, pattern: str = "*.gguf") -> dict[str, int]:
    """Quant → size of every complete GGUF set in the listing."""
    out: dict[str, int] = {}
    for s in gguf_sets(listing, pattern):
        if s.complete and s.quant and s.quant not in out:
            out[s.quant] = s.size
    return out


def select_quant(listing: RepoListing, quant: str, pattern: str = "*.gguf") -> FileSet | None:
    """The set of files holding `quant`. Raises HubError if the only match is an incomplete upload."""
    q = normalize_quant(quant)
    matches = [s for s in gguf_sets(listing, pattern) if s.quant == q]
    complete = [s for s in matches if s.complete]
    if complete:
        return complete[0]
    if matches:
        s = matches[0]
        raise HubError(
            f"{listing.repo} has only {len(s.files)} of the {s.expected_parts} parts of {s.primary.path}: "
            "the upload looks incomplete. Try another quant or source."
        )
    return None


def select_files(listing: RepoListing, selector: str) -> FileSet | None:
    """A file path or glob inside the repo → its complete set (a split part brings all its parts)."""
    glob = any(c in selector for c in "*?[")
    sets = gguf_sets(listing)
    hits = [s for s in sets if any(fnmatch.fnmatch(f.path, selector) if glob else f.path == selector for f in s.files)]
    if not hits and not glob:
        hits = [s for s in sets if any(f.name == selector for f in s.files)]
    if len(hits) > 1:
        names = ", ".join(s.primary.path for s in hits[:6])
        raise HubError(f"{selector!r} matches {len(hits)} models in {listing.repo} ({names}); be more specific.")
    if not hits:
        return None
    s = hits[0]
    if not s.complete:
        raise HubError(f"{listing.repo} has only {len(s.files)} of the {s.expected_parts} parts of "
                       f"{s.primary.path}: the upload looks incomplete.")
    return s


ORIGINAL_PATTERNS = ("*.safetensors", "*.json", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt")


def original_files(listing: RepoListing) -> list[RemoteFile]:
    """The files a conversion needs: top-level safetensors, configs and tokenizer files."""
    return [f for f in listing.files
            if "/" not in f.path and any(fnmatch.fnmatch(f.path, p) for p in ORIGINAL_PATTERNS)]


__all__ = [
    "ORIGINAL_PATTERNS", "FileSet", "RemoteFile", "RepoListing", "available_quants", "gguf_sets", "original_files",
    "select_files", "select_quant",
]
