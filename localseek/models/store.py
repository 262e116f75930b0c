"""Where localseek keeps its state, what is installed, and locks against concurrent pulls.

- localseek's own state (the registry of installed models, converted GGUFs, locks) lives in LOCALSEEK_HOME, else the
  platform's user data dir (platformdirs). Weights from the Hub stay in the standard Hugging Face cache (HF_HOME),
  so files other tools fetched are found and files localseek fetched are visible to them.
- The registry is one JSON file, rewritten atomically (temp file + rename) under a lock. A model is registered only
  after every one of its files is in place and checked, so nothing half-downloaded is ever "installed".
- `remove` never deletes a file that another installed model, another Hugging Face cache snapshot, or a tool that
  fetched it before localseek did, still uses — and deletes only what it can prove it owns: files inside the HF
  cache folder of the model's repo, or inside LOCALSEEK_HOME's `models/` and `converted/`. A registry entry that
  points anywhere else (an edited registry.json) is unregistered and its files are kept, with the reason.
- Each file records what was checked when it was installed (`checked`: "sha256", "git-sha1", "size" or "none");
  registries written before that (a model-level `verified: bool`) are read and translated.

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
from localseek.models.paths import UnsafeNameError, check_repo_id, inside, is_blob_name, is_inside, shown

REGISTRY_VERSION = 1
HASH_CHECKS = ("sha256", "git-sha1")  # the content was compared with a hash the Hub gave
CHECKS = (*HASH_CHECKS, "size", "none")  # strongest first
OWNED_DIRS = ("models", "converted")  # folders in LOCALSEEK_HOME whose files localseek made (and may delete)


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
    """The cache folder of a model repo: models--owner--name. Raises UnsafeNameError for anything that is not a
    Hub repo id (it would name a folder elsewhere)."""
    return hf_cache_dir() / ("models--" + check_repo_id(repo).replace("/", "--"))


def owned_dirs() -> list[Path]:
    """The folders in LOCALSEEK_HOME that hold files localseek made (converted GGUFs)."""
    return [home() / d for d in OWNED_DIRS]


@dataclass(frozen=True)
class StoredFile:
    """One file of an installed model."""

    path: str  # what programs open: the snapshot entry in the HF cache, or a converted file
    blob: str  # the bytes on disk (the snapshot symlink's target; == path when there is no symlink)
    size: int
    repo_path: str = ""  # path inside the Hub repo ("" for converted files)
    sha256: str | None = None  # content hash (LFS files), computed from the bytes on disk
    git_oid: str | None = None  # git blob id (small non-LFS files), computed from the bytes on disk
    mtime_ns: int = 0  # of the blob when it was hashed: a changed file is verified again
    preexisting: bool = False  # was in the HF cache before localseek pulled it: never deleted by `rm`
    checked: str = "none"  # what it was compared with when installed: one of CHECKS


@dataclass(frozen=True)
class InstalledModel:
    name: str  # registry key: "r1-distill-qwen-7b:Q4_K_M", "owner/repo:Q8_0", "v2-lite:original"
    kind: str  # "gguf" or "original"
    files: tuple[StoredFile, ...]
    source: str  # "hub", "hf-cache" (found offline), "converted" (pull --quantize), "bundled" (nano)
    catalog_id: str | None = None
    repo: str | None = None
    revision: str | None = None  # the commit the files came from
    quant: str | None = None
    pulled_at: float = 0.0
    last_used: float | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def checked(self) -> str:
        """What its files were checked against, strongest first: "sha256", "sha256+git-sha1", "size", "none"…"""
        got = {f.checked for f in self.files}
        return "+".join(c for c in CHECKS if c in got) or "none"

    @property
    def verified(self) -> bool:
        """Every file's content matched a hash the Hub gave for it."""
        return self.source == "hub" and all(f.checked in HASH_CHECKS for f in self.files)

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
        data["verified"] = self.verified
        data["checked"] = self.checked
        return data

    @classmethod
    def from_json(cls, data: object) -> InstalledModel:
        """A registry entry, type-checked (the file is user-writable: a wrong type is a clear error, not a crash).
        Raises ValueError or TypeError naming the bad key."""
        if not isinstance(data, dict):
            raise TypeError("not an object")
        raw_files = data.get("files")
        if not isinstance(raw_files, list) or not raw_files:
            raise ValueError("'files' is not a non-empty list")
        keep = _typed(data, _MODEL_TYPES, "")
        for key in ("name", "kind", "source"):
            if key not in keep:
                raise ValueError(f"'{key}' is missing")
        files = []
        for i, f in enumerate(raw_files):
            if not isinstance(f, dict):
                raise TypeError(f"files[{i}] is not an object")
            fields = _typed(f, _FILE_TYPES, f"files[{i}].")
            for key in ("path", "blob", "size"):
                if key not in fields:
                    raise ValueError(f"files[{i}].{key} is missing")
            if "checked" not in fields:  # written before per-file checks were recorded
                fields["checked"] = _legacy_check(fields, keep["source"])
            elif fields["checked"] not in CHECKS:
                raise ValueError(f"files[{i}].checked is {shown(fields['checked'])}, not one of {', '.join(CHECKS)}")
            files.append(StoredFile(**fields))
        return cls(files=tuple(files), **keep)


