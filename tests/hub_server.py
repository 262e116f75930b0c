"""A Hugging Face Hub on 127.0.0.1 for the download tests: the part of the protocol huggingface_hub 2.x uses.

Two listening sockets, like the real thing: the "Hub" (API and `resolve/`) and a "CDN" on another port, to which
`resolve/` answers large (LFS) files with a 302. Endpoints (read from huggingface_hub's source):
- GET  /api/models/{repo}[/revision/{rev}]          model info; `?blobs=true` adds size, blobId and lfs.sha256
- GET  /api/models/{repo}/tree/{rev}[/{path}]       listing (`recursive`, `expand`), with sizes and lfs.oid
- POST /api/models/{repo}/paths-info/{rev}          the same for named paths (form field `paths`)
- HEAD/GET /{repo}/resolve/{rev}/{path}             ETag, X-Repo-Commit; LFS: 302 + X-Linked-Etag/X-Linked-Size;
                                                    small files: 200 with the body
- GET  /cdn/{sha256}                                the bytes, with Range → 206 + Content-Range (`bytes=N-` for a
                                                    resumed download, `bytes=FIRST-LAST` for a header read)
Errors carry the headers huggingface_hub classifies by (X-Error-Code: RepoNotFound / GatedRepo / EntryNotFound).
No Xet headers are ever sent, so clients take the plain HTTP path.

Faults, set per test: drop the connection after N bytes (K times), stall after N bytes until released, flip one
byte, ignore Range, answer a status (429, 500...) on a path prefix. Every request is logged for assertions.

Hostile mode (`FakeHub.hostile`, issue 20): a malicious HF_ENDPOINT mirror that sends a commit id, ETags or hashes
shaped like paths (`../../victim.txt`), lists no hashes at all, or sends more bytes than it listed. File names
such as `../x.gguf` or absolute paths need no mode: `make_repo` lists whatever names it is given.
Only loopback; every socket has a timeout; `stop()` shuts both servers down.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")


@dataclass
class HubFile:
    path: str
    source: Path
    size: int
    sha256: str
    git_oid: str
    lfs: bool


@dataclass
class HubRepo:
    repo: str
    commit: str
    files: dict[str, HubFile]
    gated: bool = False
    private: bool = False


@dataclass
class Faults:
    drop_after: dict[str, tuple[int, int]] = field(default_factory=dict)  # sha256 → (bytes, times)
    stall_after: dict[str, int] = field(default_factory=dict)  # sha256 → bytes; held until `release`
    corrupt: dict[str, int] = field(default_factory=dict)  # sha256 → offset of the flipped byte
    ignore_range: bool = False
    status: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # path prefix → (status, headers)
    bytes_per_second: int = 0  # throttle CDN bodies (0: as fast as possible)


@dataclass
class Hostile:
    """What a malicious mirror sends instead of the truth. The defaults are an honest Hub."""

    commit: str | None = None  # the `sha` of every model info (e.g. "../x"); resolve/ accepts it too
    etag: dict[str, str] = field(default_factory=dict)  # repo path → the ETag (and X-Linked-Etag) resolve/ sends
    hide_hashes: bool = False  # model info without `lfs` and `blobId`: nothing to verify against
    listed: dict[str, dict] = field(default_factory=dict)  # repo path → keys that replace its model-info entry
    extra_bytes: dict[str, int] = field(default_factory=dict)  # sha256 → bytes the CDN sends past the real file


def _git_oid(data_path: Path, size: int) -> str:
    h = hashlib.sha1()
    h.update(f"blob {size}\0".encode())
    with data_path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(data_path: Path) -> str:
    h = hashlib.sha256()
    with data_path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_repo(repo: str, files: dict[str, Path], *, gated: bool = False, private: bool = False,
              commit: str | None = None) -> HubRepo:
    """A repo serving the given files (path in repo → file on disk). The commit id is derived from the contents."""
    entries = {}
    for path, src in files.items():
        size = src.stat().st_size
        entries[path] = HubFile(path=path, source=src, size=size, sha256=_sha256(src), git_oid=_git_oid(src, size),
                                lfs=path.endswith(LFS_SUFFIXES) or size > 10 * 1024 * 1024)
    if commit is None:
        h = hashlib.sha1(repo.encode())
        for p in sorted(entries):
            h.update(p.encode() + entries[p].sha256.encode())
        commit = h.hexdigest()
    return HubRepo(repo=repo, commit=commit, files=entries, gated=gated, private=private)


class FakeHub:
    """Start with `FakeHub(tokens={"hf_good"})`, add repos, read `.url`; always `stop()` (the fixture does)."""

    def __init__(self, tokens: set[str] | None = None) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.tokens = set(tokens or ())
        self.faults = Faults()
        self.hostile = Hostile()
        self.log: list[dict] = []
        self.release = threading.Event()
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self._drops_done: dict[str, int] = {}
        self.hub = _Server(("127.0.0.1", 0), _HubHandler, self)
        self.cdn = _Server(("127.0.0.1", 0), _CdnHandler, self)
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
                         for s in (self.hub, self.cdn)]
        for t in self._threads:
            t.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo] = repo
        return repo

    def requests(self, server: str | None = None, path_contains: str = "") -> list[dict]:
        with self._lock:
            return [r for r in self.log if (server is None or r["server"] == server) and path_contains in r["path"]]

    def record(self, entry: dict) -> None:
        with self._lock:
            self.log.append(entry)

    def take_drop(self, sha: str) -> int | None:
        """Bytes after which to drop this response, if a drop is still due for this blob."""
        with self._lock:
            rule = self.faults.drop_after.get(sha)
            if not rule:
                return None
            n, times = rule
            done = self._drops_done.get(sha, 0)
            if done >= times:
                return None
            self._drops_done[sha] = done + 1
            return n

    def stop(self) -> None:
        self.release.set()
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type, hub: FakeHub) -> None:
        super().__init__(addr, handler)
        self.fake = hub


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 15
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    @property
    def fake(self) -> FakeHub:
        return self.server.fake

    def _record(self, name: str) -> None:
        self.fake.record({"server": name, "method": self.command, "path": self.path,
                          "range": self.headers.get("Range"), "auth": self.headers.get("Authorization"),
                          "time": time.monotonic()})

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        hdrs = {"Content-Type": content_type, "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        h = {"X-Error-Message": message}
        if code:
            h["X-Error-Code"] = code
        h.update(headers or {})
        self._json(status, {"error": message}, h)

    def _fault_status(self) -> bool:
        for prefix, (status, headers) in self.fake.faults.status.items():
            if self.path.startswith(prefix):
                self._error(status, None, f"injected {status}", headers)
                return True
        return False


class _HubHandler(_Base):
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _authorized(self, repo: HubRepo) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.fake.tokens

    def _repo(self, repo_id: str) -> HubRepo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(repo)):
            # the Hub answers 401 (not 404) to anonymous requests for missing or private repos
            status = 404 if self.headers.get("Authorization") else 401
            self._error(status, "RepoNotFound", "Repository not found")
            return None
        return repo

    def _route(self) -> None:
        self._record("hub")
        if self._fault_status():
            return
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models":
            repo_id = f"{parts[2]}/{parts[3]}"
            rest = parts[4:]
            repo = self._repo(repo_id)
            if repo is None:
                return
            if not rest or rest[0] == "revision":
                rev = rest[1] if len(rest) > 1 else "main"
                if rev not in ("main", repo.commit):
                    return self._error(404, "RevisionNotFound", "Invalid rev id")
                return self._model_info(repo, blobs=query.get("blobs", ["false"])[0].lower() == "true")
            if rest[0] == "tree":
                return self._tree(repo, "/".join(rest[2:]), query)
            if rest[0] == "paths-info":
                length = int(self.headers.get("Content-Length", "0") or 0)
                form = parse_qs(self.rfile.read(length).decode()) if length else {}
                return self._paths_info(repo, form.get("paths", []))
            return self._error(404, None, "Not found")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = f"{parts[0]}/{parts[1]}"
            rev, path = parts[3], "/".join(parts[4:])
            return self._resolve(repo_id, rev, path)
        self._error(404, None, "Not found")

    def _entry(self, f: HubFile, expand: bool = True) -> dict:
        out = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
        if f.lfs:
            out["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        return out

    def _model_info(self, repo: HubRepo, blobs: bool) -> None:
        hostile = self.fake.hostile
        siblings = []
        for f in repo.files.values():
            s: dict = {"rfilename": f.path}
            if blobs:
                s["size"] = f.size
                if not hostile.hide_hashes:
                    s["blobId"] = f.git_oid
                    if f.lfs:
                        s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            s.update(hostile.listed.get(f.path, {}))
            siblings.append(s)
        self._json(200, {
            "_id": repo.commit[:24], "id": repo.repo, "modelId": repo.repo, "author": repo.repo.split("/")[0],
            "sha": hostile.commit or repo.commit, "lastModified": "2025-01-20T00:00:00.000Z", "createdAt": "2025-01-20T00:00:00.000Z",
            "private": repo.private, "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0,
            "likes": 0, "tags": ["gguf"], "library_name": "gguf", "siblings": siblings,
        })

    def _tree(self, repo: HubRepo, prefix: str, query: dict) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for f in sorted(repo.files.values(), key=lambda f: f.path):
            if prefix and not f.path.startswith(prefix.rstrip("/") + "/"):
                continue
            rel = f.path[len(prefix.rstrip("/")) + 1:] if prefix else f.path
            if "/" in rel and not recursive:
                folders.add((prefix.rstrip("/") + "/" if prefix else "") + rel.split("/")[0])
                continue
            entries.append(self._entry(f))
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": p} for p in sorted(folders)]
        self._json(200, entries)

    def _paths_info(self, repo: HubRepo, paths: list[str]) -> None:
        self._json(200, [self._entry(repo.files[p]) for p in paths if p in repo.files])

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo = self.fake.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(repo)):
            status = 404 if self.headers.get("Authorization") else 401
            return self._error(status, "RepoNotFound", "Repository not found")
        if rev not in ("main", repo.commit, self.fake.hostile.commit):
            return self._error(404, "RevisionNotFound", "Invalid rev id", {"X-Repo-Commit": repo.commit})
        if repo.gated and not self._authorized(repo):
            status = 403 if self.headers.get("Authorization") else 401
            return self._error(status, "GatedRepo",
                               f"Access to model {repo_id} is restricted. You must have access to it and be "
                               "authenticated to access it. Please log in.")
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": repo.commit})
        common = {"X-Repo-Commit": self.fake.hostile.commit or repo.commit, "Accept-Ranges": "bytes"}
        etag = self.fake.hostile.etag.get(path)
        if f.lfs:
            location = f"{self.fake.cdn_url}/cdn/{f.sha256}?name={quote(f.path.rsplit('/', 1)[-1])}&sig=x"
            headers = dict(common, **{"Location": location, "X-Linked-Etag": f'"{etag or f.sha256}"',
                                      "X-Linked-Size": str(f.size), "ETag": f'"{etag or f.git_oid}"'})
            return self._send(302, b"", headers, content_type="text/plain")
        body = f.source.read_bytes()
        self._send(200, body, dict(common, ETag=f'"{etag or f.git_oid}"'), content_type="application/octet-stream")


class _CdnHandler(_Base):
    def do_GET(self) -> None:
        self._record("cdn")
        if self._fault_status():
            return
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        if len(parts) != 2 or parts[0] != "cdn":
            return self._error(404, None, "Not found")
        f = next((f for r in self.fake.repos.values() for f in r.files.values() if f.sha256 == parts[1]), None)
        if f is None:
            return self._error(404, None, "No such object")
        if self._bounded_range(f):  # bytes=FIRST-LAST: a header read before any download
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.fake.faults.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0] or 0)
        if start > f.size:
            return self._error(416, None, "Range Not Satisfiable")
        length = f.size - start + self.fake.hostile.extra_bytes.get(f.sha256, 0)
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", f'"{f.sha256}"')
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{f.size - 1}/{f.size}")
        self.end_headers()
        self._stream(f, start)

    def _bounded_range(self, f: HubFile) -> bool:
        """Answer `Range: bytes=FIRST-LAST` (both given) with 206 and just those bytes; False for other requests.
        The server that ignores Range answers it like any other GET (200, the whole file)."""
        rng = (self.headers.get("Range") or "").removeprefix("bytes=")
        first, _, last = rng.partition("-")
        if self.fake.faults.ignore_range or not (first.isdigit() and last.isdigit()):
            return False
        start, stop = int(first), min(int(last), f.size - 1)
        if start > stop:
            self._error(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{f.size}"})
            return True
        with f.source.open("rb") as fh:
            fh.seek(start)
            body = fh.read(stop - start + 1)
        self._send(206, body, {"Content-Range": f"bytes {start}-{stop}/{f.size}", "ETag": f'"{f.sha256}"',
                               "Accept-Ranges": "bytes"}, content_type="application/octet-stream")
        return True

    def _stream(self, f: HubFile, start: int) -> None:
        faults = self.fake.faults
        drop = self.fake.take_drop(f.sha256)
        stall = faults.stall_after.get(f.sha256)
        flip = faults.corrupt.get(f.sha256)
        pos = start
        chunk = 256 * 1024
        t0 = time.monotonic()
        with f.source.open("rb") as fh:
            fh.seek(start)
            while pos < f.size:
                n = chunk
                for limit in (drop, stall):
                    if limit is not None and pos < limit:
                        n = min(n, limit - pos)
                data = bytearray(fh.read(n))
                if not data:
                    break
                if flip is not None and pos <= flip < pos + len(data):
                    data[flip - pos] ^= 0xFF
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                pos += len(data)
                if drop is not None and pos >= drop:
                    self.close_connection = True
                    self.connection.shutdown(2)  # mid-body: the client sees the connection end early
                    return
                if stall is not None and pos >= stall:
                    self.fake.stalled.set()
                    self.fake.release.wait(timeout=30)
                    stall = None
                if faults.bytes_per_second:
                    ahead = (pos - start) / faults.bytes_per_second - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(min(ahead, 1.0))
        extra = self.fake.hostile.extra_bytes.get(f.sha256, 0)
        try:
            while extra > 0:  # what the listing does not account for: a client must stop reading
                n = min(extra, 256 * 1024)
                self.wfile.write(b"\0" * n)
                extra -= n
        except (BrokenPipeError, ConnectionResetError):
            return
