"""`localseek run MODEL [PROMPT]`: answer once, or chat."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from localseek.chat import Conversation
from localseek.cli import app
from localseek.engine import LoadOptions, Sampling
from localseek.errors import Interrupted, UsageError
from localseek.generation import Turn, respond
from localseek.loader import default_ctx, open_model
from localseek.tui import StreamView, make_console

ModelArg = Annotated[str, typer.Argument(help="A .gguf file (split models: any part).", show_default=False)]


@app.command()
def run(
    model: ModelArg,
    prompt: Annotated[str | None, typer.Argument(help="Answer this once and exit. Omit to chat.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", "-n", min=1, help="Cap the reply length.")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0 = greedy).")] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling.")] = 0.95,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Top-k sampling (0 = off).")] = 40,
    seed: Annotated[int | None, typer.Option(help="Random seed for reproducible sampling.")] = None,
    ctx: Annotated[int | None, typer.Option("--ctx", min=64, help="Context size in tokens.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1, help="CPU threads.")] = None,
    hide_thinking: Annotated[bool, typer.Option("--hide-thinking", help="Do not show the reasoning.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Load even if the model seems too big for RAM.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's own log.")] = False,
    mtp: Annotated[bool | None, typer.Option(
        "--mtp/--no-mtp", help="Speculative decoding with the model's own MTP block (default: on when it has one).",
        show_default=False)] = None,
    draft: Annotated[str | None, typer.Option(
        "--draft", help="Speculative decoding with a smaller model sharing the tokenizer (a .gguf).")] = None,
    draft_max: Annotated[int | None, typer.Option(
        "--draft-max", min=1, max=32, help="Most tokens drafted per step (MTP: 2, draft model: 4).")] = None,
) -> None:
    """Run a model: one answer for PROMPT (also reads piped stdin), or an interactive chat."""
    from localseek import speculative
    from localseek.ggufinfo import read_gguf
    from localseek.loader import resolve_model

    info = read_gguf(resolve_model(model))
    use_mtp = speculative.resolve(info, mtp=mtp, draft=draft)
    options = LoadOptions(n_ctx=default_ctx(info, ctx), n_threads=threads, verbose=verbose, load_mtp=use_mtp)
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed)
    piped = _read_stdin()
    if prompt is not None and piped:
        prompt = f"{prompt}\n\n{piped}"
    elif prompt is None and piped:
        prompt = piped
    engine, _ = open_model(str(info.path), options, force=force)
    try:
        speculative.enable(engine, mtp=use_mtp, draft=draft, n_draft=draft_max)
        if prompt is not None:
            if not prompt.strip():
                raise UsageError("The prompt is empty; pass some text or pipe it in.")
            _answer_once(engine, prompt, sampling, show_thinking=not hide_thinking)
        else:
            _chat_loop(engine, sampling, show_thinking=not hide_thinking)
    finally:
        engine.close()


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
