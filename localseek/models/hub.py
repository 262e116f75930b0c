"""Files on the Hugging Face Hub: list a repo, pick the files of a quant (split-aware), download them into the
standard Hugging Face cache with resume across runs, and verify each one against the hash the Hub lists.

What huggingface_hub (2.x) does and does not do, and so what this module adds:
- listing (`HfApi.model_info(files_metadata=True)`: sizes, LFS sha256, git blob ids), file metadata
  (`get_hf_file_metadata`: the HEAD of `resolve/<commit>/<path>`, its ETag, X-Repo-Commit, X-Linked-Size and the
  302 to the CDN), headers with the token from HF_TOKEN or `hf auth login`, and the transfer itself (`http_get`,
  which retries a dropped connection with a Range request within one call) all come from huggingface_hub;
- huggingface_hub keeps its partial file private to one process and deletes it on failure: here the partial file is
  `blobs/<etag>.incomplete` in the cache (the name its cache tools know) and the next pull resumes from it;
- huggingface_hub does not check what it downloaded: here every file is hashed while it streams (sha256 for LFS
  files, git's blob sha1 for small files) and compared with the listing; a mismatch deletes the file. A file that
  has no hash to compare with is refused before its first byte unless the caller allows it (`pull --no-verify`);
  what was checked is recorded per file ("sha256", "git-sha1", "size");
- huggingface_hub names cache paths after what the server sends (ETag, commit, file name): here nothing the server
  sends becomes a path unless it has the form the Hub gives it (`paths.py`), blobs are named by the hash they were
  verified against (or, unverified, by the sha256 computed here), and every write, link and delete is proven to lie
  inside the repo's cache folder first; a transfer longer than the listed size is cut off;
- free disk space is checked against the listed sizes before anything is written.
The token is sent only to the Hub's own origin (never to the CDN the Hub redirects to) and never printed.

Nothing here knows about llama.cpp or the registry of installed models.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from filelock import FileLock

from localseek.errors import DiskSpaceError, DownloadError, HubError, IntegrityError, LocalseekError
from localseek.models import store
from localseek.models.listing import RemoteFile, RepoListing
from localseek.models.paths import (
    MAX_FILE_SIZE,
    UnsafeNameError,
    inside,
    is_blob_name,
    is_inside,
    is_sha1,
    is_sha256,
    repo_path_problem,
    shown,
)
from localseek.sizes import format_size

T = TypeVar("T")


class RepoUnavailableError(HubError):
    """The repo does not exist, is private, or is gated for this user (another source may still have the model)."""


class UnverifiableError(IntegrityError):
    """A file has no hash to be checked against; installing it needs the user's explicit --no-verify."""


# ───────────────────────────── data ─────────────────────────────

@dataclass(frozen=True)
class LocalFile:
    remote: RemoteFile
    path: Path  # the snapshot entry
    blob: Path  # what it points at
    sha256: str | None
    git_oid: str | None
    mtime_ns: int
    preexisting: bool  # was in the cache before this pull (fetched by another tool)
    downloaded: int  # bytes transferred by this pull
    checked: str = "none"  # what the content was compared with: "sha256", "git-sha1", "size", "none"


class Progress:
    """What a download reports. The CLI draws it; the default does nothing."""

    def start(self, files: list[tuple[str, int, int]]) -> None:
        """Files to fetch: (name, size, bytes already here)."""

    def advance(self, name: str, n: int) -> None:
        """n more bytes of `name` arrived (or were hashed, while verifying)."""

    def rewind(self, name: str, done: int) -> None:
        """The server ignored a resume: `name` starts again at `done` bytes."""

    def verifying(self, name: str, size: int) -> None:
        """Hashing a file that was already on disk."""

    def file_done(self, name: str, how: str) -> None:
        """`how`: "downloaded", "cached" (found in the HF cache and verified), "verified" (verified before)."""

    def message(self, text: str) -> None:
        """A one-line note for the user."""


# ───────────────────────────── the client ─────────────────────────────

def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE") or constants.is_offline_mode()


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:  # noqa: BLE001 - a broken token file must not hide the real error
        return False


