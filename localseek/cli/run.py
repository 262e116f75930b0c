"""`localseek run MODEL [PROMPT]`: answer once, or chat."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
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
from localseek.errors import NoAnswerError, UsageError
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
    frequency_penalty: Annotated[
        float | None, Opt("--frequency-penalty", min=-2.0, max=2.0, rich_help_panel=_SAMPLING,
                          help="Lower a token's score by this × its count in the last 64 tokens, 0 = off (default).")
    ] = None,
    presence_penalty: Annotated[
        float | None, Opt("--presence-penalty", min=-2.0, max=2.0, rich_help_panel=_SAMPLING,
                          help="Lower the score of any token seen in the last 64 tokens, 0 = off (default).")
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
        help="Speculative decoding with the model's own MTP block, or the MTP file beside it (DeepSeek-V4) "
             "(default: on when it has one).")] = None,
    draft: Annotated[str | None, Opt(
        "--draft", rich_help_panel=_SPEED,
        help="Speculative decoding with a smaller model that shares the tokenizer: an installed model "
             "(e.g. deepseek-r1:1.5b for the Qwen distills) or a .gguf (also a V4 MTP file).")] = None,
    draft_max: Annotated[int | None, Opt(
        "--draft-max", min=1, max=32, rich_help_panel=_SPEED,
        help="Most tokens drafted per step (MTP 3, draft model 6); the length used is tuned as it runs.")] = None,
) -> None:
    """Run a model: one answer for PROMPT (also piped stdin, or a file with -f), or an interactive chat.

    Memory is planned first (see `localseek plan MODEL`); the offload flags override the plan. Threads adapt to
    how busy the machine is as the model runs; --threads N fixes them.

    Exit codes: 0 answered; 2 bad input or model; 3 no answer (one-shot: --max-tokens or the context cut the reply
    while the model was still reasoning, or it ended there); 130 interrupted (Ctrl-C).
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
        "frequency_penalty": frequency_penalty, "presence_penalty": presence_penalty,
    }
    loading = LoadingNotice(sys.stderr)

    def planned(prep: Any) -> None:
        _report_plan(prep.plan, verbose=verbose)
        if not verbose:  # --verbose shows llama.cpp's own log while it loads
            loading.start(f"{prep.ref.name} ({format_size(prep.info.total_bytes)})")

    try:
        opened = open_model(
            model, request, speculation=Speculation(mtp=mtp, draft=draft, n_draft=draft_max), sampling=flags,
            verbose=verbose, fetch=lambda ref: _pull_first(ref, assume_yes=yes, force=force, request=request),
            notify=_say, on_plan=planned,
        )
    finally:
        loading.stop()
    with opened:
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


class LoadingNotice:
    """While a model loads: after `after` seconds, one line on a terminal's stderr that says so and counts the
    seconds, erased when the load ends. Nothing when stderr is not a terminal. It writes to its own copy of the
    stderr descriptor: llama-cpp-python points descriptor 2 at /dev/null while it loads."""

    def __init__(self, stream: Any, *, after: float = 1.0, every: float = 0.5) -> None:
        self.stream, self.after, self.every = stream, after, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1

    def start(self, what: str) -> None:
        if self._thread is not None or not _isatty(self.stream):
            return
        self._fd = os.dup(self.stream.fileno())
        self._thread = threading.Thread(target=self._run, args=(what, time.monotonic()), daemon=True)
        self._thread.start()

    def _run(self, what: str, started: float) -> None:
        if self._stop.wait(self.after):
            return
        while True:
            os.write(self._fd, f"\r\x1b[2KLoading {what} … {time.monotonic() - started:.0f} s".encode())
            if self._stop.wait(self.every):
                os.write(self._fd, b"\r\x1b[2K")
                return

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        os.close(self._fd)
        self._thread = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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
    """One answer, printed. Ctrl-C keeps what was printed and exits 130; a reply without an answer exits 3."""
    from localseek.tui import ChatView, PlainView, make_console

    if as_json:
        _answer_json(session, prompt)
        return
    terminal = sys.stdout.isatty()
    if terminal:
        # No "(no answer …)" line from the view: `_check_answered` says what happened and which flag helps.
        view: Any = ChatView(make_console(), show_thinking=session.settings.show_thinking,
                             stats=lambda: session.live_stats, no_answer_hint=None)
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
        if not terminal:
            _say("[interrupted]")  # the terminal view has said it; a pipe gets it on stderr
        raise typer.Exit(130) from None  # not an error: the answer so far is printed, and that is what was asked
    except BaseException:
        view.abort()
        raise
    view.end_turn(done)
    if done is not None:
        _check_answered(session, done, hint="" if terminal or show_thinking else " (--show-thinking shows it)")


def _check_answered(session: ChatSession, done: Done, *, hint: str = "") -> None:
    """An empty answer is not success: say in one line why there is none and what to raise (exit code 3). `hint`:
    where to see the reasoning, when the model itself stopped inside it."""
    if done.answer.strip() or done.stats.stop_reason == "interrupted":
        return
    reasoning = bool(done.reasoning.strip()) or done.prompt_opened_think
    where = "while the model was still reasoning" if reasoning else "before the model answered"
    budget = "" if session.settings.think_budget is not None else ", or cap the reasoning with --think-budget N"
    if done.stats.stop_reason == "length":
        raise NoAnswerError(
            f"No answer: the reply reached the cap of {done.stats.generated_tokens} tokens {where}; "
            f"raise --max-tokens (-n){budget}."
        )
    if done.stats.stop_reason == "context":
        raise NoAnswerError(f"No answer: the context ({done.stats.n_ctx} tokens) filled up {where}; raise --ctx{budget}.")
    raise NoAnswerError(f"No answer: the model ended its reply {where}{hint}.")


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
        raise typer.Exit(130)  # the JSON says "interrupted": true
    _check_answered(session, done)


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
