"""From a name to an installed model: catalog → hub → store, and back from a name to what is installed.

Names a user may type:
- catalog names and aliases, with an optional quant: `deepseek-r1:7b`, `r1-distill-qwen-7b:Q8_0`, `deepseek-r1:7b-q8_0`;
- any Hub repo: `OWNER/REPO` (its only GGUF, or Q4_K_M), `OWNER/REPO:QUANT`, `OWNER/REPO:path/in/repo.gguf` or a glob;
- registry names as `localseek list` shows them (`r1-distill-qwen-7b:Q4_K_M`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localseek.errors import HubError, IntegrityError, ModelFileError, NotInstalledError, UsageError
from localseek.models import store
from localseek.models.catalog import Catalog, ModelSpec, UnknownModelError, load_catalog
from localseek.models.hub import (
    Hub,
    LocalFile,
    Progress,
    RepoUnavailableError,
    UnverifiableError,
    offline_mode,
)
from localseek.models.listing import (
    FileSet,
    RemoteFile,
    RepoListing,
    available_quants,
    gguf_sets,
    mtp_sibling,
    original_files,
    select_files,
    select_quant,
)
from localseek.models.paths import OutsideRootError, inside
from localseek.models.quants import FALLBACK_ORDER, is_quant, normalize_quant
from localseek.models.refs import canonical
from localseek.sizes import format_size

HUB_REF_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<sel>.+))?$")


class NotAModelFileError(IntegrityError):
    """A downloaded file named like a GGUF (or safetensors) file does not start like one: it is not installed."""


@dataclass(frozen=True)
class Target:
    """What a name refers to, before anything is fetched."""

    spec: ModelSpec | None = None  # a catalog model
    quant: str | None = None  # requested quant (None: the default)
    repo: str | None = None  # an arbitrary Hub repo
    selector: str | None = None  # for a Hub repo: quant, file path or glob

    @property
    def label(self) -> str:
        if self.spec:
            return f"{self.spec.id}:{self.quant}" if self.quant else self.spec.id
        return f"{self.repo}:{self.selector}" if self.selector else str(self.repo)


@dataclass
class PullResult:
    model: store.InstalledModel
    already_installed: bool = False
    downloaded: int = 0  # bytes transferred by this pull
    reused: int = 0  # bytes found in the HF cache
    notes: list[str] = field(default_factory=list)


def looks_like_path(ref: str) -> bool:
    ref = canonical(ref)  # hf.co/OWNER/REPO is a Hub reference, not a folder
    if ref.startswith(("./", "../", "/", "~", ".\\")) or "\\" in ref:
        return True
    if ref.lower().endswith(".gguf") and ":" not in ref:
        return True
    return "/" in ref and not HUB_REF_RE.match(ref)


def parse_ref(ref: str, catalog: Catalog | None = None) -> Target:
    """Raises UnknownModelError with "did you mean" for names that are neither catalog names nor Hub repos."""
    catalog = catalog or load_catalog()
    ref = canonical(ref)
    resolved = catalog.resolve(ref)
    if resolved:
        return Target(spec=resolved.spec, quant=resolved.quant)
    m = HUB_REF_RE.match(ref)
    if m:
        return Target(repo=m["repo"], selector=m["sel"])
    raise catalog.unknown(ref, extra=list(store.installed()))


# ───────────────────────────── what is installed ─────────────────────────────

def find_installed(ref: str, catalog: Catalog | None = None) -> store.InstalledModel | None:
    """The installed model a name refers to, or None. Several quants of one model: the catalog default, else the
    most recently used or pulled."""
    ref = canonical(ref)
    models = store.installed()
    if ref in models:
        return models[ref]
    lowered = {n.lower(): m for n, m in models.items()}
    if ref.lower() in lowered:
        return lowered[ref.lower()]
    catalog = catalog or load_catalog()
    try:
        target = parse_ref(ref, catalog)
    except UnknownModelError:
        return None
    if target.spec:
        spec = target.spec
        hits = [m for m in models.values() if m.catalog_id == spec.id and (
            m.quant == target.quant if target.quant else True)]
        gguf = [m for m in hits if m.kind == "gguf"] or hits
        if not gguf:
            return None
        default = [m for m in gguf if m.quant == spec.default_quant]
        return default[0] if default else max(gguf, key=lambda m: (m.last_used or 0, m.pulled_at))
    hits = [m for m in models.values() if m.repo == target.repo]
    if target.selector:
        sel = target.selector
        q = normalize_quant(sel) if is_quant(sel) else None
        hits = [m for m in hits if (q and m.quant == q) or any(
            f.repo_path == sel or f.repo_path.rsplit("/", 1)[-1] == sel for f in m.files)]
    return max(hits, key=lambda m: (m.last_used or 0, m.pulled_at)) if hits else None


def expected_size(target: Target) -> int | None:
    """What the catalog says a pull of `target` weighs (for the "download N GB?" question)."""
    if target.spec:
        return target.spec.size_of(target.quant)
    return None


# ───────────────────────────── pulling ─────────────────────────────

def pull(ref: str, *, original: bool = False, quantize: str | None = None, progress: Progress | None = None,
         hub: Hub | None = None, verify: bool = True) -> PullResult:
    """Download (or find in the HF cache) what `ref` names, verify it, and register it. Returns the installed model.

    verify=False (`--no-verify`) installs files that cannot be checked against a hash from the Hub (a mirror that
    lists none, or the HF cache offline); each file's record says what was checked. Files that claim to be GGUF or
    safetensors are checked for their magic either way.
    Raises LocalseekError subclasses with one line that says what to do.
    """
    progress = progress or Progress()
    hub = hub or Hub()
    catalog = load_catalog()
    ref = canonical(ref)
    if looks_like_path(ref) and catalog.resolve(ref) is None:
        raise UsageError(f"{ref} is a file path: `localseek run {ref}` uses a local GGUF as it is; `pull` fetches "
                         "catalog names and Hub repos (OWNER/REPO).")
    target = parse_ref(ref, catalog)
    if quantize:
        original = True
    if original:
        result = _pull_original(target, hub, progress, verify)
        if quantize:
            result = _convert(result, normalize_quant(quantize), progress)
        return result
    if target.spec:
        return _pull_catalog_gguf(target, hub, progress, verify)
    return _pull_repo(target, hub, progress, catalog, verify)


def _installed_ok(key: str) -> store.InstalledModel | None:
    model = store.get(key)
    return model if model and not model.missing() else None


def _register(key: str, kind: str, repo: str, listing: RepoListing, local: list[LocalFile], *,
              catalog_id: str | None, quant: str | None) -> store.InstalledModel:
    files = tuple(
        store.StoredFile(path=str(f.path), blob=str(f.blob), size=f.remote.size, repo_path=f.remote.path,
                         sha256=f.sha256, git_oid=f.git_oid, mtime_ns=f.mtime_ns, preexisting=f.preexisting,
                         checked=f.checked)
        for f in local
    )
    model = store.InstalledModel(
        name=key, kind=kind, files=files, source="hf-cache" if listing.from_cache else "hub", catalog_id=catalog_id,
        repo=repo, revision=listing.commit, quant=quant, pulled_at=time.time(),
    )
    store.register(model)
    return model


def _content_problem(path: Path, repo_path: str) -> str | None:
    """Why a file named like a GGUF or safetensors file is not one (its first bytes), or None."""
    name = repo_path.lower()
    if not name.endswith((".gguf", ".safetensors")):
        return None
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if name.endswith(".gguf"):
        return None if head[:4] == b"GGUF" else f"is not a GGUF file (it starts with {head[:8]!r}, not b'GGUF')"
    n = int.from_bytes(head[:8], "little") if len(head) >= 9 else -1
    if 2 <= n <= size - 8 and head[8:9] == b"{":
        return None
    return f"is not a safetensors file (it starts with {head[:8]!r}, not a header length and JSON)"


def _check_contents(hub: Hub, repo: str, local: list[LocalFile]) -> None:
    """Refuse files whose first bytes contradict their name (an HTML page served as a .gguf); delete the ones this
    pull put in the cache, keep files that were there before."""
    for f in local:
        problem = _content_problem(f.path, f.remote.path)
        if problem is None:
            continue
        fate = "kept, as it was in the Hugging Face cache before"
        if not f.preexisting:
            hub.discard(repo, f.path, f.blob)
            fate = "the download was deleted"
        raise NotAModelFileError(
            f"{f.remote.path} from {repo} {problem}: not installed ({fate}). The source serves something else under "
            "that name (a web page from a proxy, or HF_ENDPOINT not a Hugging Face Hub?); check HF_ENDPOINT or pick "
            "another source."
        )


def _from_cache(hub: Hub, repo: str, listing: RepoListing, files: list[RemoteFile], verify: bool) -> list[LocalFile]:
    """Offline: the files the HF cache holds, inside the repo's cache folder, checked against nothing."""
    if verify:
        raise UnverifiableError(
            f"{repo} is in the Hugging Face cache, but offline (HF_HUB_OFFLINE=1) its files cannot be checked "
            "against the Hub: pass --no-verify to install them as they are, or unset HF_HUB_OFFLINE to verify them."
        )
    local = []
    for f in files:
        pointer = hub.snapshot_path(repo, listing.commit, f.path)
        blob = hub.cached_file(repo, listing.commit, f)
        if blob is None:
            raise OutsideRootError(f"{pointer} in the Hugging Face cache points outside the cache folder of {repo} "
                                   "(or changed size); not installed. Delete it and pull again online.")
        local.append(LocalFile(f, pointer, blob, None, None, blob.stat().st_mtime_ns, not store.owners(blob), 0,
                               "none"))
    return local


