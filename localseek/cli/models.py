"""`localseek models | pull | list | show | rm`: the catalog, downloads, and what is installed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from gguf import Keys
from rich.console import Console
from rich.table import Table
from rich.text import Text

from localseek.cli import app
from localseek.cli.progress import RichProgress, err_console, make_progress
from localseek.errors import Interrupted, UsageError
from localseek.models import store
from localseek.models.catalog import DEFAULT_CTX, ModelSpec, load_catalog
from localseek.planning import hardware
from localseek.sizes import format_count, format_size
from localseek.text import printable
from localseek.tui import make_console

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
NameArg = Annotated[str, typer.Argument(help="A model name (see `localseek models`), OWNER/REPO[:QUANT], or a path.",
                                        show_default=False)]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _out() -> Console:
    console = make_console()
    if not console.is_terminal:
        console.width = 160  # pipes and logs: one row per line, no wrapping at 80 columns
    return console


def _params(spec: ModelSpec) -> str:
    return f"{format_count(spec.params)}/{format_count(spec.active)}" if spec.is_moe else format_count(spec.params)


def confirm(question: str, *, assume_yes: bool) -> bool:
    """Ask on a terminal; off a terminal only --yes says yes."""
    if assume_yes:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    return typer.confirm(question, default=True, err=True)


# ───────────────────────────── models ─────────────────────────────

@app.command()
def models(as_json: JsonOpt = False) -> None:
    """The catalog: every DeepSeek model localseek knows, what it needs, and whether it fits this machine."""
    from localseek.planning.footprint import from_catalog
    from localseek.planning.plan import Request, make_plan

    catalog = load_catalog()
    hw = hardware.detect()
    mem = hw.memory
    vram = 0 if hw.unified_memory else hw.vram_free  # unified memory is already counted as RAM
    installed = store.installed()
    rows = []
    for spec in catalog.models:
        have = sorted(m.quant or "?" for m in installed.values() if m.catalog_id == spec.id)
        # The same planner and margins as `run`, from the catalog's sizes (no header read before a download).
        fp = from_catalog(spec)
        plan = make_plan(fp, hw, Request()) if fp is not None and mem.total else None
        need = (plan.ram.total + (plan.gpu.total if plan.gpu else 0)) if plan else spec.memory_need()
        fits = plan.fits if plan else None
        rows.append({
            "id": spec.id, "aliases": list(spec.aliases), "title": spec.title, "family": spec.family,
            "repo": spec.repo, "hf_arch": spec.hf_arch, "gguf_arch": spec.gguf_arch, "params": spec.params,
            "active_params": spec.active, "context": spec.context, "license": spec.license,
            "reasoning": spec.reasoning, "status": spec.status, "default_quant": spec.default_quant,
            "size": spec.size_of(), "memory_needed": need, "memory_ctx": min(DEFAULT_CTX, spec.context),
            "kv_bytes_per_token": spec.kv.bytes_per_token() if spec.kv else None,
            "fits": fits, "installed": have, "note": spec.note,
            "sampling": {"temperature": spec.sampling.temperature, "top_p": spec.sampling.top_p}
            if spec.sampling else None,
            "quants": [{"quant": q, "size": s} for q, s in spec.quants()],
            "sources": [src.repo for src in spec.gguf],
        })
    if as_json:
        _print_json({"memory": {"total": mem.total, "available": mem.available, "source": mem.source,
                                "gpu_free": vram}, "models": rows})
        return
    out = _out()
    gpu = f" + {format_size(vram)} free GPU memory" if vram else ""
    table = Table(title=f"DeepSeek models (this machine: {format_size(mem.total)} RAM{gpu}; needs = weights + "
                  f"{DEFAULT_CTX}-token context, planned as `run` would)", title_justify="left", box=None, header_style="bold")
    wide = out.width >= 110
    for col in ("name", "also", "params", "default", "size", "needs", "fits", "installed"):
        if col == "also" and not wide:
            continue
        table.add_column(col, no_wrap=col != "installed")
    for r, spec in zip(rows, catalog.models):
        fits = "?" if r["fits"] is None else ("yes" if r["fits"] else "no")
        default = r["default_quant"] or "convert"
        cells = [spec.id, spec.aliases[0] if spec.aliases else "", _params(spec), default,
                 format_size(r["size"]) if r["size"] else "—",
                 format_size(r["memory_needed"]) if r["memory_needed"] else "—", fits, ", ".join(r["installed"])]
        if not wide:
            del cells[1]
        table.add_row(*cells)
    out.print(table)
    out.print("Pull with `localseek pull NAME` (or NAME:QUANT); `convert` models need "
                 "`localseek pull NAME --original --quantize Q4_K_M`.", style="stats")


# ───────────────────────────── pull ─────────────────────────────

def do_pull(name: str, *, original: bool = False, quantize: str | None = None, verify: bool = True) -> Any:
    """Pull with live progress; Ctrl-C keeps what arrived. Returns the PullResult."""
    from localseek.models.pull import pull as core_pull

    if quantize:
        from localseek.cli.quantize import _quiet_llama

        _quiet_llama(False)  # llama.cpp's quantizer logs every tensor
    progress = make_progress()
    try:
        if isinstance(progress, RichProgress):
            with progress:
                result = core_pull(name, original=original, quantize=quantize, progress=progress, verify=verify)
        else:
            result = core_pull(name, original=original, quantize=quantize, progress=progress, verify=verify)
    except KeyboardInterrupt:
        raise Interrupted("Pull interrupted; what arrived is kept — run the same command again to resume.") from None
    console = err_console()
    for note in result.notes:
        console.print(note, style="notice", markup=False)
    m = result.model
    if result.already_installed:
        console.print(f"{m.name} is already installed ({format_size(m.size)}): {m.primary}", markup=False)
    else:
        how = f"downloaded {format_size(result.downloaded)}"
        if result.reused:
            how += f", {format_size(result.reused)} already in the Hugging Face cache"
        console.print(f"Pulled {m.name} ({format_size(m.size)}; {how}): {m.primary}", markup=False)
    return result


@app.command()
def pull(
    name: NameArg,
    original: Annotated[bool, typer.Option("--original", help="Download the original safetensors weights.")] = False,
    quantize: Annotated[str | None, typer.Option(
        "--quantize", metavar="TYPE", help="Convert the original weights to this GGUF type (implies --original).",
    )] = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Install files the Hub gives no hash for (or, offline, the HF cache's files) with only "
                            "their size checked; `list` and `show` say so.",
    )] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download a model: NAME[:QUANT] from the catalog, or OWNER/REPO[:QUANT|FILE] from the Hub.

    Files go to the Hugging Face cache (HF_HOME) and are verified against the Hub's sha256 (git hash for small
    files); a file with no hash to check is refused unless --no-verify. An interrupted pull resumes where it stopped.
    """
    result = do_pull(name, original=original, quantize=quantize, verify=not no_verify)
    if as_json:
        data = result.model.to_json()
        data.update(already_installed=result.already_installed, downloaded=result.downloaded,
                    reused=result.reused, notes=result.notes)
        _print_json(data)


