"""`localseek run MODEL [PROMPT]`: answer once, or chat."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from localseek.chat import Conversation
from localseek.cli import app
from localseek.cli.offload import (
    CpuMoe,
    Ctx,
    Force,
    GpuLayers,
    Mlock,
    NCpuMoe,
    NoMmap,
    Threads,
    make_request,
    summary_line,
)
from localseek.engine import Sampling
from localseek.errors import Interrupted, UsageError
from localseek.generation import Turn, respond
from localseek.ggufinfo import read_gguf
from localseek.loader import load_planned, plan_for, resolve_model
from localseek.tui import StreamView, make_console

ModelArg = Annotated[str, typer.Argument(
    help="A catalog name (deepseek-r1:7b, see `localseek models`), an installed model, OWNER/REPO[:QUANT], or a "
         ".gguf file (split models: any part).", show_default=False)]


@app.command()
def run(
    model: ModelArg,
    prompt: Annotated[str | None, typer.Argument(help="Answer this once and exit. Omit to chat.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", "-n", min=1, help="Cap the reply length.")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0 = greedy).")] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling.")] = 0.95,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Top-k sampling (0 = off).")] = 40,
    seed: Annotated[int | None, typer.Option(help="Random seed for reproducible sampling.")] = None,
    ctx: Ctx = None,
    threads: Threads = None,
    gpu_layers: GpuLayers = "auto",
    cpu_moe: CpuMoe = False,
    n_cpu_moe: NCpuMoe = None,
    mlock: Mlock = False,
    no_mmap: NoMmap = False,
    hide_thinking: Annotated[bool, typer.Option("--hide-thinking", help="Do not show the reasoning.")] = False,
    force: Force = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the plan and llama.cpp's own log.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Pull the model without asking if it is not installed.")]
    = False,
) -> None:
    """Run a model: one answer for PROMPT (also reads piped stdin), or an interactive chat.

    Memory is planned first (see `localseek plan MODEL`); the offload flags override the plan.
    """
    request = make_request(
        ctx=ctx, gpu_layers=gpu_layers, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, threads=threads, mlock=mlock,
        no_mmap=no_mmap, force=force,
    )
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed)
    piped = _read_stdin()
    if prompt is not None and piped:
        prompt = f"{prompt}\n\n{piped}"
    elif prompt is None and piped:
        prompt = piped
    info = read_gguf(resolve_model(model, fetch=lambda ref: _pull_first(ref, assume_yes=yes)))
    plan = plan_for(info, request)
    _report_plan(plan, verbose=verbose)
    engine = load_planned(info, plan, verbose=verbose)
    if verbose and plan.overrides:
        moved = engine.overridden_tensors()
        sys.stderr.write(f"llama.cpp: {len(moved)} tensors overridden to CPU (RAM) by {', '.join(plan.overrides)}\n")
    try:
        if prompt is not None:
            if not prompt.strip():
                raise UsageError("The prompt is empty; pass some text or pipe it in.")
            _answer_once(engine, prompt, sampling, show_thinking=not hide_thinking)
        else:
            _chat_loop(engine, sampling, show_thinking=not hide_thinking)
    finally:
        engine.close()


def _pull_first(ref: str, *, assume_yes: bool):
    """`run NAME` of a model that is not here yet: ask (on a terminal) or take --yes, then pull it."""
    from localseek import store
    from localseek.cli.models import confirm, do_pull
    from localseek.cli.progress import fmt_bytes
    from localseek.errors import NotInstalledError
    from localseek.pull import expected_size, parse_ref

    size = expected_size(parse_ref(ref))
    if not assume_yes and not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise NotInstalledError(f"{ref} is not installed: pass --yes to download it now, or `localseek pull {ref}`.")
    about = f" (about {fmt_bytes(size)})" if size else ""
    if not confirm(f"{ref} is not installed. Download it{about} from Hugging Face now?", assume_yes=assume_yes):
        raise NotInstalledError(f"Not downloaded; `localseek pull {ref}` fetches it when you are ready.")
    result = do_pull(ref)
    store.touch(result.model.name)
    return result.model.primary


def _report_plan(plan, *, verbose: bool) -> None:
    """Plan warnings always go to stderr (before the possibly long load); with --verbose the plan too."""
    for warning in plan.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if plan.forced:
        sys.stderr.write(f"warning: --force: {plan.problem}\n")
    if verbose:
        sys.stderr.write(summary_line(plan) + "\n")


def _read_stdin() -> str | None:
    if sys.stdin is None or sys.stdin.isatty():
        return None
    data = sys.stdin.read()
    return data if data.strip() else None


def _answer_once(engine, prompt: str, sampling: Sampling, *, show_thinking: bool) -> None:
    view = StreamView(show_thinking=show_thinking)
    conversation = Conversation()
    conversation.add_user(prompt)
    try:
        done = view.show(respond(engine, conversation.for_model(), sampling))
    except KeyboardInterrupt:
        view.end_turn(engine.last_stats, interrupted=True)
        raise Interrupted("Interrupted.") from None
    view.end_turn(done.stats if done else None)


def _chat_loop(engine, sampling: Sampling, *, show_thinking: bool) -> None:
    console = make_console()
    conversation = Conversation()
    console.print("Chatting with the model. Type /exit or press Ctrl-D to leave.", style="stats")
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:
            console.print()
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/bye", "/quit"):
            return
        conversation.add_user(text)
        turn = Turn()
        view = StreamView(show_thinking=show_thinking, console=console)
        try:
            done = view.show(respond(engine, conversation.for_model(), sampling, turn=turn))
        except KeyboardInterrupt:
            view.end_turn(engine.last_stats, interrupted=True)
            conversation.add_assistant("".join(turn.answer), "".join(turn.reasoning), interrupted=True)
            continue
        view.end_turn(done.stats if done else None)
        if done:
            conversation.add_assistant(done.answer, done.reasoning)