def _fetch_and_register(key: str, kind: str, repo: str, listing: RepoListing, files: list[RemoteFile],
                        hub: Hub, progress: Progress, *, catalog_id: str | None, quant: str | None,
                        notes: list[str], verify: bool) -> PullResult:
    if listing.from_cache:
        local = _from_cache(hub, repo, listing, files, verify)
        notes.append("offline: found in the Hugging Face cache; not verified against the Hub (--no-verify)")
    else:
        hub.check_disk(repo, listing.commit, files)
        local = hub.fetch(repo, listing.commit, files, progress, verify=verify)
        unchecked = [f.remote.path for f in local if f.checked not in store.HASH_CHECKS]
        if unchecked:
            notes.append(f"--no-verify: {len(unchecked)} file(s) checked by size only ({', '.join(unchecked[:3])}"
                         f"{', …' if len(unchecked) > 3 else ''})")
    _check_contents(hub, repo, local)
    model = _register(key, kind, repo, listing, local, catalog_id=catalog_id, quant=quant)
    downloaded = sum(f.downloaded for f in local)
    return PullResult(model=model, downloaded=downloaded, reused=model.size - downloaded, notes=notes)


def _listing(hub: Hub, repo: str) -> RepoListing | None:
    """The Hub's listing, or offline the local cache's (None if the cache has nothing of `repo`)."""
    if offline_mode():
        return hub.cached_listing(repo)
    return hub.listing(repo)


