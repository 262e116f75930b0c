"""Models other tools already keep on this machine, found where those tools put them and used in place.

Nothing here writes, moves or deletes anything: the files belong to the tool that fetched them (`rm` says which
tool removes them). Each layout is read as that tool writes it:

- **Ollama** (`OLLAMA_MODELS`, else `~/.ollama/models`; the Linux service's `/usr/share/ollama/.ollama/models`):
  `manifests/HOST/NAMESPACE/MODEL/TAG` is an OCI-style JSON manifest whose `application/vnd.ollama.image.model`
  layer names the GGUF by digest; the bytes are `blobs/sha256-HEX` (`sha256:HEX` before Ollama 0.1.3x). The config
  blob's `file_type` is the quant. Shown as Ollama shows it: `deepseek-r1:7b`, `user/model:tag`,
  `hf.co/OWNER/REPO:QUANT`.
- **LM Studio** (`~/.lmstudio/models`, or where `~/.lmstudio-home-pointer` / its settings' `downloadsFolder` point;
  older versions `~/.cache/lm-studio/models`): `PUBLISHER/REPO/FILE.gguf`, the Hub repo's own name.
- **llama.cpp's `-hf` cache**: since 2026 the standard Hugging Face cache (`LLAMA_CACHE`, else the HF cache), and
  before that flat files in `LLAMA_CACHE` or `~/.cache/llama.cpp` (`~/Library/Caches/llama.cpp`,
  `%LOCALAPPDATA%\\llama.cpp`): `OWNER_REPO_FILE.gguf` beside `manifest=OWNER=REPO=TAG.json` (the Hub's manifest,
  whose `ggufFile.rfilename` names the file).
- **The Hugging Face cache** (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`): `models--OWNER--REPO/
  snapshots/COMMIT/…/FILE.gguf` (`hf download`, llama.cpp). Files of models localseek installed are not repeated.
- **Folders in `LOCALSEEK_MODELS_PATH`** (separated like PATH): any `.gguf` inside, a few levels deep.

Hub-style names (`OWNER/REPO:QUANT`) are what `run OWNER/REPO:QUANT` and catalog names match, so a model LM Studio
or llama.cpp already downloaded is not downloaded again. Every scan is bounded (depth, entries, manifest size).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localseek.models.quants import (
    FALLBACK_ORDER,
    SPLIT_RE,
    is_quant,
    normalize_quant,
    quant_of_path,
    split_name,
)
from localseek.models.listing import is_auxiliary
from localseek.models.refs import LATEST, canonical

SOURCES = {
    "ollama": "Ollama",
    "lm-studio": "LM Studio",
    "hf-cache": "Hugging Face cache",
    "llama.cpp": "llama.cpp cache",
    "folder": "LOCALSEEK_MODELS_PATH",
}
REMOVE_HINT = {
    "ollama": "`ollama rm {name}`",
    "lm-studio": "LM Studio's My Models tab (or `lms rm`)",
    "hf-cache": "`hf cache delete`",
    "llama.cpp": "deleting it from {where}",
    "folder": "deleting the file yourself",
}
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
_DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")
_OLLAMA_PART_RE = re.compile(r"^[A-Za-z0-9][\w.:-]{0,127}$")  # host (with a port), namespace, model, tag
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # a name or path with these is not shown or used
MAX_JSON = 1 << 20  # a manifest or config blob is a few hundred bytes; anything over 1 MiB is not one
MAX_ENTRIES = 20_000  # directory entries looked at per root
MAX_DEPTH = 6
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class FoundModel:
    """A GGUF another tool keeps: what to call it, whose it is, where its bytes are."""

    name: str  # as its tool shows it (Ollama) or as a Hub reference (OWNER/REPO:QUANT), else the file's stem
    source: str  # a key of SOURCES
    path: Path  # the GGUF to open (the first part of a split model)
    size: int  # bytes, all parts
    root: Path  # the folder it was found under
    repo: str | None = None  # the Hub repo it came from, when the layout says
    quant: str | None = None
    aliases: tuple[str, ...] = ()  # other spellings that mean it (hf.co/…, OWNER/REPO:FILE.gguf, the file name)

    @property
    def tool(self) -> str:
        return SOURCES[self.source]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def remove_hint(self) -> str:
        return REMOVE_HINT[self.source].format(name=self.name, where=self.root)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "tool": self.tool, "path": str(self.path),
                "size": self.size, "repo": self.repo, "quant": self.quant, "aliases": list(self.aliases)}


# ───────────────────────────── where the tools keep models ─────────────────────────────

def _home() -> Path:
    return Path(os.path.expanduser("~"))


def ollama_roots() -> list[Path]:
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        return [Path(env).expanduser()]
    return [_home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def lmstudio_roots() -> list[Path]:
    home = _home()
    lms = home / ".lmstudio"
    pointer = home / ".lmstudio-home-pointer"
    roots: list[Path] = []
    text = _small_text(pointer)
    if text and text.strip():
        lms = Path(text.strip()).expanduser()
    settings = _small_json(lms / "settings.json")
    folder = settings.get("downloadsFolder") if isinstance(settings, dict) else None
    if isinstance(folder, str) and folder.strip():
        roots.append(Path(folder).expanduser())
    roots += [lms / "models", home / ".cache" / "lm-studio" / "models"]
    return roots


def llamacpp_roots() -> list[Path]:
    """Where llama.cpp's legacy flat `-hf` cache is (LLAMA_CACHE, else the platform's cache folder)."""
    env = os.environ.get("LLAMA_CACHE")
    if env:
        return [Path(env).expanduser()]
    if sys.platform == "darwin":
        return [_home() / "Library" / "Caches" / "llama.cpp"]
    if sys.platform == "win32":
        return [Path(os.environ.get("LOCALAPPDATA") or _home() / "AppData" / "Local") / "llama.cpp"]
    xdg = os.environ.get("XDG_CACHE_HOME")
    return [Path(xdg) / "llama.cpp" if xdg else _home() / ".cache" / "llama.cpp"]


def hf_cache_roots() -> list[Path]:
    """The Hugging Face cache, and LLAMA_CACHE when set (llama.cpp keeps its HF-layout cache there)."""
    from localseek.models import store

    roots = [store.hf_cache_dir()]
    if os.environ.get("LLAMA_CACHE"):
        roots.append(Path(os.environ["LLAMA_CACHE"]).expanduser())
    return roots


def folder_roots() -> list[Path]:
    text = os.environ.get("LOCALSEEK_MODELS_PATH", "")
    return [Path(p).expanduser() for p in text.split(os.pathsep) if p.strip()]


# ───────────────────────────── small, bounded reads ─────────────────────────────

def _small_text(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _small_json(path: Path) -> object:
    text = _small_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _ggufs(root: Path, max_depth: int = MAX_DEPTH) -> Iterator[Path]:
    """`.gguf` files under `root` (symlinks to files followed, folder symlinks not), bounded in depth and count."""
    seen = 0
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - base
        if depth >= max_depth:
            dirs[:] = []
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            seen += 1
            if seen > MAX_ENTRIES:
                return
            if name.lower().endswith(".gguf") and not is_auxiliary(name):  # projectors, MTP files: not models
                yield Path(folder) / name
        seen += len(dirs)
        if seen > MAX_ENTRIES:
            return


def _complete_set(path: Path) -> tuple[Path, int] | None:
    """(first part, total size) of the model `path` belongs to; None for a later part or an incomplete set."""
    m = SPLIT_RE.match(path.name)
    if not m:
        return path, _size(path)
    if int(m["idx"]) != 1:
        return None
    parts = [path.with_name(split_name(m["stem"], i, int(m["count"]))) for i in range(1, int(m["count"]) + 1)]
    if not all(p.exists() for p in parts):
        return None
    return path, sum(_size(p) for p in parts)


def _stem(name: str) -> str:
    m = SPLIT_RE.match(name)
    return m["stem"] if m else name.removesuffix(".gguf")


def _hub_names(repo: str, file_path: str) -> tuple[str, tuple[str, ...], str | None]:
    """The name a GGUF from `repo` goes by (OWNER/REPO:QUANT, else OWNER/REPO:FILE), its other names, its quant."""
    quant = quant_of_path(file_path)
    file_name = file_path.rsplit("/", 1)[-1]
    by_file = f"{repo}:{file_name}"
    if quant:
        return f"{repo}:{quant}", (by_file, f"hf.co/{repo}:{quant}"), quant
    return by_file, (), None


# ───────────────────────────── the scanners ─────────────────────────────

def _ollama(root: Path) -> Iterator[FoundModel]:
    manifests = root / "manifests"
    if not manifests.is_dir():
        return
    seen = 0
    for host in sorted(p for p in manifests.iterdir() if p.is_dir()):
        for namespace in sorted(p for p in host.iterdir() if p.is_dir()):
            for model in sorted(p for p in namespace.iterdir() if p.is_dir()):
                for tag in sorted(p for p in model.iterdir() if p.is_file()):
                    seen += 1
                    if seen > MAX_ENTRIES:
                        return
                    if not all(_OLLAMA_PART_RE.match(p.name) for p in (host, namespace, model, tag)):
                        continue  # not a name Ollama writes
                    found = _ollama_model(root, host.name, namespace.name, model.name, tag)
                    if found is not None:
                        yield found


def _ollama_blob(root: Path, digest: object) -> Path | None:
    m = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
    if not m:  # only real sha256 digests become paths (Ollama checks the same)
        return None
    for name in (f"sha256-{m[1]}", f"sha256:{m[1]}"):
        blob = root / "blobs" / name
        if blob.is_file():
            return blob
    return None


def _ollama_model(root: Path, host: str, namespace: str, model: str, tag: Path) -> FoundModel | None:
    manifest = _small_json(tag)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        return None
    layer = next((x for x in manifest["layers"] if isinstance(x, dict) and x.get("mediaType") == MODEL_MEDIA_TYPE),
                 None)
    if layer is None:
        return None  # safetensors-based models, adapters only, …: not a GGUF llama.cpp can open
    blob = _ollama_blob(root, layer.get("digest"))
    if blob is None or not _is_gguf(blob):
        return None
    config = manifest.get("config")
    cfg_blob = _ollama_blob(root, config.get("digest")) if isinstance(config, dict) else None
    cfg = _small_json(cfg_blob) if cfg_blob else None
    file_type = cfg.get("file_type") if isinstance(cfg, dict) else None
    quant = normalize_quant(file_type) if isinstance(file_type, str) and is_quant(file_type) else None
    if host == "registry.ollama.ai":
        short = model if namespace == "library" else f"{namespace}/{model}"
    else:
        short = f"{host}/{namespace}/{model}"
    name = f"{short}:{tag.name}"
    aliases: list[str] = []
    repo = None
    if host in ("hf.co", "huggingface.co"):
        repo = f"{namespace}/{model}"
        tag_quant = normalize_quant(tag.name) if is_quant(tag.name) else None
        quant = quant or tag_quant
        aliases.append(f"{repo}:{quant or tag.name}")
    if quant is None and is_quant(tag.name.rsplit("-", 1)[-1]):
        quant = normalize_quant(tag.name.rsplit("-", 1)[-1])  # deepseek-r1:7b-qwen-distill-q8_0
    return FoundModel(name=name, source="ollama", path=blob, size=_size(blob), root=root, repo=repo, quant=quant,
                      aliases=tuple(aliases))


def _lmstudio(root: Path) -> Iterator[FoundModel]:
    if not root.is_dir():
        return
    for path in _ggufs(root, max_depth=4):
        rel = path.relative_to(root).parts
        first = _complete_set(path)
        if first is None or not _is_gguf(path):
            continue
        repo = f"{rel[0]}/{rel[1]}" if len(rel) >= 3 and all(_REPO_PART_RE.match(p) for p in rel[:2]) else None
        if repo:
            name, aliases, quant = _hub_names(repo, "/".join(rel[2:]))
        else:
            name, aliases, quant = _stem(path.name), (), quant_of_path(path.name)
        yield FoundModel(name=name, source="lm-studio", path=path, size=first[1], root=root, repo=repo, quant=quant,
                         aliases=(*aliases, path.name))


def _hf_cache(root: Path, skip: set[str]) -> Iterator[FoundModel]:
    if not root.is_dir():
        return
    for folder in sorted(root.glob("models--*--*")):
        owner_repo = folder.name.removeprefix("models--").split("--", 1)
        if len(owner_repo) != 2 or not all(_REPO_PART_RE.match(p) for p in owner_repo):
            continue
        repo = "/".join(owner_repo)
        for snapshot in _snapshots(folder):
            for path in _ggufs(snapshot, max_depth=4):
                real = os.path.realpath(path)
                if real in skip or path.as_posix() in skip:
                    continue
                first = _complete_set(path)
                if first is None or not _is_gguf(path):
                    continue
                name, aliases, quant = _hub_names(repo, path.relative_to(snapshot).as_posix())
                yield FoundModel(name=name, source="hf-cache", path=path, size=first[1], root=root, repo=repo,
                                 quant=quant, aliases=aliases)


def _snapshots(folder: Path) -> list[Path]:
    """The snapshot `refs/main` points at (else any ref's, else every snapshot), as llama.cpp picks one."""
    snaps = folder / "snapshots"
    if not snaps.is_dir():
        return []
    refs = folder / "refs"
    commits = []
    for ref in (["main"] + sorted(p.name for p in refs.iterdir() if p.is_file() and p.name != "main")
                if refs.is_dir() else []):
        text = _small_text(refs / ref)
        if text and re.fullmatch(r"[0-9a-f]{40}", text.strip()):
            commits.append(text.strip())
    for commit in commits:
        if (snaps / commit).is_dir():
            return [snaps / commit]
    return sorted(p for p in snaps.iterdir() if p.is_dir())


def _llamacpp_flat(root: Path) -> Iterator[FoundModel]:
    if not root.is_dir():
        return
    named: dict[str, tuple[str, str]] = {}  # cache file name → (repo, tag)
    for manifest in sorted(root.glob("manifest=*=*=*.json")):
        bits = manifest.name.removesuffix(".json").split("=")
        if len(bits) != 4 or not all(_REPO_PART_RE.match(b) for b in bits[1:3]):
            continue
        data = _small_json(manifest)
        gguf = data.get("ggufFile") if isinstance(data, dict) else None
        rfilename = gguf.get("rfilename") if isinstance(gguf, dict) else None
        if isinstance(rfilename, str) and rfilename.endswith(".gguf") and ".." not in rfilename:
            repo = f"{bits[1]}/{bits[2]}"
            named[f"{bits[1]}_{bits[2]}_{rfilename.replace('/', '_')}"] = (repo, bits[3])
    for path in sorted(root.glob("*.gguf")):
        first = _complete_set(path)
        if first is None or not _is_gguf(path):
            continue
        if path.name in named:
            repo, tag = named[path.name]
            name, aliases, quant = _hub_names(repo, path.name.removeprefix(repo.replace("/", "_") + "_"))
            if tag.lower() != LATEST[1:] and is_quant(tag):
                quant = normalize_quant(tag)
                name, aliases = f"{repo}:{quant}", (*aliases, f"hf.co/{repo}:{quant}")
            aliases = (*aliases, path.name)
        else:
            repo, name, aliases, quant = None, _stem(path.name), (path.name,), quant_of_path(path.name)
        yield FoundModel(name=name, source="llama.cpp", path=path, size=first[1], root=root, repo=repo,
                         quant=quant, aliases=aliases)


def _folder(root: Path) -> Iterator[FoundModel]:
    if not root.is_dir():
        return
    for path in _ggufs(root, max_depth=4):
        first = _complete_set(path)
        if first is None or not _is_gguf(path):
            continue
        yield FoundModel(name=_stem(path.name), source="folder", path=path, size=first[1], root=root,
                         quant=quant_of_path(path.name), aliases=(path.name,))


# ───────────────────────────── what callers use ─────────────────────────────

def find_all() -> list[FoundModel]:
    """Every model the tools above keep on this machine (files of models localseek installed left out)."""
    from localseek.models import store

    ours = set()
    for model in store.installed().values():
        for f in model.files:
            ours.add(os.path.realpath(f.path))
            ours.add(Path(f.path).as_posix())
    found: list[FoundModel] = []
    seen: set[tuple[str, str]] = set()  # (file, name): one file may go by several names (Ollama's tags)
    scans = ([_ollama(r) for r in _unique(ollama_roots())] + [_lmstudio(r) for r in _unique(lmstudio_roots())]
             + [_hf_cache(r, ours) for r in _unique(hf_cache_roots())]
             + [_llamacpp_flat(r) for r in _unique(llamacpp_roots())] + [_folder(r) for r in _unique(folder_roots())])
    for scan in scans:
        try:
            for model in scan:
                if _CONTROL_RE.search(str(model.path)) or _CONTROL_RE.search(model.name):
                    continue  # a name that could drive the terminal is nobody's model
                real = os.path.realpath(model.path)
                if real in ours or (real, model.name) in seen:  # localseek's own, or a root scanned twice
                    continue
                seen.add((real, model.name))
                found.append(model)
        except OSError:  # a folder that vanished or cannot be read: what was found so far stands
            continue
    return found


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def lookup(ref: str, models: list[FoundModel] | None = None) -> FoundModel | None:
    """The found model `ref` names exactly (any of its names, any case, `:latest` and `hf.co/` as anywhere)."""
    want = canonical(ref).lower()
    for model in models if models is not None else find_all():
        if any(canonical(n).lower() == want for n in model.names):
            return model
    return None


def for_catalog(spec_names: tuple[str, ...], repos: tuple[str, ...], quant: str | None, default_quant: str | None,
                models: list[FoundModel] | None = None) -> FoundModel | None:
    """A found copy of a catalog model: an Ollama model under one of its names, or a GGUF from one of its source
    repos. `quant` (asked for) must match; without one the default quant is preferred, else the closest."""
    names = {canonical(n).lower() for n in spec_names}
    lowered = {r.lower() for r in repos}
    hits = [m for m in (models if models is not None else find_all())
            if (m.repo and m.repo.lower() in lowered)
            or (m.source == "ollama" and canonical(m.name).lower() in names)]
    return _best(hits, quant, default_quant)


def for_repo(repo: str, selector: str | None, models: list[FoundModel] | None = None) -> FoundModel | None:
    """A found GGUF of Hub repo `repo`: the quant or file `selector` names, else the closest to Q4_K_M."""
    hits = [m for m in (models if models is not None else find_all()) if m.repo and m.repo.lower() == repo.lower()]
    if selector and not is_quant(selector):
        sel = selector.lower()
        return next((m for m in hits if any(n.lower().endswith(sel) for n in (m.path.name, *m.aliases))), None)
    return _best(hits, normalize_quant(selector) if selector else None, None)


def _best(hits: list[FoundModel], quant: str | None, default: str | None) -> FoundModel | None:
    if quant:
        return next((m for m in hits if m.quant == normalize_quant(quant)), None)
    order = [q for q in (default, *FALLBACK_ORDER) if q]
    ranked = sorted(hits, key=lambda m: order.index(m.quant) if m.quant in order else len(order))
    return ranked[0] if ranked else None


def owner_of(path: Path, models: list[FoundModel] | None = None) -> FoundModel | None:
    """The found model whose file `path` is (the same file, through any symlink)."""
    real = os.path.realpath(path)
    return next((m for m in (models if models is not None else find_all()) if os.path.realpath(m.path) == real),
                None)


__all__ = ["SOURCES", "FoundModel", "find_all", "for_catalog", "for_repo", "lookup", "owner_of"]
