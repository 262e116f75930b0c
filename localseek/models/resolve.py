"""From what a user typed to the model it names, once: a `ModelRef` that every later step is handed.

A reference is a GGUF path (split models: any part), an installed model (its registry name, a catalog name or alias
with an optional quant, `OWNER/REPO[:QUANT]`), the bundled localseek-nano, or — when the caller passes `fetch` — a
catalog name or Hub repo to pull now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localseek.errors import ModelFileError, NotInstalledError
from localseek.models import store
from localseek.models.catalog import ModelSpec, load_catalog
from localseek.models.pull import Target, find_installed, looks_like_path, parse_ref
from localseek.models.quants import SPLIT_RE

# Fetch a model that is not installed yet (pull it, after asking); returns what was installed.
Fetch = Callable[[str], store.InstalledModel]
Notify = Callable[[str], None]


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference."""

    text: str  # what the user typed
    path: Path  # the GGUF to read (the first part of a split model)
    name: str  # what localseek calls it: the registry name, else the file's name
    spec: ModelSpec | None = None  # its catalog entry, when it has one
    installed: store.InstalledModel | None = None

    @property
    def key(self) -> str:
        """A stable short name (the registry name, else the file's stem without split suffix): chat history."""
        return self.name if self.installed is not None else file_stem(self.path)


def file_stem(path: Path) -> str:
    """`model-00001-of-00003.gguf` → `model`; `x.gguf` → `x`."""
    m = SPLIT_RE.match(path.name)
    return m["stem"] if m else path.name.removesuffix(".gguf")


def resolve(ref: str, *, fetch: Fetch | None = None, notify: Notify | None = None) -> ModelRef:
    """Resolve `ref` (see the module docstring). `notify` hears one-line news (a bundled model being converted).

    Raises ModelFileError / NotInstalledError / UnknownModelError ("did you mean …") with the next step.
    """
    path = Path(ref).expanduser()
    if path.exists() or looks_like_path(ref):
        return ModelRef(ref, path, path.name)
    catalog = load_catalog()
    model = find_installed(ref, catalog)
    target: Target | None = None
    if model is None or model.missing():
        target = parse_ref(ref, catalog)  # an unknown name raises "did you mean …" here
        if target.spec is not None and target.spec.status == "bundled":
            model = install_bundled(target.spec, target.quant, notify=notify)
    if model is not None:
        return _installed_ref(ref, model, catalog.get(model.catalog_id) if model.catalog_id else None)
    if fetch is None:
        raise NotInstalledError(f"{ref} is not installed; `localseek pull {ref}` downloads it.")
    model = fetch(ref)
    return _installed_ref(ref, model, catalog.get(model.catalog_id) if model.catalog_id else None)


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