def _origin(url: str) -> tuple[str, str, int]:
    p = urlparse(url)
    return p.scheme, (p.hostname or "").lower(), p.port or {"http": 80, "https": 443}.get(p.scheme, 0)


def _same_or_hub_origin(url: str, target: str) -> bool:
    try:  # huggingface_hub's own rule (also trusts huggingface.co ↔ hf.co), when this version has it
        from huggingface_hub.utils._http import _is_same_or_hub_host

        return bool(_is_same_or_hub_host(url, target))
    except ImportError:  # pragma: no cover
        return _origin(url) == _origin(target)


class _Silent:
    """Stands in for huggingface_hub's tqdm bar: progress is reported by the file wrapper instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _Silent:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: float | None = 1) -> None:
        pass


class _HashingWriter:
    """The file huggingface_hub's `http_get` writes into: reports bytes as they arrive and hashes them on a helper
    thread (hashlib releases the GIL), so verification overlaps the network and the disk instead of adding to them."""

    def __init__(self, fh: Any, hasher: Any, name: str, progress: Progress, limit: int, too_long: str) -> None:
        self.fh, self.hasher, self.name, self.progress = fh, hasher, name, progress
        self.limit, self.too_long = limit, too_long  # a server sending more than the listed size is cut off
        self.rehash = False  # set if the file was rewound (server ignored the Range request)
        self.written = 0
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # at most ~40 MiB in flight
        self._thread = threading.Thread(target=self._hash_loop, name="localseek-sha", daemon=True)
        self._thread.start()

    def _hash_loop(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if not self.rehash:
                self.hasher.update(chunk)

    def write(self, data: bytes) -> int:
        if self.fh.tell() + len(data) > self.limit:
            raise IntegrityError(self.too_long)
        n = self.fh.write(data)
        if not self.rehash:
            self._chunks.put(bytes(data))
        self.written += len(data)
        self.progress.advance(self.name, len(data))
        return n

    def finish(self) -> Any:
        """Wait for the hashing thread; returns the hasher (meaningless if `rehash` is set)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()
        return self.hasher

    def tell(self) -> int:
        return self.fh.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        r = self.fh.truncate(size)
        self.rehash = True
        self.progress.rewind(self.name, self.fh.tell())
        return r

    def flush(self) -> None:
        self.fh.flush()


def _new_hasher(kind: str, size: int) -> Any:
    if kind == "sha256":
        return hashlib.sha256()
    h = hashlib.sha1()
    h.update(f"blob {size}\0".encode())
    return h


