"""Where localseek keeps its state, what is installed, and locks against concurrent pulls.

- localseek's own state (the registry of installed models, converted GGUFs, locks) lives in LOCALSEEK_HOME, else the
  platform's user data dir (platformdirs). Weights from the Hub stay in the standard Hugging Face cache (HF_HOME),
  so files other tools fetched are found and files localseek fetched are visible to them.
- The registry is one JSON file, rewritten atomically (temp file + rename) under a lock. A model is registered only
  after every one of its files is in place and verified, so nothing half-downloaded is ever "installed".
- `remove` never deletes a file that another installed model, another Hugging Face cache snapshot, or a tool that
  fetched it before localseek did, still uses.

No network here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from filelock import FileLock, Timeout
from platformdirs import user_data_path

from localseek.errors import LocalseekError

REGISTRY_VERSION = 1


def home() -> Path:
    """LOCALSEEK_HOME, else the platform's user data dir (~/.local/share/localseek on Linux)."""
    override = os.environ.get("LOCALSEEK_HOME")
    return Path(override).expanduser() if override else user_data_path("localseek", appauthor=False)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved the way huggingface_hub does (read at call time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(os.path.expandvars(hf_home)).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def repo_folder(repo: str) -> Path:
    """The cache folder of a model repo: models--owner--name."""
    return hf_cache_dir() / ("models--" + repo.replace("/", "--"))


@dataclass(frozen=True)
class StoredFile:
    """One file of an installed model."""

    path: str  # what programs open: the snapshot entry in the HF cache, or a converted file
    blob: str  # the bytes on disk (the snapshot symlink's target; == path when there is no symlink)
    size: int
    repo_path: str = ""  # path inside the Hub repo ("" for converted files)
    sha256: str | None = None  # verified content hash (LFS files)
    git_oid: str | None = None  # verified git blob id (small non-LFS files)
    mtime_ns: int = 0  # of the blob when it was verified: a changed file is verified again
    preexisting: bool = False  # was in the HF cache before localseek pulled it: never deleted by `rm`


@dataclass(frozen=True)
class InstalledModel:
    name: str  # registry key: "r1-distill-qwen-7b:Q4_K_M", "owner/repo:Q8_0", "v2-lite:original"
    kind: str  # "gguf" or "original"
    files: tuple[StoredFile, ...]
    source: str  # "hub", "hf-cache" (found offline, not verified), "converted"
    catalog_id: str | None = None
    repo: str | None = None
    revision: str | None = None  # the commit the files came from
    quant: str | None = None
    pulled_at: float = 0.0
    last_used: float | None = None
    verified: bool = True

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def primary(self) -> Path:
        """What to load: the first GGUF part; for original weights, their folder."""
        if self.kind == "gguf":
            return Path(self.files[0].path)
        first = Path(self.files[0].path)
        depth = self.files[0].repo_path.count("/")
        for _ in range(depth):
            first = first.parent
        return first.parent

    def missing(self) -> list[str]:
        """Files that are gone or changed size since the pull."""
        out = []
        for f in self.files:
            try:
                if Path(f.path).stat().st_size != f.size:
                    out.append(f.path)
            except OSError:
                out.append(f.path)
        return out

    def to_json(self) -> dict:
        data = asdict(self)
        data["size"] = self.size
        data["path"] = str(self.primary)
        return data

    @classmethod
    def from_json(cls, data: dict) -> InstalledModel:
        files = tuple(StoredFile(**f) for f in data["files"])
        keep = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "files"}
        return cls(files=files, **keep)


class StoreError(LocalseekError):
    """The registry is unreadable, or a lock could not be taken."""


def _registry_path() -> Path:
    return home() / "registry.json"


@contextmanager
def _registry_lock() -> Iterator[None]:
    h = home()
    h.mkdir(parents=True, exist_ok=True)
    with FileLock(str(h / "registry.lock"), timeout=60):
        yield


def _read() -> dict[str, InstalledModel]:
    path = _registry_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"The registry {path} is unreadable ({exc}); move it away to start over.") from exc
    if raw.get("version") != REGISTRY_VERSION:
        raise StoreError(f"The registry {path} has version {raw.get('version')!r}; this localseek reads version "
                         f"{REGISTRY_VERSION}. Upgrade localseek.")
    return {name: InstalledModel.from_json(m) for name, m in raw.get("models", {}).items()}