def _try_listing(hub: Hub, repo: str) -> RepoListing:
    """A source's listing. Raises RepoUnavailableError for a missing or gated source (the next one may do)."""
    listing = _listing(hub, repo)
    if listing is None:
        raise RepoUnavailableError(f"{repo} is not in the Hugging Face cache")
    return listing


def _pull_catalog_gguf(target: Target, hub: Hub, progress: Progress, verify: bool) -> PullResult:
    spec = target.spec
    assert spec is not None
    if not spec.gguf:
        raise NotInstalledError(
            f"{spec.id} has no ready-made GGUF in the catalog: pull the original weights and convert them with "
            f"`localseek pull {spec.id} --original --quantize Q4_K_M`."
        )
    quant = target.quant or spec.default_quant or "Q4_K_M"
    key = f"{spec.id}:{quant}"
    if (done := _installed_ok(key)) is not None:
        return PullResult(model=done, already_installed=True, reused=done.size)
    with store.pull_lock(key, on_wait=progress.message):
        if (done := _installed_ok(key)) is not None:
            return PullResult(model=done, already_installed=True, reused=done.size)
        notes: list[str] = []
        listing, fileset = _choose(spec, quant, explicit=target.quant is not None, hub=hub, notes=notes)
        chosen = fileset.quant or quant
        key = f"{spec.id}:{chosen}"
        if chosen != quant and (done := _installed_ok(key)) is not None:
            return PullResult(model=done, already_installed=True, reused=done.size, notes=notes)
        return _fetch_and_register(key, "gguf", listing.repo, listing, _with_mtp(listing, fileset, notes), hub,
                                   progress, catalog_id=spec.id, quant=chosen, notes=notes, verify=verify)


