"""Plan before you download: read a GGUF's header straight from the Hub with HTTP range requests — a few MB of a
file that may be hundreds of GB, every part of a split model — and keep it, so a model can be planned exactly like
a local file (`plan deepseek-r1:7b` before any pull; `models` from real headers once they are cached).

Which files are read is decided as `pull` decides what it downloads (the catalog's sources in order, the default
quant or the closest one, a repo's only GGUF or its Q4_K_M). The first bytes of each file are fetched, the header
parsed by the same parser local files go through, and if the header runs past them (DeepSeek's vocabulary alone is
several MB) more bytes are fetched, up to `MAX_HEADER`. Requests go to the Hub's `resolve/` address with the
user's token; the redirect to the CDN is followed by hand and the token is not sent to another host (as
huggingface_hub does for downloads). A server that ignores Range is read only as far as needed and dropped.

The cache lives in LOCALSEEK_HOME/headers: each file's header bytes (`KEY.bin`, KEY a hash of endpoint, repo,
commit and path: no name from a server becomes a path) with what is known of it (`KEY.json`), and `index.json`
mapping a model name (`r1-distill-qwen-7b:Q4_K_M`, `owner/repo:Q8_0`) to the files last read for it. Offline
(HF_HUB_OFFLINE=1) only the cache is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from localseek.errors import HubError, LocalseekError, ModelFileError, NotInstalledError
from localseek.models import gguf_header, store
from localseek.models.catalog import ModelSpec
from localseek.models.gguf_info import GGUFInfo, TensorInfo
from localseek.models.hub import Hub, offline_mode
from localseek.models.listing import (
    FileSet,
    RemoteFile,
    RepoListing,
    available_quants,
    gguf_sets,
    mtp_sibling,
    select_files,
    select_quant,
)
from localseek.models.quants import FALLBACK_ORDER, is_quant, normalize_quant
from localseek.sizes import MiB, format_size

FIRST_READ = 1 * MiB  # most headers fit; DeepSeek's (129k-token vocabulary) takes a second, larger read
MAX_HEADER = 256 * MiB  # no real header is this large; a file that claims more is refused
_REDIRECTS = 5
Notify = Callable[[str], None]


@dataclass
class RemoteGGUFInfo(GGUFInfo):
    """A GGUF's header read from the Hub: `GGUFInfo` with the sizes the Hub lists instead of local files'."""

    sizes: list[int] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class RemoteModel:
    """A model on the Hub, planned from its header, not downloaded."""

    label: str  # the name it was asked for: "r1-distill-qwen-7b:Q4_K_M", "owner/repo:Q8_0"
    repo: str
    commit: str
    files: tuple[RemoteFile, ...]
    quant: str | None
    info: RemoteGGUFInfo
    from_cache: bool = False  # read from LOCALSEEK_HOME/headers, not the network
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def headers_dir() -> Path:
    return store.home() / "headers"


def label_for(spec: ModelSpec | None, quant: str | None, repo: str | None = None, selector: str | None = None) -> str:
    """The cache index's name for a catalog model at a quant (the default when None) or a Hub repo[:selector]."""
    if spec is not None:
        return f"{spec.id}:{normalize_quant(quant or spec.default_quant or 'Q4_K_M')}"
    return f"{repo}:{selector}" if selector else str(repo)


# ───────────────────────────── reading headers ─────────────────────────────

def read_remote(spec: ModelSpec | None, quant: str | None, repo: str | None = None, selector: str | None = None, *,
                hub: Hub | None = None, notify: Notify | None = None) -> RemoteModel:
    """The header of what `pull` would download for a catalog model (`spec`, `quant`) or a Hub `repo[:selector]`,
    from the cache when it is there, else read from the Hub with range requests (and cached).

    Raises NotInstalledError offline with nothing cached, HubError and friends from the Hub, ModelFileError for a
    header that cannot be read.
    """
    label = label_for(spec, quant, repo, selector)
    cached = cached_remote(label)
    if cached is not None:
        return cached
    if offline_mode():
        raise NotInstalledError(f"{label} is not installed and HF_HUB_OFFLINE=1 is set, so its header cannot be read "
                                f"to plan it; unset HF_HUB_OFFLINE, or `localseek pull {label}` when online.")
    hub = hub or Hub()
    notes: list[str] = []
    if spec is not None:
        listing, fileset = _choose_catalog(spec, quant, hub, notes)
    else:
        assert repo is not None
        listing = hub.listing(repo)
        fileset = choose_repo_files(listing, selector, notes)
    infos = [_read_file(hub, listing.repo, listing.commit, rf) for rf in fileset.files]
    info = _combine(infos, fileset)
    read = sum(n for _h, n in infos)
    if notify is not None:
        notify(f"Read the header of {fileset.primary.name} from the Hub ({format_size(read)} of "
               f"{format_size(fileset.size)}{f' in {len(fileset.files)} parts' if len(fileset.files) > 1 else ''}) "
               "to plan it before downloading.")
    mtp = mtp_sibling(listing, fileset)  # `pull` takes it too: part of the download
    files = fileset.files + ((mtp,) if mtp is not None else ())
    model = RemoteModel(label, listing.repo, listing.commit, files, fileset.quant, info, False, tuple(notes))
    _remember(label, model)
    return model