def _write(models: dict[str, InstalledModel]) -> None:
    path = _registry_path()
    data = {"version": REGISTRY_VERSION, "models": {n: m.to_json() for n, m in sorted(models.items())}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def installed() -> dict[str, InstalledModel]:
    """Every installed model, by registry name."""
    return _read()


def get(name: str) -> InstalledModel | None:
    return _read().get(name)


def register(model: InstalledModel) -> None:
    with _registry_lock():
        models = _read()
        models[model.name] = model
        _write(models)


def touch(name: str) -> None:
    """Record that a model was just used (for `list`). Best effort: never fails a run."""
    try:
        with _registry_lock():
            models = _read()
            if name in models:
                models[name] = replace(models[name], last_used=time.time())
                _write(models)
    except (LocalseekError, OSError, Timeout):
        pass


def verified_copy(blob: Path) -> StoredFile | None:
    """A registry record that already verified this exact blob (same size and mtime), to skip hashing it again."""
    try:
        st = blob.stat()
    except OSError:
        return None
    real = os.path.realpath(blob)
    for model in _read().values():
        for f in model.files:
            if (f.sha256 or f.git_oid) and f.size == st.st_size and f.mtime_ns == st.st_mtime_ns \
                    and os.path.realpath(f.blob) == real:
                return f
    return None


def owners(blob: Path | str) -> list[str]:
    """Registered models that use this blob."""
    real = os.path.realpath(blob)
    return [m.name for m in _read().values() if any(os.path.realpath(f.blob) == real for f in m.files)]


# ───────────────────────────── locks ─────────────────────────────

def _lock_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)


@contextmanager
def pull_lock(key: str, on_wait: Callable[[str], None] | None = None,
              timeout: float | None = None) -> Iterator[None]:
    """Hold the lock for pulling `key`. If another process holds it, call `on_wait` once and wait.

    `timeout` (seconds) bounds the wait; None waits until the other pull finishes (Ctrl-C stops waiting).
    """
    locks = home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{_lock_name(key)}.lock"))
    owner = locks / f"{_lock_name(key)}.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = ""
        try:
            who = f" (process {int(owner.read_text().strip())})"
        except (OSError, ValueError):
            pass
        if on_wait:
            on_wait(f"Another pull of {key} is running{who}; waiting for it to finish…")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise StoreError(f"Another pull of {key} is still running{who}; try again when it has finished.") from None
    try:
        owner.write_text(str(os.getpid()))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


# ───────────────────────────── removal ─────────────────────────────

@dataclass
class Removal:
    model: InstalledModel
    deleted: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def freed(self) -> int:
        return sum(f.size for f in self.model.files if f.blob in self.deleted)


def _norm(path: str) -> str:
    """A path with its folders resolved but not its last component (which may be a symlink we care about)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _foreign_links(blob: str, ours: set[str]) -> list[str]:
    """Snapshot entries in the same HF cache repo folder that point at `blob`, other than `ours`."""
    blob_path = Path(blob)
    if blob_path.parent.name != "blobs":
        return []
    snapshots = blob_path.parent.parent / "snapshots"
    ours = {_norm(p) for p in ours}
    found = []
    for root, _dirs, files in os.walk(snapshots):
        for name in files:
            p = os.path.join(root, name)
            if _norm(p) in ours:
                continue
            if os.path.islink(p) and os.path.realpath(p) == blob:
                found.append(p)
    return found


def remove(name: str) -> Removal:
    """Unregister `name` and delete the files no one else uses. Raises StoreError if it is not installed."""
    with _registry_lock():
        models = _read()
        model = models.pop(name, None)
        if model is None:
            raise StoreError(f"{name} is not installed; `localseek list` shows what is.")
        result = Removal(model)
        other_blobs: dict[str, str] = {}
        other_paths: set[str] = set()
        for other in models.values():
            for f in other.files:
                other_blobs.setdefault(os.path.realpath(f.blob), other.name)
                other_paths.add(f.path)
        our_paths = {f.path for f in model.files}
        _write(models)  # unregistered first: a crash below leaves stray files, never a broken "installed" model
        for f in model.files:
            real = os.path.realpath(f.blob)
            why = None
            if real in other_blobs:
                why = f"also used by {other_blobs[real]}"
            elif f.preexisting:
                why = "was in the Hugging Face cache before localseek pulled it"
            elif _foreign_links(real, our_paths):
                why = "another Hugging Face cache snapshot uses it"
            if f.path not in other_paths and f.path != f.blob and not f.preexisting:
                _unlink(f.path)
            if why:
                result.kept.append((f.path, why))
                continue
            if _unlink(real):
                result.deleted.append(f.blob)
        for f in model.files:
            _prune_empty_dirs(Path(f.path).parent)
        return result


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _prune_empty_dirs(start: Path) -> None:
    """Remove now-empty snapshot folders (never the cache root or the blobs folder)."""
    p = start
    for _ in range(8):
        if p.name in ("snapshots", "blobs", "hub") or p == p.parent:
            return
        try:
            p.rmdir()
        except OSError:
            return
        p = p.parent


__all__ = [
    "InstalledModel", "Removal", "StoreError", "StoredFile", "get", "hf_cache_dir", "home", "installed", "owners",
    "pull_lock", "register", "remove", "repo_folder", "touch", "verified_copy",
]