_S, _N, _I, _F, _B = (str,), (type(None),), (int,), (int, float), (bool,)
_FILE_TYPES: dict[str, tuple[type, ...]] = {
    "path": _S, "blob": _S, "size": _I, "repo_path": _S, "sha256": _S + _N, "git_oid": _S + _N, "mtime_ns": _I,
    "preexisting": _B, "checked": _S,
}
_MODEL_TYPES: dict[str, tuple[type, ...]] = {
    "name": _S, "kind": _S, "source": _S, "catalog_id": _S + _N, "repo": _S + _N, "revision": _S + _N,
    "quant": _S + _N, "pulled_at": _F, "last_used": _F + _N,
}


def _typed(data: dict, types: dict[str, tuple[type, ...]], where: str) -> dict:
    """The known keys of `data`, each of its declared type (unknown keys, like the old `verified`, are dropped)."""
    out = {}
    for key, allowed in types.items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError(f"{where}{key} is {shown(value, 40)}, not {' or '.join(t.__name__ for t in allowed)}")
        if key in ("size", "mtime_ns") and value < 0:
            raise ValueError(f"{where}{key} is negative")
        out[key] = value
    return out


def _legacy_check(fields: dict, source: str) -> str:
    """What a file registered by an older localseek was checked with: a recorded hash was compared; without one,
    a Hub download had only its size checked, and a file found offline had nothing checked."""
    if fields.get("sha256"):
        return "sha256"
    if fields.get("git_oid"):
        return "git-sha1"
    return "size" if source == "hub" else "none"


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
    except OSError as exc:  # the folder, not the file: a home that is not a folder, or not ours to read
        raise StoreError(f"Cannot read the registry {path} ({exc.strerror}); localseek keeps its files in "
                         f"{home()}: check that it is a folder this user can write, or set LOCALSEEK_HOME "
                         "to another.") from exc
    except ValueError as exc:
        raise StoreError(f"The registry {path} is unreadable ({exc}); move it away to start over.") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models", {}), dict):
        raise StoreError(f"The registry {path} is not a localseek registry; move it away to start over.")
    if raw.get("version") != REGISTRY_VERSION:
        raise StoreError(f"The registry {path} has version {shown(raw.get('version'))}; this localseek reads "
                         f"version {REGISTRY_VERSION}. Upgrade localseek.")
    models = {}
    for name, entry in raw.get("models", {}).items():
        try:
            model = InstalledModel.from_json(entry)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"The registry {path} has a malformed entry {shown(name)} ({exc}); delete that entry "
                             "or move the file away to start over.") from exc
        models[name] = model
    return models


def _write(models: dict[str, InstalledModel]) -> None:
    path = _registry_path()
    data = {"version": REGISTRY_VERSION, "models": {n: m.to_json() for n, m in sorted(models.items())}}
    tmp = inside(path.with_name(f".{path.name}.{os.getpid()}.tmp"), home())  # home itself may be a symlink
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
            if f.checked in HASH_CHECKS and (f.sha256 or f.git_oid) and f.size == st.st_size \
                    and f.mtime_ns == st.st_mtime_ns and os.path.realpath(f.blob) == real:
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


def _foreign_links(blob: Path, snapshots: Path, ours: set[str]) -> list[str]:
    """Snapshot entries in the repo's `snapshots` folder that point at `blob`, other than `ours`."""
    ours = {_norm(p) for p in ours}
    found = []
    for root, _dirs, files in os.walk(snapshots):
        for name in files:
            p = os.path.join(root, name)
            if _norm(p) in ours:
                continue
            if os.path.islink(p) and os.path.realpath(p) == str(blob):
                found.append(p)
    return found