def _hash_file(path: Path, kind: str, size: int, name: str, progress: Progress, upto: int | None = None) -> Any:
    h = _new_hasher(kind, size)
    left = upto if upto is not None else size
    with path.open("rb") as fh:
        while left > 0:
            chunk = fh.read(min(8 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
            progress.advance(name, len(chunk))
    return h


def free_space(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would hold it: its nearest existing parent)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


class Hub:
    """A Hugging Face Hub (or HF_ENDPOINT mirror), read through huggingface_hub, writing to the HF cache."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")

    # ── errors ──
    def explain(self, exc: BaseException, repo: str, path: str | None = None) -> LocalseekError:
        """Any error from huggingface_hub or the network → one line that says what to do."""
        import httpx2
        from huggingface_hub import errors as hf

        where = f"{path} in {repo}" if path else repo
        page = f"{self.endpoint}/{repo}"
        if isinstance(exc, LocalseekError):
            return exc
        if isinstance(exc, hf.OfflineModeIsEnabled):
            return RepoUnavailableError(f"HF_HUB_OFFLINE=1 is set, so {repo} cannot be fetched; unset it to download, "
                            "or run a local .gguf file.")
        if isinstance(exc, hf.GatedRepoError):
            if _has_token():
                return RepoUnavailableError(f"{repo} is gated and your Hugging Face token has no access yet: accept its terms at "
                                f"{page}, then pull again.")
            return RepoUnavailableError(f"{repo} is gated: accept its terms at {page}, then log in (`hf auth login`, or set "
                            "HF_TOKEN) and pull again.")
        if isinstance(exc, hf.RevisionNotFoundError):
            return HubError(f"{repo} has no such revision; check the name.")
        if isinstance(exc, (hf.RemoteEntryNotFoundError, hf.EntryNotFoundError)):
            return HubError(f"{where} is not on the Hub (any more); the repo changed — pull again.")
        if isinstance(exc, hf.RepositoryNotFoundError):
            login = "" if _has_token() else " If it is private, log in (`hf auth login` or HF_TOKEN)."
            return RepoUnavailableError(f"No repository {repo} on {self.endpoint}: check the name.{login}")
        if isinstance(exc, hf.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else 0
            if status == 429:
                after = exc.response.headers.get("Retry-After") if exc.response is not None else None
                when = f"in {after} s" if after and after.isdigit() else "in a few minutes"
                login = "" if _has_token() else "; logging in (`hf auth login` or HF_TOKEN) raises the limit"
                return HubError(f"The Hub is rate-limiting this machine (HTTP 429) while fetching {where}: try again "
                                f"{when}{login}.")
            if status == 401:
                return HubError(f"The Hub rejected your Hugging Face token (401) for {repo}: log in again with "
                                "`hf auth login` or fix HF_TOKEN.")
            if status == 403:
                return HubError(f"Access to {repo} is forbidden (403): your token lacks permission; check it at "
                                f"{self.endpoint}/settings/tokens.")
            if status >= 500:
                return HubError(f"The Hub answered HTTP {status} for {where}: it is having trouble; try again later.")
            return HubError(f"The Hub answered HTTP {status} for {where}.")
        if isinstance(exc, hf.FileMetadataError):
            return HubError(f"{self.endpoint} did not answer like a Hugging Face Hub for {where} (HF_ENDPOINT wrong, "
                            "or a proxy in the way?).")
        if isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout)):
            return HubError(f"Cannot reach the Hugging Face Hub at {self.endpoint}: offline? behind a proxy? Set "
                            "HF_ENDPOINT for a mirror, or run a local .gguf file (`localseek run path/to/model.gguf`).")
        if isinstance(exc, (httpx2.TimeoutException, httpx2.RemoteProtocolError, httpx2.ReadError,
                            httpx2.NetworkError)):
            return DownloadError(f"The connection to {self.endpoint} broke while fetching {where}; run the same "
                                 "pull again to resume.")
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return DiskSpaceError(f"The disk filled up while writing {where}; free some space and pull again "
                                  "(what arrived is kept and resumes).")
        if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
            return DownloadError(f"The download of {where} ended short; run the same pull again to resume.")
        return HubError(f"Fetching {where} failed: {type(exc).__name__}: {exc}")

    def _call(self, fn: Callable[[], T], repo: str, path: str | None = None) -> T:
        try:
            return fn()
        except (KeyboardInterrupt, LocalseekError):
            raise
        except Exception as exc:
            raise self.explain(exc, repo, path) from exc

    # ── listing ──
    def listing(self, repo: str, revision: str = "main") -> RepoListing:
        """Every file of `repo` at `revision`, with sizes and hashes, pinned to one commit."""
        if offline_mode():
            raise RepoUnavailableError(f"HF_HUB_OFFLINE=1 is set, so {repo} cannot be listed; unset it to download.")
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint)
        info = self._call(lambda: api.model_info(repo, revision=revision, files_metadata=True, timeout=30), repo)
        if not info.sha:
            raise HubError(f"{self.endpoint} listed {repo} without a commit id; is HF_ENDPOINT a Hugging Face Hub?")
        commit = info.sha.lower() if isinstance(info.sha, str) else info.sha
        if not is_sha1(commit):
            raise UnsafeNameError(f"{self.endpoint} sent {shown(info.sha)} as the commit of {repo}, not a 40-digit "
                                  "hex commit id; nothing was downloaded. Is HF_ENDPOINT a Hugging Face Hub?")
        files = tuple(self._remote_file(repo, s) for s in info.siblings or [])
        return RepoListing(repo=repo, commit=commit, files=files, gated=bool(info.gated))

    def _remote_file(self, repo: str, sibling: Any) -> RemoteFile:
        """One listed file, with every value the server sent checked against what the Hub can send."""
        path, lfs = sibling.rfilename, sibling.lfs
        why = repo_path_problem(path)
        if why:
            raise UnsafeNameError(f"{self.endpoint} listed a file {shown(path)} in {repo}, which no Hugging Face "
                                  f"repo can hold ({why}); nothing was downloaded. Check HF_ENDPOINT.")
        sha, oid = (lfs.sha256 if lfs else None), sibling.blob_id
        sha = sha.lower() if isinstance(sha, str) else sha
        oid = oid.lower() if isinstance(oid, str) else oid
        for value, ok, what in ((sha, is_sha256, "sha256"), (oid, is_sha1, "git blob id")):
            if value is not None and not ok(value):
                raise UnsafeNameError(f"{self.endpoint} listed {shown(value)} as the {what} of {shown(path)} in "
                                      f"{repo}, which is not one; nothing was downloaded. Check HF_ENDPOINT.")
        size = sibling.size if sibling.size is not None else (lfs.size if lfs else None)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:  # None: unlisted
            raise HubError(f"{self.endpoint} listed a size of {shown(size)} bytes for {shown(path)} in {repo}; "
                           "nothing was downloaded. Check HF_ENDPOINT.")
        return RemoteFile(path=path, size=size, sha256=sha, blob_id=oid)

    def cached_listing(self, repo: str, revision: str = "main") -> RepoListing | None:
        """The files of `repo` that are already in the local HF cache (offline): sizes from disk, no hashes."""
        folder = store.repo_folder(repo)
        ref = folder / "refs" / revision
        commit: str | None = revision
        if not is_sha1(revision):
            commit = None
            if ref.is_file() and is_inside(ref, folder, sub="refs"):
                with ref.open("rb") as fh:
                    commit = fh.read(128).decode("ascii", "replace").strip()
        if not commit:
            return None
        if not is_sha1(commit):
            raise UnsafeNameError(f"The Hugging Face cache's {ref} holds {shown(commit)}, not a commit id; delete "
                                  f"{folder} and pull again online.")
        snap = folder / "snapshots" / commit
        if not snap.is_dir():
            return None
        files = []
        for root, _dirs, names in os.walk(snap):
            for n in names:
                p = Path(root) / n
                rel = p.relative_to(snap).as_posix()
                if repo_path_problem(rel):
                    raise UnsafeNameError(f"The Hugging Face cache folder of {repo} holds {shown(rel)}, which no Hub "
                                          f"repo can hold; delete {snap} and pull again online.")
                if p.exists():
                    files.append(RemoteFile(path=rel, size=p.stat().st_size))
        return RepoListing(repo=repo, commit=commit, files=tuple(sorted(files, key=lambda f: f.path)),
                           from_cache=True)

    # ── planning ──
    def snapshot_path(self, repo: str, commit: str, path: str) -> Path:
        """Where file `path` of `commit` sits in the HF cache, proven to lie inside the repo's snapshot folder."""
        if not is_sha1(commit):
            raise UnsafeNameError(f"{shown(commit)} is not a commit id; refusing to use it as a folder for {repo}.")
        why = repo_path_problem(path)
        if why:
            raise UnsafeNameError(f"{shown(path)} cannot be a file of {repo} ({why}); refusing to write it.")
        folder = store.repo_folder(repo)
        inside(folder / "snapshots" / commit / path, folder, sub=f"snapshots/{commit}", action="link", follow=False)
        return folder / "snapshots" / commit / path

    def cached_file(self, repo: str, commit: str, rf: RemoteFile) -> Path | None:
        """The bytes behind this file's snapshot entry when they are complete and inside the repo's cache folder:
        a blob named by its hash, or (where there are no symlinks) the entry itself. None otherwise: an entry that
        points anywhere else is never trusted (it is replaced by a fresh download)."""
        pointer = self.snapshot_path(repo, commit, rf.path)
        folder = store.repo_folder(repo)
        try:
            if pointer.stat().st_size != rf.size:
                return None
        except OSError:
            return None
        blob = is_inside(pointer, folder, sub="blobs")
        if blob is not None and is_blob_name(blob.name):
            return blob
        if not pointer.is_symlink():
            return is_inside(pointer, folder, sub="snapshots")
        return None

    def partial_bytes(self, repo: str, rf: RemoteFile) -> int:
        """Bytes of an interrupted earlier download of this file that the next pull will keep."""
        etag = rf.sha256 or rf.blob_id
        if not is_blob_name(etag):
            return 0
        part = store.repo_folder(repo) / "blobs" / f"{etag}.incomplete"
        try:
            return min(part.stat().st_size, rf.size)
        except OSError:
            return 0

    def present(self, repo: str, commit: str, rf: RemoteFile) -> bool:
        """Is this file already complete in the cache (under this commit, or as a blob by its hash)?"""
        pointer = self.snapshot_path(repo, commit, rf.path)
        if pointer.exists() and pointer.stat().st_size == rf.size:
            return True
        etag = rf.sha256 or rf.blob_id
        blob = store.repo_folder(repo) / "blobs" / etag if is_blob_name(etag) else None
        return bool(blob and blob.exists() and blob.stat().st_size == rf.size)

    def check_disk(self, repo: str, commit: str, files: list[RemoteFile]) -> int:
        """Raise DiskSpaceError with the numbers if what is missing will not fit. Returns the bytes to fetch."""
        need = sum(f.size - self.partial_bytes(repo, f) for f in files if not self.present(repo, commit, f))
        target = store.repo_folder(repo) / "blobs"
        free = free_space(target)
        if need > free:
            where = free_space_root(target)
            raise DiskSpaceError(
                f"Not enough disk space in {where}: this pull needs {format_size(need)} more and {format_size(free)} is free. "
                "Free some space, or point HF_HOME at a bigger disk."
            )
        return need

    # ── downloading ──
    def fetch(self, repo: str, commit: str, files: list[RemoteFile], progress: Progress | None = None,
              revision: str = "main", verify: bool = True) -> list[LocalFile]:
        """Make every file present and verified in the HF cache under `commit`. Raises with one clear line.

        verify=False (`pull --no-verify`) accepts files the Hub gives no hash for, checked by size only.
        """
        progress = progress or Progress()
        progress.start([(f.path, f.size, self.partial_bytes(repo, f)) for f in files])
        out = [self._fetch_one(repo, commit, f, progress, verify) for f in files]
        if not is_sha1(revision):
            folder = store.repo_folder(repo)
            ref = inside(folder / "refs" / revision, folder, sub="refs")
            ref.parent.mkdir(parents=True, exist_ok=True)
            if not ref.exists() or ref.read_text().strip() != commit:
                ref.write_text(commit)
        return out

    def _fetch_one(self, repo: str, commit: str, rf: RemoteFile, progress: Progress, verify: bool) -> LocalFile:
        folder = store.repo_folder(repo)
        blobs = folder / "blobs"
        pointer = self.snapshot_path(repo, commit, rf.path)
        listed = rf.sha256 or rf.blob_id
        if listed and (cached := self.cached_file(repo, commit, rf)) is not None:
            found = self._verify_existing(repo, rf, pointer, cached, progress, etag=None)
            if found is not None:
                return found
        meta = self._call(lambda: self._metadata(repo, commit, rf.path), repo, rf.path)
        if meta.size is not None and rf.size and meta.size != rf.size:
            raise HubError(f"{rf.path} in {repo}: the listing says {rf.size:,} bytes but the file is "
                           f"{meta.size:,}; the repo changed during the pull — pull again.")
        kind, expected = self._expected(rf, meta.etag)
        if expected is None and verify:
            raise UnverifiableError(
                f"{rf.path} in {repo} cannot be verified: {self.endpoint} lists no sha256 or git hash for it and "
                f"its ETag {shown(meta.etag, 40)} is not one. Nothing was downloaded; use a Hub that serves hashes, "
                "or pass --no-verify to install it with only its size checked."
            )
        if not listed and (cached := self.cached_file(repo, commit, rf)) is not None:
            found = self._verify_existing(repo, rf, pointer, cached, progress, etag=meta.etag)
            if found is not None:
                return found
        # Named by the hash it is verified against; unverified, by a name of our own until its sha256 is known.
        name = expected or hashlib.sha256(f"localseek-unverified\0{repo}\0{commit}\0{rf.path}".encode()).hexdigest()
        cache = store.hf_cache_dir()
        lock = inside(cache / ".locks" / folder.name / f"{name}.lock", cache, sub=".locks")
        lock.parent.mkdir(parents=True, exist_ok=True)
        inside(blobs, folder, sub="blobs", allow_root=True).mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)):  # the lock huggingface_hub itself takes for this blob
            result = None
            blob = inside(blobs / name, folder, sub="blobs")
            if expected and blob.exists() and blob.stat().st_size == rf.size:
                result = self._verify_existing(repo, rf, pointer, blob, progress, etag=meta.etag)
            if result is None:
                result = self._download(repo, rf, meta, blobs, name, expected, kind, progress)
            self._link(result.blob, pointer, folder)
            return replace(result, path=pointer)

    def _metadata(self, repo: str, commit: str, path: str) -> Any:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(repo, path, revision=commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=self.endpoint)
        if not meta.etag or not meta.commit_hash:
            from huggingface_hub.errors import FileMetadataError

            raise FileMetadataError(f"no ETag/X-Repo-Commit for {url}")
        return _Meta(url=url, location=meta.location, etag=meta.etag, size=meta.size)

    def _expected(self, rf: RemoteFile, etag: str | None) -> tuple[str, str | None]:
        """("sha256" | "git", expected hex) for this file: the listing's hash, else the ETag when it has a hash's
        form (the ETag is never used otherwise). ("sha256", None) when there is nothing to compare with."""
        etag = etag.lower() if isinstance(etag, str) else None
        if rf.sha256:
            return "sha256", rf.sha256
        if is_sha256(etag):
            return "sha256", etag
        if rf.blob_id:
            return "git", rf.blob_id
        if is_sha1(etag):
            return "git", etag
        return "sha256", None

    def _verify_existing(self, repo: str, rf: RemoteFile, pointer: Path, blob: Path, progress: Progress,
                         etag: str | None) -> LocalFile | None:
        """A file already in the cache: verify it (once; the registry remembers). None when there is nothing to
        verify it against, or when it is corrupt (then it is deleted, and downloaded again)."""
        kind, expected = self._expected(rf, etag)
        if expected is None:
            return None
        checked = "sha256" if kind == "sha256" else "git-sha1"
        preexisting = not store.owners(blob)
        st = blob.stat()
        known = store.verified_copy(blob)
        if known and expected in (known.sha256, known.git_oid):
            progress.file_done(rf.path, "verified")
            return LocalFile(rf, pointer, blob, known.sha256, known.git_oid, st.st_mtime_ns, preexisting, 0, checked)
        progress.verifying(rf.path, rf.size)
        got = _hash_file(blob, kind, rf.size, rf.path, progress).hexdigest()
        if got != expected:
            self.discard(repo, pointer, blob)
            progress.rewind(rf.path, 0)
            progress.message(f"{rf.path} in the Hugging Face cache was corrupt ({kind} {got[:12]}… instead of "
                             f"{expected[:12]}…): deleted it, downloading it again")
            return None
        progress.file_done(rf.path, "cached")
        sha, oid = (got, None) if kind == "sha256" else (None, got)
        return LocalFile(rf, pointer, blob, sha, oid, st.st_mtime_ns, preexisting, 0, checked)

    def discard(self, repo: str, pointer: Path, blob: Path) -> None:
        """Delete a snapshot entry and its blob, each proven to lie inside the repo's cache folder first."""
        folder = store.repo_folder(repo)
        for p, sub, follow in ((pointer, "snapshots", False), (blob, "", True)):
            if p.is_symlink() or p.exists():
                inside(p, folder, sub=sub, action="delete", follow=follow).unlink()

    def _download(self, repo: str, rf: RemoteFile, meta: _Meta, blobs: Path, name: str, expected: str | None,
                  kind: str, progress: Progress) -> LocalFile:
        from huggingface_hub import constants
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        part = inside(blobs / f"{name}.incomplete", blobs.parent, sub="blobs")
        if part.exists() and part.stat().st_size > rf.size:
            part.unlink()
        have = part.stat().st_size if part.exists() else 0
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"
        url = meta.location or meta.url
        if not _same_or_hub_origin(meta.url, url):
            headers.pop("authorization", None)  # the token stays on the Hub; the CDN gets a signed URL instead
        if have == 0 and rf.size > constants.MAX_HTTP_DOWNLOAD_SIZE:
            raise HubError(f"{rf.path} is larger than huggingface_hub's plain-HTTP limit; download it with "
                           "`hf download` and pull again (the file in the HF cache is found and verified).")
        hasher = _new_hasher(kind, rf.size)
        if have:
            progress.message(f"Resuming {rf.path} at {format_size(have)} of {format_size(rf.size)}")
            hasher = _hash_file(part, kind, rf.size, rf.path, Progress(), upto=have)
        mode = "r+b" if part.exists() else "wb"
        too_long = (f"{self.endpoint} sent more than the {rf.size:,} bytes listed for {rf.path} in {repo}; the "
                    "partial download was deleted. Pull again; if it repeats, the mirror is serving something else.")
        writer = None
        try:
            with part.open(mode) as fh:
                fh.seek(have)
                writer = _HashingWriter(fh, hasher, rf.path, progress, rf.size, too_long)
                try:
                    self._call(lambda: http_get(url, writer, resume_size=have, headers=headers,
                                                expected_size=rf.size, displayed_filename=rf.name,
                                                tqdm_class=_Silent),  # type: ignore[arg-type]
                               repo, rf.path)
                finally:
                    hasher = writer.finish()
        except BaseException as exc:
            got = part.stat().st_size if part.exists() else 0
            if isinstance(exc, IntegrityError):
                part.unlink(missing_ok=True)
            elif isinstance(exc, DownloadError) and got:
                raise DownloadError(
                    f"The download of {rf.path} from {repo} stopped at {format_size(got)} of {format_size(rf.size)}; "
                    "run the same pull again to resume."
                ) from exc
            raise
        digest = (_hash_file(part, kind, rf.size, rf.path, Progress()) if writer.rehash else hasher).hexdigest()
        if expected and digest != expected:
            part.unlink()
            raise IntegrityError(
                f"{rf.path} from {repo} does not match the {kind} the Hub lists ({digest[:12]}… instead of "
                f"{expected[:12]}…): the corrupt download was deleted. Pull again; if it repeats, the mirror or a "
                "proxy is altering files."
            )
        blob = inside(blobs / (expected or digest), blobs.parent, sub="blobs")
        os.chmod(part, 0o644 & ~_umask())
        os.replace(part, blob)
        progress.file_done(rf.path, "downloaded")
        sha, oid = (digest, None) if kind == "sha256" else (None, digest)
        checked = ("sha256" if kind == "sha256" else "git-sha1") if expected else "size"
        return LocalFile(rf, blob, blob, sha, oid, blob.stat().st_mtime_ns, False, rf.size - have, checked)

    @staticmethod
    def _link(blob: Path, pointer: Path, folder: Path) -> None:
        """Point the snapshot entry at the blob, both proven to lie inside the repo's cache folder."""
        entry = inside(pointer, folder, sub="snapshots", action="link", follow=False)
        target = inside(blob, folder, action="link")
        if entry == target or (entry.is_symlink() and os.path.realpath(entry) == str(target)):
            return
        inside(entry.parent, folder, sub="snapshots").mkdir(parents=True, exist_ok=True)
        if entry.is_symlink() or entry.exists():
            entry.unlink()
        try:
            os.symlink(os.path.relpath(target, entry.parent), entry)
        except OSError:  # no symlinks (Windows without developer mode): a copy, like huggingface_hub does
            shutil.copyfile(target, entry)


@dataclass(frozen=True)
class _Meta:
    url: str
    location: str
    etag: str
    size: int | None = field(default=None)


def free_space_root(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = [
    "Hub", "LocalFile", "Progress", "RepoUnavailableError", "UnverifiableError", "free_space", "hub_endpoint",
    "offline_mode",
]
