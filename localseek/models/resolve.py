"""From what a user typed to the model it names, once: a `ModelRef` that every later step is handed.

A reference is a GGUF path (split models: any part), an installed model (its registry name, a catalog name or alias
with an optional quant, `OWNER/REPO[:QUANT]`), a model another tool keeps on this machine (Ollama, LM Studio,
llama.cpp's cache, the Hugging Face cache, LOCALSEEK_MODELS_PATH: used in place, see `elsewhere`), the bundled
localseek-nano, or — when the caller passes `fetch` — a catalog name or Hub repo to pull now. Ollama's spellings
(`NAME:latest`, `hf.co/OWNER/REPO:QUANT`) are accepted everywhere (`refs.canonical`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localseek.errors import LocalseekError, ModelFileError, NotInstalledError
from localseek.models import elsewhere, store
from localseek.models.catalog import ModelSpec, load_catalog
from localseek.models.elsewhere import FoundModel
from localseek.models.gguf_info import GGUFInfo, read_gguf
from localseek.models.pull import Target, find_installed, looks_like_path, parse_ref
from localseek.models.quants import SPLIT_RE
from localseek.models.refs import canonical
from localseek.models.remote import RemoteModel, read_remote

# Fetch a model that is not installed yet (pull it, after asking); returns what was installed.
Fetch = Callable[[str], store.InstalledModel]
Notify = Callable[[str], None]


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference."""

    text: str  # what the user typed
    path: Path  # the GGUF to read (the first part of a split model)
    name: str  # what localseek calls it: the registry name, another tool's name for it, else the file's name
    spec: ModelSpec | None = None  # its catalog entry, when it has one
    installed: store.InstalledModel | None = None
    found: FoundModel | None = None  # another tool's model, used in place (read-only)
    remote: RemoteModel | None = None  # not on this machine: its header, read from the Hub (plan only; no file)

    def read(self) -> GGUFInfo:
        """What the GGUF says about itself: its header, from the file or (not downloaded yet) from the Hub."""
        return self.remote.info if self.remote is not None else read_gguf(self.path)

    @property
    def key(self) -> str:
        """A stable short name (the registry or tool's name, else the file's stem without split suffix): history."""
        return self.name if self.installed is not None or self.found is not None else file_stem(self.path)


def file_stem(path: Path) -> str:
    """`model-00001-of-00003.gguf` → `model`; `x.gguf` → `x`."""
    m = SPLIT_RE.match(path.name)
    return m["stem"] if m else path.name.removesuffix(".gguf")


def resolve(ref: str, *, fetch: Fetch | None = None, notify: Notify | None = None, remote: bool = False) -> ModelRef:
    """Resolve `ref` (see the module docstring). `notify` hears one-line news (a bundled model being converted, a
    model found in another tool's folder). `remote`: a catalog model or Hub repo that is not here resolves to its
    header read from the Hub (`ModelRef.remote`, for planning; nothing is downloaded).

    Raises ModelFileError / NotInstalledError / UnknownModelError ("did you mean …") with the next step.
    """
    path = Path(ref).expanduser()
    if path.exists() or looks_like_path(ref):
        return _file_ref(ref, path)
    catalog = load_catalog()
    model = find_installed(ref, catalog)
    target: Target | None = None
    if model is None or model.missing():
        others = elsewhere.find_all()
        found = elsewhere.lookup(ref, others)
        if found is not None:
            return _found_ref(ref, found, catalog.get(_catalog_id(found) or ""), notify)
        target = parse_ref(ref, catalog)  # an unknown name raises "did you mean …" here
        found = _found_for(target, others)
        if found is not None:
            return _found_ref(ref, found, target.spec, notify)
        if target.spec is not None and target.spec.status == "bundled":
            model = install_bundled(target.spec, target.quant, notify=notify)
    if model is not None:
        return _installed_ref(ref, model, catalog.get(model.catalog_id) if model.catalog_id else None)
    if remote and target is not None:
        head = read_remote(target.spec, target.quant, target.repo, target.selector, notify=notify)
        return ModelRef(ref, head.info.path, head.label, target.spec, remote=head)
    if fetch is None:
        raise NotInstalledError(f"{ref} is not installed; `localseek pull {ref}` downloads it.")
    model = fetch(ref)
    return _installed_ref(ref, model, catalog.get(model.catalog_id) if model.catalog_id else None)