def _choose(spec: ModelSpec, quant: str, *, explicit: bool, hub: Hub,
            notes: list[str]) -> tuple[RepoListing, FileSet]:
    """The first source that has `quant`; for a defaulted quant, the closest one any source has."""
    listings: list[tuple[RepoListing, str]] = []
    skipped: list[str] = []
    for src in spec.gguf:
        try:
            listing = _try_listing(hub, src.repo)
        except RepoUnavailableError as exc:
            skipped.append(str(exc))
            continue
        fs = select_quant(listing, quant, src.pattern)
        if fs:
            return listing, fs
        listings.append((listing, src.pattern))
    if not listings:
        if offline_mode():
            raise HubError(f"HF_HUB_OFFLINE=1 is set and {spec.id}:{quant} is not in the Hugging Face cache "
                           f"({store.hf_cache_dir()}); unset HF_HUB_OFFLINE to download it.")
        raise HubError(skipped[0] if len(skipped) == 1 else "; ".join(skipped))
    offers: dict[str, tuple[int, RepoListing, str]] = {}
    for listing, pattern in listings:
        for q, size in available_quants(listing, pattern).items():
            offers.setdefault(q, (size, listing, pattern))
    if not explicit:
        for q in FALLBACK_ORDER:
            if q in offers:
                _size, listing, pattern = offers[q]
                fs = select_quant(listing, q, pattern)
                assert fs is not None
                notes.append(f"{quant} is not published for {spec.id}; took {q} from {listing.repo}")
                return listing, fs
    where = "the Hugging Face cache" if listings[0][0].from_cache else "the Hub"
    if not offers:
        raise HubError(f"{spec.id}: no GGUF files found in {', '.join(s.repo for s in spec.gguf)} on {where}.")
    menu = ", ".join(f"{q} ({format_size(offers[q][0])})" for q in sorted(offers, key=lambda q: offers[q][0]))
    raise HubError(f"{spec.id} has no {quant} in {where}; available: {menu}. Pull one as {spec.id}:QUANT.")


def _pull_repo(target: Target, hub: Hub, progress: Progress, catalog: Catalog, verify: bool) -> PullResult:
    repo = target.repo
    assert repo is not None
    sel = target.selector
    lock_key = f"{repo}:{sel}" if sel else repo
    spec = next((s for s in catalog.models if any(src.repo.lower() == repo.lower() for src in s.gguf)), None)
    with store.pull_lock(lock_key, on_wait=progress.message):
        listing = _listing(hub, repo)
        if listing is None:
            raise HubError(f"HF_HUB_OFFLINE=1 is set and {repo} is not in the Hugging Face cache; unset "
                           "HF_HUB_OFFLINE to download it.")
        notes: list[str] = []
        if sel is None:
            sets = [s for s in _complete_sets(listing)]
            if not sets:
                if original_files(listing):
                    raise NotInstalledError(f"{repo} has no GGUF files; pull its original weights with "
                                            f"`localseek pull {repo} --original` (and --quantize TYPE to convert).")
                raise HubError(f"{repo} has no GGUF files.")
            if len(sets) == 1:
                fs = sets[0]
            else:
                offers = available_quants(listing)
                pick = next((q for q in FALLBACK_ORDER if q in offers), None)
                if pick is None:
                    names = ", ".join(s.quant or s.primary.path for s in sets[:8])
                    raise HubError(f"{repo} holds several models ({names}); pick one as {repo}:QUANT or "
                                   f"{repo}:FILE.gguf.")
                fs = select_quant(listing, pick)
                assert fs is not None
                notes.append(f"{repo} has {len(sets)} quants; took {pick} (choose with {repo}:QUANT)")
        elif is_quant(sel):
            fs = select_quant(listing, sel)
            if fs is None:
                offers = available_quants(listing)
                menu = ", ".join(f"{q} ({format_size(s)})" for q, s in sorted(offers.items(), key=lambda kv: kv[1]))
                raise HubError(f"{repo} has no {normalize_quant(sel)}; available: {menu or 'no GGUF files'}.")
        else:
            fs = select_files(listing, sel)
            if fs is None:
                raise HubError(f"{repo} has no GGUF file matching {sel!r}.")
        key = f"{repo}:{fs.quant}" if fs.quant else f"{repo}:{fs.primary.name}"
        if (done := _installed_ok(key)) is not None and done.revision == listing.commit:
            return PullResult(model=done, already_installed=True, reused=done.size, notes=notes)
        return _fetch_and_register(key, "gguf", repo, listing, _with_mtp(listing, fs, notes), hub, progress,
                                   catalog_id=spec.id if spec else None, quant=fs.quant, notes=notes, verify=verify)


def _with_mtp(listing: RepoListing, fs: FileSet, notes: list[str]) -> list[RemoteFile]:
    """The model's files, and the MTP file the repo publishes beside it (DeepSeek-V4 drafts with it)."""
    mtp = mtp_sibling(listing, fs)
    if mtp is None:
        return list(fs.files)
    notes.append(f"also took {mtp.name} ({format_size(mtp.size)}): the MTP block that drafts for this model")
    return [*fs.files, mtp]


def _complete_sets(listing: RepoListing) -> list[FileSet]:
    return [s for s in gguf_sets(listing) if s.complete]


