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
from localseek.cli.completion import complete_model
from localseek.cli.offload import Force
from localseek.cli.output import out_console
from localseek.cli.progress import RichProgress, err_console, make_progress
from localseek.errors import Interrupted, LocalseekError, UsageError
from localseek.models import store
from localseek.models.catalog import DEFAULT_CTX, ModelSpec, load_catalog
from localseek.planning import hardware
from localseek.sizes import format_count, format_size
from localseek.text import printable

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
NameArg = Annotated[str, typer.Argument(
    help="A model name (`localseek models`, `localseek list --all`), OWNER/REPO[:QUANT], or a path.",
    show_default=False, autocompletion=complete_model)]
PullArg = Annotated[str, typer.Argument(
    help="A catalog name (`localseek models`), or OWNER/REPO[:QUANT|FILE] on the Hub (also hf.co/OWNER/REPO:QUANT).",
    show_default=False, autocompletion=complete_model)]
RmArg = Annotated[str, typer.Argument(help="An installed model (`localseek list`).", show_default=False,
                                      autocompletion=complete_model)]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _out() -> Console:
    return out_console()  # pipes and logs: one row per line, no wrapping at 80 columns


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
    from localseek.planning.plan import Request, make_plan

    catalog = load_catalog()
    hw = hardware.detect()
    mem = hw.memory
    vram = 0 if hw.unified_memory else hw.vram_free  # unified memory is already counted as RAM
    installed = store.installed()
    rows = []
    for spec in catalog.models:
        have = sorted(m.quant or "?" for m in installed.values() if m.catalog_id == spec.id)
        # The same planner and margins as `run`: from the GGUF header when it is here (installed, or read from the
        # Hub by `plan`/`pull`), else from the catalog's sizes.
        fp, basis, size = _footprint(spec, installed)
        plan = make_plan(fp, hw, Request()) if fp is not None and mem.total else None
        need = (plan.ram.total + (plan.gpu.total if plan.gpu else 0)) if plan else spec.memory_need()
        fits = plan.fits if plan else None
        rows.append({
            "id": spec.id, "aliases": list(spec.aliases), "title": spec.title, "family": spec.family,
            "repo": spec.repo, "hf_arch": spec.hf_arch, "gguf_arch": spec.gguf_arch, "params": spec.params,
            "active_params": spec.active, "context": spec.context, "license": spec.license,
            "reasoning": spec.reasoning, "status": spec.status, "default_quant": spec.default_quant,
            "size": size, "memory_needed": need, "memory_ctx": min(DEFAULT_CTX, spec.context),
            "planned_from": basis if plan else None,
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
                  f"{DEFAULT_CTX}-token context, planned as `run` would, from the GGUF header when read — "
                  "`localseek plan NAME` reads it — else from the catalog's sizes)",
                  title_justify="left", box=None, header_style="bold")
    wide = out.width >= 110
    for col in ("name", "also", "params", "default", "size", "needs", "fits", "from", "installed"):
        if col == "also" and not wide:
            continue
        table.add_column(col, no_wrap=col != "installed")
    for r, spec in zip(rows, catalog.models):
        fits = "?" if r["fits"] is None else ("yes" if r["fits"] else "no")
        default = r["default_quant"] or "convert"
        cells = [spec.id, spec.aliases[0] if spec.aliases else "", _params(spec), default,
                 format_size(r["size"]) if r["size"] else "—",
                 format_size(r["memory_needed"]) if r["memory_needed"] else "—", fits, r["planned_from"] or "—",
                 ", ".join(r["installed"])]
        if not wide:
            del cells[1]
        table.add_row(*cells)
    out.print(table)
    out.print("Pull with `localseek pull NAME` (or NAME:QUANT); `convert` models need "
                 "`localseek pull NAME --original --quantize Q4_K_M`.", style="stats")


def _footprint(spec: ModelSpec, installed: dict[str, store.InstalledModel]) -> tuple[Any, str, int | None]:
    """(footprint, "header" | "catalog", size) of a catalog model at its default quant: from the installed file's
    header, else a header read from the Hub earlier (cached, no network here), else the catalog's sizes."""
    from localseek.models.gguf_info import read_gguf
    from localseek.models.remote import cached_remote, label_for
    from localseek.planning.footprint import from_catalog, from_gguf

    mine = next((m for m in installed.values() if m.catalog_id == spec.id and m.kind == "gguf"
                 and m.quant == spec.default_quant and not m.missing()), None)
    info = None
    if mine is not None:
        try:
            info = read_gguf(mine.primary)
        except LocalseekError:
            info = None
    if info is None and spec.gguf:
        head = cached_remote(label_for(spec, None))
        info = head.info if head else None
    if info is not None:
        try:
            return from_gguf(info), "header", info.total_bytes
        except LocalseekError:
            pass
    return from_catalog(spec), "catalog", spec.size_of()


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
    name: PullArg,
    original: Annotated[bool, typer.Option("--original", help="Download the original safetensors weights.")] = False,
    quantize: Annotated[str | None, typer.Option(
        "--quantize", metavar="TYPE", help="Convert the original weights to this GGUF type (implies --original).",
    )] = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Install files the Hub gives no hash for (or, offline, the HF cache's files) with only "
                            "their size checked; `list` and `show` say so.",
    )] = False,
    as_json: JsonOpt = False,
    force: Force = False,
    yes: YesOpt = False,
) -> None:
    """Download a model: NAME[:QUANT] from the catalog, or OWNER/REPO[:QUANT|FILE] from the Hub.

    First its GGUF header is read from the Hub (a few MB) and planned on this machine: a model that will not fit is
    downloaded only after you say so (or with --force). Files go to the Hugging Face cache (HF_HOME) and are
    verified against the Hub's sha256 (git hash for small files); a file with no hash to check is refused unless
    --no-verify. An interrupted pull resumes where it stopped. A model Ollama, LM Studio or
    llama.cpp already keeps here is used in place instead (`list --all`).
    """
    if not (original or quantize):
        if _already_elsewhere(name, as_json=as_json):
            return
        plan_before_download(name, force=force, assume_yes=yes)
    result = do_pull(name, original=original, quantize=quantize, verify=not no_verify)
    if as_json:
        data = result.model.to_json()
        data.update(already_installed=result.already_installed, downloaded=result.downloaded,
                    reused=result.reused, notes=result.notes)
        _print_json(data)