def _choose_catalog(spec: ModelSpec, quant: str | None, hub: Hub, notes: list[str]) -> tuple[RepoListing, FileSet]:
    """The files `pull` would take for this catalog model (the same choice: `pull._choose`)."""
    from localseek.models.pull import _choose

    if not spec.gguf:
        raise NotInstalledError(f"{spec.id} has no ready-made GGUF to plan from; `localseek models` lists its size, "
                                f"and `localseek pull {spec.id} --original --quantize Q4_K_M` converts it.")
    want = normalize_quant(quant or spec.default_quant or "Q4_K_M")
    return _choose(spec, want, explicit=quant is not None, hub=hub, notes=notes)


def choose_repo_files(listing: RepoListing, selector: str | None, notes: list[str]) -> FileSet:
    """The GGUF files of a repo that `OWNER/REPO[:QUANT|FILE]` means: its only model, else Q4_K_M or the closest."""
    repo = listing.repo
    if selector is None:
        sets = [s for s in gguf_sets(listing) if s.complete]
        if not sets:
            raise HubError(f"{repo} has no GGUF files to plan from.")
        if len(sets) == 1:
            return sets[0]
        offers = available_quants(listing)
        pick = next((q for q in FALLBACK_ORDER if q in offers), None)
        if pick is None:
            names = ", ".join(s.quant or s.primary.path for s in sets[:8])
            raise HubError(f"{repo} holds several models ({names}); pick one as {repo}:QUANT or {repo}:FILE.gguf.")
        fs = select_quant(listing, pick)
        assert fs is not None
        notes.append(f"{repo} has {len(sets)} quants; took {pick} (choose with {repo}:QUANT)")
        return fs
    if is_quant(selector):
        fs = select_quant(listing, selector)
        if fs is None:
            menu = ", ".join(f"{q} ({format_size(s)})" for q, s in
                             sorted(available_quants(listing).items(), key=lambda kv: kv[1]))
            raise HubError(f"{repo} has no {normalize_quant(selector)}; available: {menu or 'no GGUF files'}.")
        return fs
    fs = select_files(listing, selector)
    if fs is None:
        raise HubError(f"{repo} has no GGUF file matching {selector!r}.")
    return fs


def _key(endpoint: str, repo: str, commit: str, path: str) -> str:
    return hashlib.sha256(f"{endpoint}\n{repo}\n{commit}\n{path}".encode()).hexdigest()[:40]


def _read_file(hub: Hub, repo: str, commit: str, rf: RemoteFile) -> tuple[gguf_header.Header, int]:
    """(header, bytes fetched) of one remote file; its header bytes are kept under headers_dir()."""
    key = _key(hub.endpoint, repo, commit, rf.path)
    folder = headers_dir()
    stub = folder / f"{key}.bin"
    if stub.is_file():
        try:
            return _parse_checked(stub, rf), 0
        except ModelFileError:
            stub.unlink(missing_ok=True)
    data = _local_header(hub, repo, commit, rf)  # already in the HF cache (an earlier pull, another tool): no request
    if data is not None:
        header = _parse_bytes(data, folder)
        _check_sizes(header, rf, repo)
        _write_atomic(stub, data)
        return header, 0
    data = b""
    want = min(FIRST_READ, rf.size)
    while True:
        data += _range(hub, repo, commit, rf, len(data), want)
        try:
            header = _parse_bytes(data, folder)
            break
        except ValueError as exc:  # also struct.error and the parser's HeaderError: the header is cut short
            if want >= rf.size or want >= MAX_HEADER:
                raise ModelFileError(f"{rf.path} in {repo}: its header cannot be read ({exc}); the file is damaged "
                                     "or not a GGUF llama.cpp can load.") from exc
            want = min(want * 4, rf.size, MAX_HEADER)
    _check_sizes(header, rf, repo)
    _write_atomic(stub, data)
    _write_atomic(folder / f"{key}.json", json.dumps(
        {"repo": repo, "commit": commit, "path": rf.path, "size": rf.size, "sha256": rf.sha256,
         "header_bytes": len(data), "read_at": time.time()}).encode())
    return header, len(data)


def _local_header(hub: Hub, repo: str, commit: str, rf: RemoteFile) -> bytes | None:
    """The header bytes of this file if the Hugging Face cache already holds it whole, else None."""
    path = hub.snapshot_path(repo, commit, rf.path)
    try:
        if not path.is_file() or path.stat().st_size != rf.size:
            return None
        header = gguf_header.parse(path)
        with path.open("rb") as fh:
            return fh.read(header.data_offset)
    except Exception:  # noqa: BLE001 - unreadable or not a GGUF: read it from the Hub instead
        return None


