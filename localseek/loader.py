"""From what the user typed (a path, an installed model, or a catalog name to pull) to a loaded engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from localseek import hardware, store
from localseek.engine import Engine, LoadOptions
from localseek.errors import InsufficientMemoryError, ModelFileError, NotInstalledError
from localseek.ggufinfo import GGUFInfo, read_gguf

GiB = 1024**3
DEFAULT_CTX = 4096


def resolve_model(ref: str, *, fetch: Callable[[str], Path] | None = None) -> Path:
    """Turn what the user typed into a GGUF path: a file, an installed model (catalog name, alias, OWNER/REPO, or the
    name `localseek list` shows), or — when `fetch` is given — a catalog name or Hub repo pulled right now.

    Raises ModelFileError / NotInstalledError / UnknownModelError ("did you mean …") with the next step.
    """
    from localseek.pull import find_installed, looks_like_path, parse_ref

    path = Path(ref).expanduser()
    if path.exists() or looks_like_path(ref):
        return path
    model = find_installed(ref)
    if model is not None:
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
        return model.primary
    parse_ref(ref)  # an unknown name raises "did you mean …" here
    if fetch is None:
        raise NotInstalledError(f"{ref} is not installed; `localseek pull {ref}` downloads it.")
    return fetch(ref)


def kv_bytes_per_token(info: GGUFInfo) -> int:
    """KV cache bytes per token at F16, MLA-aware (deepseek2 caches the compressed latent)."""
    n_layer = int(info.get("block_count", 0) or 0)
    kv_lora = info.get("attention.kv_lora_rank")
    if kv_lora:
        rope = int(info.get("rope.dimension_count", 64) or 64)
        return n_layer * (int(kv_lora) + rope) * 2
    n_embd = int(info.get("embedding_length", 0) or 0)
    n_head = int(info.get("attention.head_count", 1) or 1)
    n_head_kv = int(info.get("attention.head_count_kv", n_head) or n_head)
    head_dim = int(info.get("attention.key_length", n_embd // max(n_head, 1)) or 0)
    return n_layer * 2 * n_head_kv * head_dim * 2


def check_fits(info: GGUFInfo, n_ctx: int, *, force: bool = False) -> None:
    """Refuse a model that cannot fit in RAM (weights + KV cache) instead of swapping the machine to death."""
    mem = hardware.memory()
    need = info.total_bytes + kv_bytes_per_token(info) * n_ctx
    if force or mem.total == 0 or need <= mem.total:
        return
    raise InsufficientMemoryError(
        f"{info.path.name} needs about {need / GiB:.1f} GiB (weights + {n_ctx}-token context) but this machine has "
        f"{mem.total / GiB:.1f} GiB of RAM; use a smaller quant or a smaller --ctx, or pass --force to try anyway."
    )


def default_ctx(info: GGUFInfo, requested: int | None) -> int:
    trained = int(info.get("context_length", DEFAULT_CTX) or DEFAULT_CTX)
    if requested:
        return requested
    return min(DEFAULT_CTX, trained)


def open_model(ref: str, options: LoadOptions, *, force: bool = False) -> tuple[Engine, GGUFInfo]:
    path = resolve_model(ref)
    info = read_gguf(path)
    check_fits(info, options.n_ctx, force=force)
    return Engine.load(info.path, options), info