def plan_before_download(name: str, *, force: bool, assume_yes: bool, request: Any = None,
                         ask: bool = True) -> str | None:
    """Plan a model that is not here from its header on the Hub, before downloading it. Says on stderr whether it
    fits; one that does not is downloaded only if the user says so (a terminal), or with --force / --yes.

    Returns the plan's one-line summary (None when there was nothing to plan: installed, offline, no header).
    Raises InsufficientMemoryError when the answer is no (without asking when `ask` is off: `run` could not load
    it anyway).
    """
    from localseek.cli.offload import summary_line
    from localseek.errors import InsufficientMemoryError
    from localseek.models.hub import offline_mode
    from localseek.models.pull import find_installed
    from localseek.planning.plan import Request
    from localseek.runtime.open import prepare

    if offline_mode() or find_installed(name) is not None:
        return None
    console = err_console()
    try:
        prep = prepare(name, request or Request(), remote=True)
    except LocalseekError:
        # No header to plan from (an unknown name, the network, a file that is no GGUF…): the pull that follows
        # meets the same problem and says it in one line; a second line here would only repeat it.
        return None
    if prep.ref.remote is None:
        return None
    plan = prep.plan
    size = format_size(prep.ref.remote.size)
    if plan.fits:
        line = summary_line(plan).removeprefix("plan: ")
        console.print(f"{name} ({size}) fits this machine: {line} (planned from its header on the Hub).",
                      style="stats", markup=False)
        return line
    console.print(f"{name} ({size}) will not fit this machine: {plan.problem}", style="notice", markup=False)
    if force or assume_yes:
        console.print("Downloading it anyway (--force).", style="notice", markup=False)
        return None
    if ask and sys.stdin.isatty() and sys.stderr.isatty():
        if typer.confirm(f"Download {size} anyway?", default=False, err=True):
            return None
        raise InsufficientMemoryError(f"Not downloaded: {name} will not fit; `localseek plan {name}` shows why.")
    raise InsufficientMemoryError(f"{name} ({size}) will not fit this machine (`localseek plan {name}` shows why); "
                                  "pass --force to download it anyway, or pick a smaller quant as NAME:QUANT.")