def _parse_bytes(data: bytes, folder: Path) -> gguf_header.Header:
    """Parse header bytes with the parser local files go through (it reads files: a temporary one)."""
    if len(data) < 24:
        raise ValueError("too short for a GGUF header")
    if data[:4] != b"GGUF":
        raise ModelFileError("not a GGUF file (the first bytes are not GGUF)")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".header-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return gguf_header.parse(Path(tmp))
    except (ValueError, OSError):
        raise
    except Exception as exc:  # struct.error, numpy errors: a header cut short reads as garbage
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def _parse_checked(stub: Path, rf: RemoteFile) -> gguf_header.Header:
    try:
        header = gguf_header.parse(stub)
    except Exception as exc:
        raise ModelFileError(f"cached header {stub.name} is damaged") from exc
    _check_sizes(header, rf, "the cache")
    return header


def _check_sizes(header: gguf_header.Header, rf: RemoteFile, repo: str) -> None:
    """The tensors the header lists must fit in the file the Hub lists (a header that claims more is wrong)."""
    end = max((header.data_offset + t.offset + t.n_bytes for t in header.tensors), default=0)
    if end > rf.size:
        raise ModelFileError(f"{rf.path} in {repo}: its header describes {end:,} bytes but the file has "
                             f"{rf.size:,}; it is damaged or not what the listing says.")


def _range(hub: Hub, repo: str, commit: str, rf: RemoteFile, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of a file in a repo, through `resolve/` and the CDN it redirects to."""
    if start >= stop:
        return b""
    return hub._call(lambda: _get_range(hub.endpoint, repo, commit, rf.path, start, stop), repo, rf.path)


def _get_range(endpoint: str, repo: str, commit: str, path: str, start: int, stop: int) -> bytes:
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    from localseek.models.hub import _same_or_hub_origin

    url = hf_hub_url(repo, path, revision=commit, endpoint=endpoint)
    first = url
    headers = build_hf_headers()
    headers["Range"] = f"bytes={start}-{stop - 1}"
    headers["Accept-Encoding"] = "identity"
    session = get_session()
    for _ in range(_REDIRECTS + 1):
        with session.stream("GET", url, headers=headers, follow_redirects=False,
                            timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as r:
            if r.status_code in (301, 302, 303, 307, 308) and "location" in r.headers:
                url = urljoin(url, r.headers["location"])
                if not _same_or_hub_origin(first, url):
                    headers.pop("authorization", None)  # the token stays on the Hub
                continue
            if r.status_code >= 400:
                r.read()
                hf_raise_for_status(r)
            if r.status_code == 206:
                got = _content_range_start(r.headers.get("content-range", ""))
                if got != start:
                    raise HubError(f"{path} in {repo}: asked for bytes from {start:,}, the server sent from {got}.")
                return _read_upto(r, stop - start)
            # 200: the server ignored the Range header; read only as far as needed, then drop the connection
            return _read_upto(r, stop)[start:]
    raise HubError(f"{path} in {repo}: too many redirects.")


def _content_range_start(value: str) -> int | None:
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _read_upto(response: Any, limit: int) -> bytes:
    out = bytearray()
    for chunk in response.iter_bytes():
        out += chunk
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def _combine(parts: list[tuple[gguf_header.Header, int]], fileset: FileSet) -> RemoteGGUFInfo:
    first = parts[0][0]
    tensors = [TensorInfo(t.name, t.type_name, t.shape, t.n_bytes) for header, _n in parts for t in header.tensors]
    folder = headers_dir()
    return RemoteGGUFInfo(path=folder / fileset.primary.name, metadata=dict(first.metadata), tensors=tensors,
                          parts=[folder / f.name for f in fileset.files], sizes=[f.size for f in fileset.files])


# ───────────────────────────── the cache ─────────────────────────────

def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _index() -> dict[str, Any]:
    path = headers_dir() / "index.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(label: str, model: RemoteModel) -> None:
    from localseek.models.hub import hub_endpoint

    index = _index()
    index[label.lower()] = {
        "label": label, "endpoint": hub_endpoint(), "repo": model.repo, "commit": model.commit,
        "quant": model.quant, "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in model.files],
        "notes": list(model.notes), "read_at": time.time(),
    }
    _write_atomic(headers_dir() / "index.json", json.dumps(index, indent=1).encode())


def cached_remote(label: str) -> RemoteModel | None:
    """A model's header from the cache (no network), or None."""
    entry = _index().get(label.lower())
    if not isinstance(entry, dict):
        return None
    try:
        files = tuple(RemoteFile(path=str(f["path"]), size=int(f["size"]), sha256=f.get("sha256"))
                      for f in entry["files"])
        endpoint, repo, commit = str(entry["endpoint"]), str(entry["repo"]), str(entry["commit"])
        headers = [(_parse_checked(headers_dir() / f"{_key(endpoint, repo, commit, f.path)}.bin", f), 0)
                   for f in files]
    except (KeyError, TypeError, ValueError, LocalseekError, OSError):
        return None
    fileset = FileSet(quant=entry.get("quant"), files=files, expected_parts=len(files))
    return RemoteModel(str(entry.get("label", label)), repo, commit, files, entry.get("quant"),
                       _combine(headers, fileset), True, tuple(entry.get("notes") or ()))


__all__ = ["RemoteGGUFInfo", "RemoteModel", "cached_remote", "choose_repo_files", "headers_dir", "label_for",
           "read_remote"]