@dataclass(frozen=True)
class _Owned:
    """What `rm` may delete of one file, each path proven to lie inside the model's own folder (None: not proven)."""

    root: Path | None  # the folder it all lies in: the repo's HF cache folder, or LOCALSEEK_HOME
    top: str = ""  # the part of `root` its entries live in (empty folders below it are pruned)
    entry: Path | None = None  # a snapshot entry (symlink) to unlink: its folders resolved, inside root/top
    data: Path | None = None  # the bytes: fully resolved, inside root/data_sub
    data_sub: str = ""
    why_not: str = ""


def _ownership(model: InstalledModel, f: StoredFile) -> _Owned:
    """Which of `f`'s paths localseek can prove it owns. A hub model's files live in the HF cache folder of its
    repo (entry under `snapshots/`, bytes in `blobs/<hash>`); a converted or bundled model's in LOCALSEEK_HOME's
    OWNED_DIRS. Anything else was not put there by localseek (an edited registry.json): never deleted."""
    if model.source in ("hub", "hf-cache"):
        try:
            folder = repo_folder(model.repo or "")
        except UnsafeNameError:
            return _Owned(None, why_not=f"its repo {shown(model.repo)} is not a Hub repo id, so localseek cannot "
                                        "prove the file is its own")
        entry = is_inside(f.path, folder, sub="snapshots", follow=False)
        data_sub = "snapshots" if f.path == f.blob else "blobs"  # a copy where symlinks are not available
        data = is_inside(f.blob, folder, sub=data_sub)
        if data is not None and f.path != f.blob and not is_blob_name(data.name):
            data = None
        why = "" if data else f"not inside the Hugging Face cache folder of {model.repo} ({folder})"
        return _Owned(folder, "snapshots", entry, data, data_sub, why)
    if model.source in ("converted", "bundled") and f.path == f.blob:
        for d in OWNED_DIRS:
            data = is_inside(f.path, home(), sub=d)
            if data is not None:
                return _Owned(home(), d, None, data, d)
        return _Owned(None, why_not=f"outside localseek's folders ({', '.join(map(str, owned_dirs()))})")
    return _Owned(None, why_not=f"its source {shown(model.source)} is not one localseek deletes files of")


def remove(name: str) -> Removal:
    """Unregister `name` and delete the files no one else uses and localseek can prove it owns.
    Raises StoreError if it is not installed."""
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
                other_paths.add(_norm(f.path))
        our_paths = {f.path for f in model.files}
        _write(models)  # unregistered first: a crash below leaves stray files, never a broken "installed" model
        prune: set[tuple[Path, Path, str]] = set()
        for f in model.files:
            owned = _ownership(model, f)
            why = None
            if owned.data is None:
                why = f"{owned.why_not}; unregistered, not deleted"
            elif str(owned.data) in other_blobs:
                why = f"also used by {other_blobs[str(owned.data)]}"
            elif f.preexisting:
                why = "was in the Hugging Face cache before localseek pulled it"
            elif owned.entry is not None and owned.root is not None \
                    and _foreign_links(owned.data, owned.root / owned.top, our_paths):
                why = "another Hugging Face cache snapshot uses it"
            root = owned.root
            if owned.entry is not None and root is not None:
                if str(owned.entry) not in other_paths and f.path != f.blob and not f.preexisting:
                    _unlink(inside(owned.entry, root, sub=owned.top, action="delete", follow=False))
                prune.add((owned.entry.parent, root, owned.top))
            if why:
                result.kept.append((f.path, why))
                continue
            assert owned.data is not None and root is not None
            if _unlink(inside(owned.data, root, sub=owned.data_sub, action="delete")):
                result.deleted.append(f.blob)
            prune.add((owned.data.parent, root, owned.top))
        for start, root, top in sorted(prune):
            _prune_empty_dirs(start, root, top)
        return result


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _prune_empty_dirs(start: Path, root: Path, top: str) -> None:
    """Remove now-empty folders from `start` up to (not including) `root`/`top`, and only inside it."""
    p = start
    for _ in range(64):
        if is_inside(p, root, sub=top, follow=False) is None:
            return
        try:
            p.rmdir()
        except OSError:
            return
        p = p.parent


__all__ = [
    "CHECKS", "HASH_CHECKS", "InstalledModel", "Removal", "StoreError", "StoredFile", "get", "hf_cache_dir", "home", "installed", "owned_dirs", "owners",
    "pull_lock", "register", "remove", "repo_folder", "touch", "verified_copy",
]