def _already_elsewhere(name: str, *, as_json: bool) -> bool:
    """A model another tool already keeps here is used in place, not downloaded again: say so (True)."""
    from localseek.models.pull import find_installed
    from localseek.models.resolve import elsewhere_copy

    if find_installed(name) is not None:
        return False  # localseek's own copy: `pull` says it is installed (or repairs it)
    found = elsewhere_copy(name)
    if found is None or found.source == "hf-cache":  # pull's own cache: pull verifies and registers what it finds
        return False
    if as_json:
        _print_json({"name": found.name, "already_installed": True, "downloaded": 0, "found": found.to_json()})
    err_console().print(f"{found.name} is already on this machine ({found.tool}: {found.path}, "
                        f"{format_size(found.size)}); nothing to download — `localseek run {name}` uses it in place.",
                        markup=False)
    return True


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
def list_models(
    as_json: JsonOpt = False,
    every: Annotated[bool, typer.Option(
        "--all", "-a", help="Also models other tools keep here (Ollama, LM Studio, llama.cpp, the Hugging Face "
        "cache, LOCALSEEK_MODELS_PATH), which `run` uses in place.")] = False,
) -> None:
    """Installed models: name, quant, size, what was verified, path, last used (also: `localseek ls`)."""
    from localseek.models import elsewhere

    models = sorted(store.installed().values(), key=lambda m: m.name)
    found = sorted(elsewhere.find_all(), key=lambda m: (m.source, m.name)) if every else []
    if as_json:
        rows = [m.to_json() | {"missing": m.missing(), "tool": "localseek"} for m in models]
        _print_json(rows + [f.to_json() for f in found])
        return
    if not models and not found:
        more = "" if every else " `localseek list --all` also shows models other tools keep here."
        err_console().print("Nothing installed yet. `localseek models` lists the catalog; "
                            f"`localseek pull deepseek-r1:1.5b` fetches a small one.{more}", markup=False)
        return
    table = Table(box=None, header_style="bold")
    columns = ("name", "source", "quant", "size", "verified", "path", "last used") if every else \
        ("name", "quant", "size", "verified", "path", "last used")
    for col in columns:
        table.add_column(col, overflow="fold")
    for m in models:
        broken = " (files missing: pull again)" if m.missing() else ""
        row = [m.name, m.quant or m.kind, format_size(m.size), checked_label(m), f"{m.primary}{broken}",
               _ago(m.last_used)]
        cells = row[:1] + ["localseek"] + row[1:] if every else row
        table.add_row(*(Text(printable(c)) for c in cells))
    for f in found:
        cells = [f.name, f.tool, f.quant or "?", format_size(f.size), "—", str(f.path), "—"]
        table.add_row(*(Text(printable(c)) for c in cells))
    _out().print(table)
    if found:
        err_console().print("Models of other tools are used in place, read-only: `localseek run NAME`.",
                            style="stats", markup=False)


@app.command("ls", hidden=True)
def ls(as_json: JsonOpt = False, every: Annotated[bool, typer.Option("--all", "-a")] = False) -> None:
    """Same as `list` (Ollama's spelling)."""
    list_models(as_json=as_json, every=every)


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
    from localseek.models.resolve import elsewhere_copy

    catalog = load_catalog()
    model = None
    found = None
    path = Path(name).expanduser()
    if not path.exists() and not looks_like_path(name):
        model = find_installed(name, catalog)
        found = elsewhere_copy(name) if model is None else None
        if found is not None:  # another tool's model: its header, read in place
            path = found.path
        elif model is None:
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
        elif model.kind != "gguf":
            raise UsageError(f"{model.name} holds original safetensors weights ({model.primary}); convert them with "
                             f"`localseek pull {model.catalog_id or model.repo} --original --quantize Q4_K_M`.")
        else:
            path = model.primary
    info = read_gguf(path)
    spec = catalog.get(model.catalog_id) if model and model.catalog_id else None
    counts = summarize_types(info.tensors)
    sizes = bytes_by_type(info.tensors)
    value = _file_value
    thinking, thinking_source = thinking_mode(info.chat_template, spec.reasoning if spec else None)
    data = {
        "name": model.name if model else found.name if found else str(info.path), "path": str(info.path),
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
def rm(name: RmArg, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Remove an installed model. Files another model (or another tool's cache entry) still uses are kept."""
    from localseek.models.pull import find_installed

    model = find_installed(name)
    if model is None:
        raise UsageError(_not_installed(name))
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


def _not_installed(name: str) -> str:
    """Why `rm NAME` has nothing to remove, and what to do instead."""
    import difflib

    from localseek.models import elsewhere

    found = elsewhere.lookup(name)
    if found is not None:
        return (f"{found.name} belongs to {found.tool} ({found.path}); localseek only uses it in place and never "
                f"deletes it: remove it with {found.remove_hint()}.")
    installed = list(store.installed())
    typed = name.strip().lower()
    hits = [h for h in difflib.get_close_matches(typed, [n.lower() for n in installed], n=3, cutoff=0.55)
            if h != typed]
    by_lower = {n.lower(): n for n in installed}
    if hits:
        return (f"{name} is not installed. Did you mean {' or '.join(repr(by_lower[h]) for h in hits)}? "
                "`localseek list` shows what is.")
    try:
        known = load_catalog().resolve(name) is not None
    except LocalseekError:  # NAME:NOT-A-QUANT
        known = False
    nothing = " (it is in the catalog, but was never pulled)" if known else ""
    return f"{name} is not installed{nothing}, so there is nothing to remove; `localseek list` shows what is."


__all__ = ["checked_label", "confirm", "do_pull"]