# ───────────────────────────── list ─────────────────────────────

def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    s = max(0, time.time() - ts)
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            k = int(s // n)
            return f"{k} {unit}{'s' if k > 1 else ''} ago"
    return "just now"


def checked_label(model: store.InstalledModel) -> str:
    """What `list` and `show` say was verified: the check per file, against what."""
    if model.source in ("converted", "bundled"):
        return "made here"
    label = {"sha256": "sha256", "git-sha1": "git sha1", "size": "size only", "none": "nothing"}
    parts = [label[c] for c in model.checked.split("+")]
    where = " (HF cache, offline)" if model.source == "hf-cache" else ""
    return " + ".join(parts) + where


@app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """Installed models: name, quant, size, what was verified, path, last used."""
    models = sorted(store.installed().values(), key=lambda m: m.name)
    if as_json:
        _print_json([m.to_json() | {"missing": m.missing()} for m in models])
        return
    if not models:
        err_console().print("Nothing installed yet. `localseek models` lists the catalog; "
                            "`localseek pull deepseek-r1:1.5b` fetches a small one.", markup=False)
        return
    table = Table(box=None, header_style="bold")
    for col in ("name", "quant", "size", "verified", "path", "last used"):
        table.add_column(col, overflow="fold")
    for m in models:
        broken = " (files missing: pull again)" if m.missing() else ""
        cells = (m.name, m.quant or m.kind, format_size(m.size), checked_label(m), f"{m.primary}{broken}",
                 _ago(m.last_used))
        table.add_row(*(Text(printable(c)) for c in cells))
    _out().print(table)


# ───────────────────────────── show ─────────────────────────────

def _catalog_info(spec: ModelSpec | None) -> dict | None:
    if spec is None:
        return None
    return {"id": spec.id, "title": spec.title, "family": spec.family, "repo": spec.repo, "license": spec.license,
            "reasoning": spec.reasoning, "params": spec.params, "active_params": spec.active,
            "context": spec.context, "note": spec.note,
            "sampling": {"temperature": spec.sampling.temperature, "top_p": spec.sampling.top_p}
            if spec.sampling else None}


@app.command()
def show(
    name: NameArg,
    as_json: JsonOpt = False,
    template: Annotated[bool, typer.Option("--template", help="Print the whole chat template.")] = False,
) -> None:
    """What a model is, from its GGUF header: architecture, parameters, quant, context, chat template, tensors."""
    from localseek.chat.conversation import thinking_mode
    from localseek.models.gguf_info import (
        bytes_by_type,
        file_type_name,
        parameter_count,
        read_gguf,
        summarize_types,
    )
    from localseek.models.pull import find_installed, looks_like_path, parse_ref

    catalog = load_catalog()
    model = None
    path = Path(name).expanduser()
    if not path.exists() and not looks_like_path(name):
        model = find_installed(name, catalog)
        if model is None:
            target = parse_ref(name, catalog)  # unknown names: "did you mean"
            info = _catalog_info(target.spec)
            if as_json:
                _print_json({"name": name, "installed": False, "catalog": info})
                return
            label = target.spec.title if target.spec else target.label
            err_console().print(f"{label} is not installed; `localseek pull {name}` downloads it.", markup=False)
            if info:
                _print_catalog(info)
            return
        if model.kind != "gguf":
            raise UsageError(f"{model.name} holds original safetensors weights ({model.primary}); convert them with "
                             f"`localseek pull {model.catalog_id or model.repo} --original --quantize Q4_K_M`.")
        path = model.primary
    info = read_gguf(path)
    spec = catalog.get(model.catalog_id) if model and model.catalog_id else None
    counts = summarize_types(info.tensors)
    sizes = bytes_by_type(info.tensors)
    value = _file_value
    thinking, thinking_source = thinking_mode(info.chat_template, spec.reasoning if spec else None)
    data = {
        "name": model.name if model else str(info.path), "path": str(info.path),
        "parts": [str(p) for p in info.parts], "size": info.total_bytes, "architecture": info.arch,
        "model_name": value(info.metadata.get(Keys.General.NAME)), "parameters": parameter_count(info),
        "size_label": value(info.metadata.get(Keys.General.SIZE_LABEL)), "quant": file_type_name(info),
        "context_length": value(info.get(Keys.LLM.CONTEXT_LENGTH)), "layers": value(info.get(Keys.LLM.BLOCK_COUNT)),
        "embedding_length": value(info.get(Keys.LLM.EMBEDDING_LENGTH)),
        "heads": value(info.get(Keys.Attention.HEAD_COUNT)), "kv_heads": value(info.get(Keys.Attention.HEAD_COUNT_KV)),
        "experts": value(info.get(Keys.LLM.EXPERT_COUNT)), "experts_used": value(info.get(Keys.LLM.EXPERT_USED_COUNT)),
        "chat_template": info.chat_template, "thinking": thinking, "thinking_from": thinking_source or None,
        "tensors": {"count": len(info.tensors), "types": {t: {"count": counts[t], "bytes": sizes.get(t, 0)}
                                                          for t in counts}},
        "installed": model.to_json() if model else None, "catalog": _catalog_info(spec),
    }
    if as_json:
        _print_json(data)
        return
    # Everything below comes from the file (or its name): shown with control characters escaped, never as markup.
    out = _out()
    out.print(Text(printable(data["name"]), style="bold"), highlight=False)  # a registry name: no markup
    rows = [
        ("path", data["path"] + (f" (+{len(info.parts) - 1} parts)" if len(info.parts) > 1 else "")),
        ("architecture", data["architecture"]),
        ("parameters", format_count(data["parameters"]) + (f" ({data['size_label']})" if data["size_label"] else "")),
        ("quant", data["quant"] or "?"),
        ("size", format_size(data["size"])),
        ("context", _count(data["context_length"])),
        ("layers", _count(data["layers"])),
    ]
    if data["experts"]:
        rows.append(("experts", f"{_count(data['experts'])} ({_count(data['experts_used'])} used per token)"))
    rows.append(("thinking", _THINKING[thinking] + (" (from the catalog)" if thinking_source == "catalog" else "")))
    if model:
        rows.append(("verified", checked_label(model)))
    if spec:
        if spec.sampling:
            rows.append(("sampling", f"temperature {spec.sampling.temperature}, top-p {spec.sampling.top_p}"))
        rows.append(("license", spec.license))
    for k, v in rows:
        out.print(f"  {k:<13}{printable(v)}", markup=False, highlight=False)
    out.print(f"  {'tensors':<13}{len(info.tensors)}: " + ", ".join(
        f"{t} ×{counts[t]} ({format_size(sizes.get(t, 0))})" for t in counts), markup=False, highlight=False)
    tpl = info.chat_template
    if tpl is None:
        out.print(f"  {'template':<13}none (the GGUF has no chat template)", markup=False)
    elif template:
        out.print("  template:", markup=False)
        out.print(printable(tpl, multiline=True), markup=False, highlight=False)
    else:
        first = tpl.strip().splitlines()[0] if tpl.strip() else ""
        out.print(f"  {'template':<13}{len(tpl):,} characters: {printable(first, limit=60)} "
                  "(--template prints it)", markup=False, highlight=False)


_THINKING = {
    "hybrid": "hybrid: reasons when asked (the template's thinking flag: --think/--no-think, /think on|off)",
    "reasoning": "reasoning-only: always reasons in <think>…</think> (--no-think only hides it)",
    "plain": "plain: answers without reasoning",
    "unknown": "unknown (no chat template; localseek uses an R1-style one)",
}


def _file_value(value: Any) -> Any:
    """A header value as `show` reports it: whole numbers and text as they are, anything else (NaN, lists, a
    fraction where a count belongs) as its printable repr, so JSON stays valid and text stays one line."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return printable(repr(value), limit=80)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and value else (str(value) if value else "?")


def _print_catalog(info: dict) -> None:
    out = _out()
    for k in ("title", "family", "repo", "license", "context", "note"):
        if info.get(k):
            out.print(f"  {k:<13}{info[k]}", markup=False, highlight=False)


# ───────────────────────────── rm ─────────────────────────────

@app.command()
def rm(name: NameArg, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Remove an installed model. Files another model (or another tool's cache entry) still uses are kept."""
    from localseek.models.pull import find_installed

    model = find_installed(name)
    if model is None:
        names = list(store.installed())
        hits = load_catalog().suggest(name, extra=names)
        hint = f" Did you mean {' or '.join(repr(h) for h in hits)}?" if hits else ""
        raise UsageError(f"{name} is not installed.{hint} `localseek list` shows what is.")
    if not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError(f"Removing {model.name} needs confirmation: pass --yes.")
        if not confirm(f"Remove {model.name} ({format_size(model.size)})?", assume_yes=False):
            err_console().print("Kept.", markup=False)
            return
    result = store.remove(model.name)
    if as_json:
        _print_json({"name": model.name, "deleted": result.deleted, "freed": result.freed,
                     "kept": [{"path": p, "why": why} for p, why in result.kept]})
        return
    console = err_console()
    console.print(f"Removed {printable(model.name)}: freed {format_size(result.freed)}.", markup=False)
    for p, why in result.kept:
        console.print(f"  kept {printable(p)}: {printable(why)}", style="stats", markup=False)


__all__ = ["checked_label", "confirm", "do_pull"]
