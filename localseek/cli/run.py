"""`localseek run MODEL [PROMPT]`: answer once, or chat."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from gguf import Keys

from localseek.chat.conversation import read_template_file
from localseek.chat.generation import Done, Turn, template_for
from localseek.chat.session import ChatSession, ChatSettings
from localseek.cli import app
from localseek.cli.completion import complete_model
from localseek.cli.offload import (
    CpuMoe,
    Ctx,
    Force,
    GpuLayers,
    Mlock,
    NCpuMoe,
    NoMmap,
    Rpc,
    Threads,
    make_request,
    summary_line,
)
from localseek.errors import Interrupted, UsageError
from localseek.models.store import InstalledModel
from localseek.sizes import format_size
from localseek.text import printable

ModelArg = Annotated[str, typer.Argument(
    help="A catalog name (deepseek-r1:7b, see `localseek models`), an installed model, a model Ollama, LM Studio "
         "or llama.cpp keeps here (`localseek list --all`), OWNER/REPO[:QUANT], or a .gguf file (split models: any "
         "part).", show_default=False, autocompletion=complete_model)]
_SAMPLING = "Sampling (defaults: catalog entry, else GGUF, else DeepSeek R1 advice)"
_THINK = "Reasoning"
_SPEED = "Speculative decoding"


Opt = typer.Option


@app.command()
def run(
    model: ModelArg,
    prompt: Annotated[
        str | None, typer.Argument(help="Answer this once and exit (piped stdin is appended). Omit to chat.")
    ] = None,
    prompt_file: Annotated[Path | None, Opt(
        "--file", "-f", help="Read the prompt from this file (- for stdin); PROMPT, if given, comes first.")] = None,
    max_tokens: Annotated[
        int | None,
        Opt("--max-tokens", "-n", min=1, help="Generate at most N tokens (reasoning included).", rich_help_panel=_SAMPLING)
    ] = None,
    temperature: Annotated[
        float | None, Opt(min=0.0, help="Temperature, 0 = greedy (default 0.6).", rich_help_panel=_SAMPLING)
    ] = None,
    top_p: Annotated[
        float | None, Opt("--top-p", min=0.0, max=1.0, help="Nucleus sampling (default 0.95).", rich_help_panel=_SAMPLING)
    ] = None,
    top_k: Annotated[
        int | None, Opt("--top-k", min=0, help="Top-k sampling, 0 = off (default 40).", rich_help_panel=_SAMPLING)
    ] = None,
    min_p: Annotated[
        float | None, Opt("--min-p", min=0.0, max=1.0, help="Min-p sampling (default 0.05).", rich_help_panel=_SAMPLING)
    ] = None,
    repeat_penalty: Annotated[
        float | None, Opt(min=0.01, help="Repetition penalty, 1 = off (default 1).", rich_help_panel=_SAMPLING)
    ] = None,
    seed: Annotated[int | None, Opt(help="Random seed for reproducible sampling.", rich_help_panel=_SAMPLING)] = None,
    think: Annotated[
        bool,
        Opt("--think/--no-think", rich_help_panel=_THINK,
            help="Hybrid models (V3.1 and later): reason before answering. R1-style models always reason."),
    ] = True,
    think_budget: Annotated[
        int | None,
        Opt("--think-budget", min=0, rich_help_panel=_THINK,
            help="Cap reasoning at N tokens, then close it and let the model answer (0 = skip it)."),
    ] = None,
    show_thinking: Annotated[
        bool, Opt("--show-thinking", help="Piped output: write the reasoning to stderr.", rich_help_panel=_THINK)
    ] = False,
    hide_thinking: Annotated[
        bool,
        Opt("--hide-thinking", rich_help_panel=_THINK,
            help="Terminal: do not show the reasoning live (a one-line summary instead)."),
    ] = False,
    system: Annotated[str | None, Opt("--system", help="A system prompt (DeepSeek advises none for R1).")] = None,
    template_file: Annotated[Path | None, Opt(
        "--template-file", help="Use the Jinja chat template in FILE instead of the model's own "
                                "(`localseek show MODEL --template` prints the model's).")] = None,
    as_json: Annotated[bool, Opt("--json", help="One-shot: print the answer, reasoning and stats as JSON.")] = False,
    ctx: Ctx = None,
    threads: Threads = None,
    gpu_layers: GpuLayers = "auto",
    cpu_moe: CpuMoe = False,
    n_cpu_moe: NCpuMoe = None,
    mlock: Mlock = False,
    no_mmap: NoMmap = False,
    force: Force = False,
    rpc: Rpc = None,
    verbose: Annotated[bool, Opt("--verbose", "-v", help="Show the plan and llama.cpp's own log.")] = False,
    yes: Annotated[bool, Opt("--yes", "-y", help="Pull the model without asking if it is not installed.")] = False,
    mtp: Annotated[bool | None, Opt(
        "--mtp/--no-mtp", rich_help_panel=_SPEED, show_default=False,
        help="Speculative decoding with the model's own MTP block (default: on when it has one).")] = None,
    draft: Annotated[str | None, Opt(
        "--draft", rich_help_panel=_SPEED,
        help="Speculative decoding with a smaller model that shares the tokenizer: an installed model "
             "(e.g. deepseek-r1:1.5b for the Qwen distills) or a .gguf.")] = None,
    draft_max: Annotated[int | None, Opt(
        "--draft-max", min=1, max=32, rich_help_panel=_SPEED,
        help="Most tokens drafted per step (MTP 3, draft model 6); the length used is tuned as it runs.")] = None,
) -> None:
    """Run a model: one answer for PROMPT (also piped stdin, or a file with -f), or an interactive chat.

    Memory is planned first (see `localseek plan MODEL`); the offload flags override the plan.
    Exit codes: 0 done, 2 bad input or model, 130 interrupted (Ctrl-C).
    """
    from localseek.models.resolve import check
    from localseek.runtime.open import Speculation, open_model

    check(model)  # an unknown name gets its "did you mean" before anything else is said
    request = make_request(
        ctx=ctx, gpu_layers=gpu_layers, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, threads=threads, mlock=mlock,
        no_mmap=no_mmap, force=force, rpc=rpc,
    )
    piped = _read_prompt_file(prompt_file) if prompt_file is not None else _read_stdin()
    if prompt is not None and piped:
        prompt = f"{prompt}\n\n{piped}"
    elif prompt is None and piped:
        prompt = piped
    if prompt is not None and not prompt.strip():
        raise UsageError("The prompt is empty; pass some text or pipe it in.")
    if prompt is None and (sys.stdin is None or not sys.stdin.isatty()):
        raise UsageError("Nothing to answer: pass a prompt, pipe text in, or run from a terminal to chat.")
    if as_json and prompt is None:
        raise UsageError("--json needs a prompt (it answers once); pass one or pipe it in.")
    template_source = read_template_file(template_file) if template_file else None  # before the (long) load
    flags = {
        "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
        "repeat_penalty": repeat_penalty, "max_tokens": max_tokens, "seed": seed,
    }
    with open_model(
        model, request, speculation=Speculation(mtp=mtp, draft=draft, n_draft=draft_max), sampling=flags,
        verbose=verbose, fetch=lambda ref: _pull_first(ref, assume_yes=yes, force=force, request=request), notify=_say,
        on_plan=lambda prep: _report_plan(prep.plan, verbose=verbose),
    ) as opened:
        plan = opened.plan
        if verbose and plan.overrides:
            moved = opened.engine.overridden_tensors()
            _say(f"llama.cpp: {len(moved)} tensors overridden to CPU (RAM) by {', '.join(plan.overrides)}")
        settings = ChatSettings(
            sampling=opened.sampling, think=think, show_thinking=not hide_thinking, think_budget=think_budget
        )
        facts = {**_facts(opened.info, opened.ref), "plan": summary_line(plan).removeprefix("plan: ")}
        template = None
        if template_source is not None and template_file is not None:
            template = template_for(opened.engine, template_source, f"The chat template in {template_file.name}")
            facts["chat template"] = str(template_file)
        session = ChatSession(opened.engine, settings, system=system, model_name=opened.name, model_facts=facts,
                              template=template)
        if prompt is not None:
            _answer_once(session, prompt, as_json=as_json, show_thinking=show_thinking)
        else:
            _chat(session, opened.ref.key)


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


def _pull_first(ref: str, *, assume_yes: bool, force: bool, request: Any) -> InstalledModel:
    """`run NAME` of a model that is not here yet: plan it from its header on the Hub, ask (on a terminal) or take
    --yes, then pull it."""
    from localseek.cli.models import confirm, do_pull, plan_before_download
    from localseek.errors import NotInstalledError
    from localseek.models.pull import expected_size, parse_ref

    size = expected_size(parse_ref(ref))
    if not assume_yes and not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise NotInstalledError(f"{ref} is not installed: pass --yes to download it now, or `localseek pull {ref}`.")
    plan_before_download(ref, force=force, assume_yes=False, request=request, ask=False)
    about = f" (about {format_size(size)})" if size else ""
    if not confirm(f"{ref} is not installed. Download it{about} from Hugging Face now?", assume_yes=assume_yes):
        raise NotInstalledError(f"Not downloaded; `localseek pull {ref}` fetches it when you are ready.")
    return do_pull(ref).model


def _report_plan(plan, *, verbose: bool) -> None:
    """Plan warnings always go to stderr (before the possibly long load); with --verbose the plan too."""
    for warning in plan.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if plan.forced:
        sys.stderr.write(f"warning: --force: {plan.problem}\n")
    if verbose:
        sys.stderr.write(summary_line(plan) + "\n")


def _read_prompt_file(path: Path) -> str | None:
    """`--file PATH` (or `-` for stdin): the prompt text, or a one-line error that says what is wrong."""
    if str(path) == "-":
        text = sys.stdin.read() if sys.stdin is not None else ""
        if not text.strip():
            raise UsageError("--file - read nothing from stdin; pipe the prompt in.")
        return text
    try:
        data = path.expanduser().read_bytes()
    except IsADirectoryError:
        raise UsageError(f"--file {path} is a folder; give a text file.") from None
    except OSError as exc:
        raise UsageError(f"Cannot read --file {path}: {exc.strerror or exc}.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--file {path} is not UTF-8 text.") from None
    if not text.strip():
        raise UsageError(f"--file {path} is empty; put the prompt in it.")
    return text


def _read_stdin() -> str | None:
    if sys.stdin is None or sys.stdin.isatty():
        return None
    data = sys.stdin.read()
    return data if data.strip() else None


def _facts(info: Any, ref: Any) -> dict[str, str]:
    facts = {"file": str(info.path), "architecture": info.arch}
    if ref.found is not None:
        facts["from"] = f"{ref.found.tool}, used in place (read-only)"
    name = info.metadata.get(Keys.General.NAME)
    if name:
        facts["name"] = printable(name, limit=200)  # from the file: shown by /model
    size = info.total_bytes
    facts["size"] = format_size(size) + (
        f" in {len(info.parts)} parts" if len(info.parts) > 1 else ""
    )
    license_ = ref.spec.license if ref.spec is not None else info.metadata.get(Keys.General.LICENSE)
    if license_:
        facts["license"] = str(license_)
    return facts


def _answer_once(session: ChatSession, prompt: str, *, as_json: bool, show_thinking: bool) -> None:
    from localseek.tui import ChatView, PlainView, make_console

    if as_json:
        _answer_json(session, prompt)
        return
    if sys.stdout.isatty():
        view: Any = ChatView(make_console(), show_thinking=session.settings.show_thinking,
                             stats=lambda: session.live_stats)
    else:
        view = PlainView(show_thinking=show_thinking)
    turn = Turn()
    view.begin_turn()
    events = session.ask(prompt, turn)
    try:
        done = view.show(events)
    except KeyboardInterrupt:
        events.close()
        view.end_turn(session.interrupted(turn), interrupted=True)
        raise Interrupted("Interrupted.") from None
    except BaseException:
        view.abort()
        raise
    view.end_turn(done)


def _answer_json(session: ChatSession, prompt: str) -> None:
    turn = Turn()
    events = session.ask(prompt, turn)
    interrupted = False
    try:
        done = next(e for e in events if isinstance(e, Done))
    except KeyboardInterrupt:
        events.close()
        done, interrupted = session.interrupted(turn), True
    sys.stdout.write(json.dumps(_json_result(session, done), ensure_ascii=False) + "\n")
    sys.stdout.flush()
    if interrupted:
        raise Interrupted("Interrupted.")


def _json_result(session: ChatSession, done: Done) -> dict[str, Any]:
    stats = dict(done.stats.as_dict())
    stats.update(
        reasoning_tokens=done.reasoning_tokens,
        reasoning_s=round(done.reasoning_seconds, 4),
        generation_s=round(done.stats.generation_seconds, 4),
        think_budget_hit=done.budget_hit,
    )
    return {
        "model": session.model_name,
        "answer": done.answer,
        "reasoning": done.reasoning,
        "interrupted": done.stats.stop_reason == "interrupted",
        "stats": stats,
    }


def _chat(session: ChatSession, history_key: str) -> None:
    from localseek.tui import ChatView, PlainView, make_console
    from localseek.tui.chatloop import chat_loop, plain_reader, prompt_reader

    if sys.stdin.isatty() and sys.stdout.isatty():
        console = make_console()
        view: Any = ChatView(console, show_thinking=session.settings.show_thinking,
                             stats=lambda: session.live_stats)
        chat_loop(session, view, prompt_reader(history_key), console)
    else:
        chat_loop(session, PlainView(show_thinking=False), plain_reader, None)