def check(ref: str) -> None:
    """Raise what `resolve` would for a name that means nothing (UnknownModelError with "did you mean"), without
    converting, pulling or loading anything: for commands that have more to complain about first."""
    path = Path(ref).expanduser()
    if path.exists() or looks_like_path(ref):
        return
    if find_installed(ref) is not None or elsewhere.lookup(ref) is not None:
        return
    parse_ref(ref)


def elsewhere_copy(ref: str) -> FoundModel | None:
    """The model another tool keeps here that `ref` means (its own name, or a catalog name / Hub repo it is a
    copy of); None when there is none or `ref` names nothing."""
    others = elsewhere.find_all()
    found = elsewhere.lookup(ref, others)
    if found is not None:
        return found
    try:
        return _found_for(parse_ref(ref), others)
    except LocalseekError:
        return None


def _file_ref(ref: str, path: Path) -> ModelRef:
    """A path: named after the installed model or the other tool's model it is a file of, else the file itself."""
    if path.exists():
        real = path.resolve()
        for model in store.installed().values():
            if model.kind == "gguf" and not model.missing() and model.primary.resolve() == real:
                spec = load_catalog().get(model.catalog_id) if model.catalog_id else None
                return ModelRef(ref, path, model.name, spec, model)
        found = elsewhere.owner_of(path)
        if found is not None:
            return ModelRef(ref, path, found.name, None, None, found)
    return ModelRef(ref, path, path.name)


def _catalog_id(found: FoundModel) -> str | None:
    catalog = load_catalog()
    for name in found.names:
        resolved = catalog.resolve(canonical(name)) if found.source == "ollama" else None
        if resolved:
            return resolved.spec.id
    if found.repo:
        spec = next((s for s in catalog.models if any(src.repo.lower() == found.repo.lower() for src in s.gguf)), None)
        return spec.id if spec else None
    return None


def _found_for(target: Target, others: list[FoundModel]) -> FoundModel | None:
    if target.spec is not None:
        spec = target.spec
        return elsewhere.for_catalog(spec.names, tuple(src.repo for src in spec.gguf), target.quant,
                                     spec.default_quant, others)
    if target.repo:
        return elsewhere.for_repo(target.repo, target.selector, others)
    return None


def _found_ref(ref: str, found: FoundModel, spec: ModelSpec | None, notify: Notify | None) -> ModelRef:
    if notify is not None:
        notify(f"Using {found.name} from {found.tool} in place: {found.path}")
    return ModelRef(ref, found.path, found.name, spec, None, found)


def _installed_ref(ref: str, model: store.InstalledModel, spec: ModelSpec | None) -> ModelRef:
    if model.kind != "gguf":
        raise ModelFileError(
            f"{model.name} holds the original safetensors weights; convert them first: "
            f"`localseek pull {model.catalog_id or model.repo} --original --quantize Q4_K_M`."
        )
    missing = model.missing()
    if missing:
        raise ModelFileError(
            f"{model.name} is installed but {missing[0]} is gone or changed; run `localseek pull {model.name}` "
            f"to fetch it again, or `localseek rm {model.name}`."
        )
    store.touch(model.name)
    return ModelRef(ref, model.primary, model.name, spec, model)


def install_bundled(spec: ModelSpec, quant: str | None, *, notify: Notify | None = None) -> store.InstalledModel:
    """A model that ships inside the package (localseek-nano): converted on first use and registered like a pull."""
    from localseek import nano

    return nano.install(quant or spec.default_quant or nano.DEFAULT_QUANT, on_convert=notify)