def _pull_original(target: Target, hub: Hub, progress: Progress, verify: bool) -> PullResult:
    repo = target.spec.repo if target.spec else target.repo
    assert repo is not None
    key = f"{target.spec.id if target.spec else repo}:original"
    if (done := _installed_ok(key)) is not None:
        return PullResult(model=done, already_installed=True, reused=done.size)
    with store.pull_lock(key, on_wait=progress.message):
        if (done := _installed_ok(key)) is not None:
            return PullResult(model=done, already_installed=True, reused=done.size)
        listing = _listing(hub, repo)
        if listing is None:
            raise HubError(f"HF_HUB_OFFLINE=1 is set and {repo} is not in the Hugging Face cache; unset "
                           "HF_HUB_OFFLINE to download it.")
        files = original_files(listing)
        if not any(f.path.endswith(".safetensors") for f in files):
            raise HubError(f"{repo} has no safetensors weights to download.")
        return _fetch_and_register(key, "original", repo, listing, files, hub, progress,
                                   catalog_id=target.spec.id if target.spec else None, quant=None, notes=[],
                                   verify=verify)


def _convert(result: PullResult, qtype: str, progress: Progress) -> PullResult:
    """Convert downloaded original weights to a GGUF with the `quantize` package, and register that."""
    original = result.model
    base = original.catalog_id or (original.repo or "model").replace("/", "--")
    key = f"{base}:{qtype}-converted"
    if (done := _installed_ok(key)) is not None:
        return PullResult(model=done, already_installed=True, reused=done.size, notes=result.notes)
    from quantize import BadWeights, QuantizeError, SourceError, convert, needs_mtp_file

    out_dir = store.home() / "models"
    out = inside(out_dir / f"{base.replace(':', '-').replace('/', '-')}-{qtype}.gguf", store.home(), sub="models")
    out_dir.mkdir(parents=True, exist_ok=True)
    with store.pull_lock(key, on_wait=progress.message):
        progress.message(f"Converting {original.name} to {qtype} → {out}")
        try:
            conv = convert(original.primary, out, qtype=qtype, force=True,
                           progress=_conversion_progress(progress, out.name))
        except (SourceError, BadWeights) as exc:
            raise ModelFileError(f"{exc} (the original weights stay installed as {original.name})") from exc
        except QuantizeError as exc:
            raise UsageError(f"{exc} (the original weights stay installed as {original.name})") from exc
        notes = list(result.notes)
        if needs_mtp_file(original.primary):  # DeepSeek-V4: its MTP block drafts from a file of its own
            mtp_out = out.with_name(f"{out.stem.removesuffix('-' + qtype)}-MTP-{qtype}.gguf")
            progress.message(f"Writing its MTP block (speculative drafting) → {mtp_out}")
            try:
                conv.paths.extend(convert(original.primary, mtp_out, qtype=qtype, force=True, mtp_only=True,
                                          progress=_conversion_progress(progress, mtp_out.name)).paths)
            except QuantizeError as exc:  # the model itself is converted: keep it, without MTP drafting
                notes.append(f"its MTP block could not be written ({exc}); the model runs without MTP drafting")
        paths = [inside(p, store.home(), sub="models") for p in conv.paths]
        for p in paths:
            if (problem := _content_problem(p, p.name)) is not None:
                raise ModelFileError(f"The conversion wrote {p}, which {problem}; not installed. Please report this.")
        files = tuple(store.StoredFile(path=str(p), blob=str(p), size=p.stat().st_size,
                                       mtime_ns=p.stat().st_mtime_ns) for p in paths)
        model = store.InstalledModel(name=key, kind="gguf", files=files, source="converted",
                                     catalog_id=original.catalog_id, repo=original.repo, revision=original.revision,
                                     quant=qtype, pulled_at=time.time())
        store.register(model)
        return PullResult(model=model, downloaded=result.downloaded, reused=result.reused, notes=notes)


def _conversion_progress(progress: Progress, name: str) -> Callable[[object], None]:
    state = {"started": False, "done": 0}

    def report(p: object) -> None:
        total = int(getattr(p, "bytes_total", 0) or 0)
        done = int(getattr(p, "bytes_done", 0) or 0)
        if not state["started"] and total:
            progress.start([(name, total, 0)])
            state["started"] = True
        if done > state["done"]:
            progress.advance(name, done - state["done"])
            state["done"] = done
        if getattr(p, "stage", "") == "done":
            progress.file_done(name, "converted")

    return report


__all__ = ["PullResult", "Target", "expected_size", "find_installed", "looks_like_path", "parse_ref", "pull"]
