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
  files, git's blob sha1 for small files) and compared with the listing; a mismatch deletes the file;
- free disk space is checked against the listed sizes before anything is written.
The token is sent only to the Hub's own origin (never to the CDN the Hub redirects to) and never printed.

Nothing here knows about llama.cpp or the registry of installed models.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from filelock import FileLock

from localseek.errors import DiskSpaceError, DownloadError, HubError, IntegrityError, LocalseekError
from localseek.models import store
from localseek.models.listing import RemoteFile, RepoListing
from localseek.sizes import format_size

GB = 1000**3
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
T = TypeVar("T")


class RepoUnavailableError(HubError):
    """The repo does not exist, is private, or is gated for this user (another source may still have the model)."""


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

    def __init__(self, fh: Any, hasher: Any, name: str, progress: Progress) -> None:
        self.fh, self.hasher, self.name, self.progress = fh, hasher, name, progress
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
        files = []
        for s in info.siblings or []:
            lfs = s.lfs
            size = s.size if s.size is not None else (lfs.size if lfs else 0)
            files.append(RemoteFile(path=s.rfilename, size=int(size or 0), sha256=lfs.sha256 if lfs else None,
                                    blob_id=s.blob_id))
        if not info.sha:
            raise HubError(f"{self.endpoint} listed {repo} without a commit id; is HF_ENDPOINT a Hugging Face Hub?")
        return RepoListing(repo=repo, commit=info.sha, files=tuple(files), gated=bool(info.gated))

    def cached_listing(self, repo: str, revision: str = "main") -> RepoListing | None:
        """The files of `repo` that are already in the local HF cache (offline): sizes from disk, no hashes."""
        folder = store.repo_folder(repo)
        ref = folder / "refs" / revision
        commit = revision if _SHA1_RE.match(revision) else (ref.read_text().strip() if ref.is_file() else None)
        if not commit:
            return None
        snap = folder / "snapshots" / commit
        if not snap.is_dir():
            return None
        files = []
        for root, _dirs, names in os.walk(snap):
            for n in names:
                p = Path(root) / n
                if p.exists():
                    files.append(RemoteFile(path=p.relative_to(snap).as_posix(), size=p.stat().st_size))
        return RepoListing(repo=repo, commit=commit, files=tuple(sorted(files, key=lambda f: f.path)),
                           from_cache=True)

    # ── planning ──
    def snapshot_path(self, repo: str, commit: str, path: str) -> Path:
        return store.repo_folder(repo) / "snapshots" / commit / path

    def partial_bytes(self, repo: str, rf: RemoteFile) -> int:
        """Bytes of an interrupted earlier download of this file that the next pull will keep."""
        etag = rf.sha256 or rf.blob_id
        if not etag:
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
        blob = store.repo_folder(repo) / "blobs" / etag if etag else None
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
              revision: str = "main") -> list[LocalFile]:
        """Make every file present and verified in the HF cache under `commit`. Raises with one clear line."""
        progress = progress or Progress()
        progress.start([(f.path, f.size, self.partial_bytes(repo, f)) for f in files])
        out = [self._fetch_one(repo, commit, f, progress) for f in files]
        if not _SHA1_RE.match(revision):
            ref = store.repo_folder(repo) / "refs" / revision
            ref.parent.mkdir(parents=True, exist_ok=True)
            if not ref.exists() or ref.read_text().strip() != commit:
                ref.write_text(commit)
        return out

    def _fetch_one(self, repo: str, commit: str, rf: RemoteFile, progress: Progress) -> LocalFile:
        folder = store.repo_folder(repo)
        pointer = folder / "snapshots" / commit / rf.path
        if pointer.exists() and pointer.stat().st_size == rf.size:
            blob = Path(os.path.realpath(pointer))
            found = self._verify_existing(rf, pointer, blob, progress)
            if found is not None:
                return found
        meta = self._call(lambda: self._metadata(repo, commit, rf.path), repo, rf.path)
        if meta.size is not None and rf.size and meta.size != rf.size:
            raise HubError(f"{rf.path} in {repo}: the listing says {rf.size:,} bytes but the file is "
                           f"{meta.size:,}; the repo changed during the pull — pull again.")
        blob = folder / "blobs" / meta.etag
        lock = store.hf_cache_dir() / ".locks" / folder.name / f"{meta.etag}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)):  # the lock huggingface_hub itself takes for this blob
            result = None
            if blob.exists() and blob.stat().st_size == rf.size:
                result = self._verify_existing(rf, pointer, blob, progress)
            if result is None:
                result = self._download(repo, rf, meta, blob, progress)
            self._link(blob, pointer)
            return LocalFile(rf, pointer, blob, result.sha256, result.git_oid, result.mtime_ns, result.preexisting,
                             result.downloaded)

    def _metadata(self, repo: str, commit: str, path: str) -> Any:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(repo, path, revision=commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=self.endpoint)
        if not meta.etag or not meta.commit_hash:
            from huggingface_hub.errors import FileMetadataError

            raise FileMetadataError(f"no ETag/X-Repo-Commit for {url}")
        return _Meta(url=url, location=meta.location, etag=meta.etag, size=meta.size)

    def _expected(self, rf: RemoteFile, etag: str | None) -> tuple[str, str | None]:
        """("sha256" | "git", expected hex) for this file, from the listing, else the ETag's form."""
        if rf.sha256:
            return "sha256", rf.sha256
        if etag and _SHA256_RE.match(etag):
            return "sha256", etag
        if rf.blob_id:
            return "git", rf.blob_id
        if etag and _SHA1_RE.match(etag):
            return "git", etag
        return "sha256", None

    def _verify_existing(self, rf: RemoteFile, pointer: Path, blob: Path, progress: Progress) -> LocalFile | None:
        """A file already in the cache: verify it (once; the registry remembers). A corrupt one is deleted and
        None returned, so it is downloaded again."""
        kind, expected = self._expected(rf, blob.name if blob.parent.name == "blobs" else None)
        preexisting = not store.owners(blob)
        st = blob.stat()
        known = store.verified_copy(blob)
        if known and expected and expected in (known.sha256, known.git_oid):
            progress.file_done(rf.path, "verified")
            return LocalFile(rf, pointer, blob, known.sha256, known.git_oid, st.st_mtime_ns, preexisting, 0)
        if expected is None:
            progress.file_done(rf.path, "cached")
            return LocalFile(rf, pointer, blob, None, None, st.st_mtime_ns, preexisting, 0)
        progress.verifying(rf.path, rf.size)
        got = _hash_file(blob, kind, rf.size, rf.path, progress).hexdigest()
        if got != expected:
            for p in (pointer, blob):
                if p.is_symlink() or p.exists():
                    p.unlink()
            progress.rewind(rf.path, 0)
            progress.message(f"{rf.path} in the Hugging Face cache was corrupt ({kind} {got[:12]}… instead of "
                             f"{expected[:12]}…): deleted it, downloading it again")
            return None
        progress.file_done(rf.path, "cached")
        sha, oid = (got, None) if kind == "sha256" else (None, got)
        return LocalFile(rf, pointer, blob, sha, oid, st.st_mtime_ns, preexisting, 0)

    def _download(self, repo: str, rf: RemoteFile, meta: _Meta, blob: Path, progress: Progress) -> LocalFile:
        from huggingface_hub import constants
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        kind, expected = self._expected(rf, meta.etag)
        part = blob.with_name(f"{blob.name}.incomplete")
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
        writer = None
        try:
            with part.open(mode) as fh:
                fh.seek(have)
                writer = _HashingWriter(fh, hasher, rf.path, progress)
                try:
                    self._call(lambda: http_get(url, writer, resume_size=have, headers=headers,
                                                expected_size=rf.size, displayed_filename=rf.name,
                                                tqdm_class=_Silent),  # type: ignore[arg-type]
                               repo, rf.path)
                finally:
                    hasher = writer.finish()
        except BaseException as exc:
            got = part.stat().st_size if part.exists() else 0
            if isinstance(exc, DownloadError) and got:
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
        os.chmod(part, 0o644 & ~_umask())
        os.replace(part, blob)
        progress.file_done(rf.path, "downloaded")
        sha, oid = (digest, None) if kind == "sha256" else (None, digest)
        return LocalFile(rf, blob, blob, sha, oid, blob.stat().st_mtime_ns, False, rf.size - have)

    @staticmethod
    def _link(blob: Path, pointer: Path) -> None:
        if pointer.is_symlink() and os.path.realpath(pointer) == os.path.realpath(blob):
            return
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        try:
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
        except OSError:  # no symlinks (Windows without developer mode): a copy, like huggingface_hub does
            shutil.copyfile(blob, pointer)


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


__all__ = ["Hub", "LocalFile", "Progress", "RepoUnavailableError", "free_space", "hub_endpoint", "offline_mode"]
