"""Slash commands of the interactive chat, as data and plain functions (no terminal I/O).

`run_command(session, line)` applies a command to a `ChatSession` and returns a `Reply` that the TUI
renders. The command table also drives `/help` and tab completion.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localseek.chat.reasoning import ReasoningParser
from localseek.chat.session import ChatSession
from localseek.errors import LocalseekError, UsageError


@dataclass(frozen=True)
class Command:
    name: str
    args: str  # how to call it, for /help
    help: str
    choices: tuple[str, ...] = ()  # first-argument words, for completion


# The sampling settings /set changes (and /show parameters lists), in that order.
_KNOBS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty",
          "max_tokens", "seed")

COMMANDS: tuple[Command, ...] = (
    Command("/help", "", "this help"),
    Command("/think", "on|off|show|hide|budget N|budget off",
            "reasoning: on/off (hybrid models switch it in the template), show the last block again / hide "
            "live reasoning, cap it at N tokens", ("on", "off", "show", "hide", "budget")),
    Command("/clear", "", "forget the conversation (the system prompt stays)"),
    Command("/system", "TEXT | clear", "set, show (no TEXT) or clear the system prompt", ("clear",)),
    Command("/set", f"[parameter] {'|'.join(_KNOBS)} VALUE",
            "change a sampling setting (max_tokens/seed: 'off' to unset); Ollama's /set parameter NAME VALUE, "
            "/set system TEXT and /set think|nothink work too",
            ("parameter", *_KNOBS, "system", "think", "nothink")),
    Command("/save", "FILE", "save the conversation as JSON"),
    Command("/load", "FILE", "load a conversation saved with /save"),
    Command("/stats", "", "timings and token counts of the last reply and the session"),
    Command("/model", "", "the model, its context and template, the sampling settings"),
    Command("/show", "[info|parameters|template|system|license]",
            "what /model shows, or one part of it: the sampling settings, the chat template, the system prompt, "
            "the licence", ("info", "parameters", "template", "system", "license")),
    Command("/exit", "", "leave (also /bye, /quit, Ctrl-D)"),
)
ALIASES = {"/bye": "/exit", "/quit": "/exit", "/?": "/help"}
KEYS_HELP = (
    ("Enter", "send"),
    ("Alt-Enter or Ctrl-J", "new line (pasted text keeps its lines; or wrap text in \"\"\")"),
    ("Up / Down", "previous messages (kept per model)"),
    ("Tab", "complete a command"),
    ("Ctrl-C", "stop the reply; twice at an empty prompt: leave"),
    ("Ctrl-D", "leave"),
)
R1_SYSTEM_ADVICE = (
    "DeepSeek advises against system prompts for R1-style models: put instructions in your message instead."
)


@dataclass
class Reply:
    """What a command wants the user to see. `kind`: info, notice or error."""

    text: str = ""
    kind: str = "info"
    exit: bool = False
    rows: list[tuple[str, str]] = field(default_factory=list)  # a two-column table
    reasoning: dict[str, str] | None = None  # /think show: the assistant turn to re-open
    transcript: list[dict[str, str]] | None = None  # /load: the turns to replay


def is_command(line: str) -> bool:
    word = line.split(maxsplit=1)[0] if line.strip() else ""
    return word.startswith("/") and (_canonical(word) is not None or "/" not in word[1:])


def _canonical(word: str) -> str | None:
    word = ALIASES.get(word.lower(), word.lower())
    return word if any(c.name == word for c in COMMANDS) else None


def run_command(session: ChatSession, line: str) -> Reply:
    """Apply one slash command. Bad arguments give an error Reply, never an exception."""
    parts = line.strip().split(maxsplit=1)
    name = _canonical(parts[0])
    arg = parts[1].strip() if len(parts) > 1 else ""
    if name is None:
        return Reply(f"Unknown command {parts[0]}. Type /help for the list.", "error")
    handler = _HANDLERS[name]
    try:
        return handler(session, arg)
    except LocalseekError as exc:
        return Reply(str(exc), "error")


def _help(session: ChatSession, arg: str) -> Reply:
    rows = [(f"{c.name} {c.args}".strip(), c.help) for c in COMMANDS]
    rows += [(k, v) for k, v in KEYS_HELP]
    return Reply(rows=rows)


def _think(session: ChatSession, arg: str) -> Reply:
    s = session.settings
    words = arg.lower().split()
    if not words:
        return Reply(_think_state(session))
    word = words[0]
    if word == "on":
        s.think = s.show_thinking = True
        return Reply("Reasoning on; shown live. " + _think_state(session))
    if word == "off":
        s.think = False
        if session.hybrid:
            return Reply("Reasoning off: the model answers directly (its template's thinking flag is off).")
        s.show_thinking = False
        return Reply(
            "This model always reasons (R1-style); its reasoning is now hidden. "
            "/think budget N shortens it; /think show re-opens the last block.", "notice"
        )
    if word == "show":
        s.show_thinking = True
        last = session.conversation.last_reasoning()
        if last is None:
            return Reply("Reasoning will be shown live. There is no reasoning to show yet.")
        return Reply(reasoning=last)
    if word == "hide":
        s.show_thinking = False
        return Reply("Live reasoning hidden: a one-line summary per reply. /think show re-opens the last block.")
    if word == "budget":
        if len(words) != 2:
            return Reply("Usage: /think budget N (reasoning tokens), or /think budget off.", "error")
        if words[1] in ("off", "none", "-1"):
            s.think_budget = None
            return Reply("No reasoning budget.")
        s.think_budget = _parse_int(words[1], "budget", minimum=0)
        return Reply(f"Reasoning capped at {s.think_budget} tokens; then the model must answer.")
    return Reply("Usage: /think on|off|show|hide|budget N|budget off.", "error")


def _think_state(session: ChatSession) -> str:
    s = session.settings
    mode = "on" if session.reasons else "off"
    shown = "shown live" if s.show_thinking else "hidden"
    budget = f"budget {s.think_budget} tokens" if s.think_budget is not None else "no budget"
    kind = "hybrid model: /think off switches it off" if session.hybrid else "R1-style model: always reasons"
    return f"Reasoning {mode}, {shown}, {budget} ({kind})."


def _clear(session: ChatSession, arg: str) -> Reply:
    session.clear()
    return Reply("Conversation cleared." + (" The system prompt stays." if session.conversation.system else ""))


def _system(session: ChatSession, arg: str) -> Reply:
    conv = session.conversation
    if not arg:
        return Reply(f"System prompt: {conv.system}" if conv.system else "No system prompt. /system TEXT sets one.")
    if arg.lower() in ("clear", "off", "none"):
        conv.system = None
        return Reply("System prompt cleared.")
    conv.system = arg
    text = "System prompt set."
    if not session.hybrid:
        return Reply(f"{text} {R1_SYSTEM_ADVICE}", "notice")
    return Reply(text)


# Ollama's parameter names (`/set parameter num_predict 100`) → ours.
_OLLAMA_PARAMETERS = {"temp": "temperature", "num_predict": "max_tokens", "n": "max_tokens"}
_NEEDS_RELOAD = {"num_ctx": "--ctx", "num_thread": "--threads", "num_gpu": "--gpu-layers", "num_batch": "--batch"}


def _set(session: ChatSession, arg: str) -> Reply:
    words = arg.split()
    if words and words[0].lower() == "parameter":  # Ollama: /set parameter NAME VALUE
        words = words[1:]
    if words and words[0].lower() == "system":  # Ollama: /set system TEXT
        return _system(session, arg.split(None, 1)[1] if len(arg.split(None, 1)) > 1 else "")
    if len(words) == 1 and words[0].lower() in ("think", "nothink"):  # Ollama: /set think, /set nothink
        return _think(session, "on" if words[0].lower() == "think" else "off")
    if words and words[0].lower() in _NEEDS_RELOAD:
        flag = _NEEDS_RELOAD[words[0].lower()]
        return Reply(f"{words[0]} is fixed when the model loads: leave and start again with {flag}.", "error")
    if len(words) != 2:
        return Reply(f"Usage: /set {'|'.join(_KNOBS)} VALUE.", "error")
    key, raw = words[0].lower().replace("-", "_"), words[1]
    key = _OLLAMA_PARAMETERS.get(key, key)
    sampling = session.settings.sampling
    if key == "temperature":
        value: object = _parse_float(raw, key, 0.0, 10.0)
    elif key in ("top_p", "min_p"):
        value = _parse_float(raw, key, 0.0, 1.0)
    elif key == "repeat_penalty":
        value = _parse_float(raw, key, 0.01, 10.0)
    elif key in ("frequency_penalty", "presence_penalty"):
        value = _parse_float(raw, key, -2.0, 2.0)
    elif key == "top_k":
        value = _parse_int(raw, key, minimum=0)
    elif key in ("max_tokens", "seed"):
        value = None if raw.lower() in ("off", "none", "random") else _parse_int(raw, key, minimum=1 if key == "max_tokens" else 0)
    else:
        return Reply(f"Unknown setting {words[0]}: use {', '.join(_KNOBS[:-1])} or {_KNOBS[-1]}.", "error")
    session.settings.sampling = dataclasses.replace(sampling, **{key: value})
    return Reply(f"{key} = {'off' if value is None else value}")


def _parse_float(raw: str, name: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number, not {raw!r}.") from None
    if not lo <= value <= hi:
        raise UsageError(f"{name} must be between {lo:g} and {hi:g}.")
    return value


def _parse_int(raw: str, name: str, *, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise UsageError(f"{name} must be at least {minimum}.")
    return value


def _path(arg: str, usage: str) -> Path:
    if not arg:
        raise UsageError(f"Usage: {usage}")
    try:
        words = shlex.split(arg)
    except ValueError:
        words = [arg]
    return Path(words[0] if len(words) == 1 else arg).expanduser()


def _save(session: ChatSession, arg: str) -> Reply:
    path = _path(arg, "/save FILE")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name.")
    session.save(path)
    n = len(session.conversation.turns)
    return Reply(f"Saved {n} message{'s' if n != 1 else ''} to {path}.")


def _load(session: ChatSession, arg: str) -> Reply:
    path = _path(arg, "/load FILE")
    session.load(path)
    conv = session.conversation
    n = len(conv.turns)
    system = " (with a system prompt)" if conv.system else ""
    return Reply(f"Loaded {n} message{'s' if n != 1 else ''} from {path}{system}.", transcript=list(conv.turns))


def _stats(session: ChatSession, arg: str) -> Reply:
    t = session.totals
    rows: list[tuple[str, str]] = []
    last = session.last
    if last is not None:
        st = last.stats
        rows += [
            ("last reply", f"{st.generated_tokens} tokens ({last.reasoning_tokens} reasoning), stop: {st.stop_reason}"),
            ("time to first token", (f"{st.time_to_first_token * 1000:.0f} ms ({st.prompt_tokens} prompt tokens, "
                                     f"{st.prompt_tokens_per_second:.1f} tok/s)")),
            ("generation", f"{st.tokens_per_second:.1f} tok/s over {st.generation_seconds:.2f} s"),
        ]
        if last.reasoning_seconds:
            rows.append(("thinking", f"{last.reasoning_seconds:.1f} s" + (" (budget reached)" if last.budget_hit else "")))
    else:
        rows.append(("last reply", "none yet"))
    rate = (t.generated_tokens / t.generation_seconds) if t.generation_seconds else 0.0
    pending = " (the loaded conversation, sent with your next message)" if last is None and session.context_used else ""
    rows += [
        ("context", f"{session.context_used} of {session.n_ctx} tokens{pending}"
         + (f"; {session.conversation.dropped} oldest messages no longer sent" if session.conversation.dropped else "")),
        ("session", f"{t.turns} repl{'ies' if t.turns != 1 else 'y'}, {t.generated_tokens} tokens ({t.reasoning_tokens} reasoning), "
         f"{rate:.1f} tok/s overall" + (f", {t.interrupted} interrupted" if t.interrupted else "")),
    ]
    return Reply(rows=rows)


def _model(session: ChatSession, arg: str) -> Reply:
    s = session.settings.sampling
    facts = session.model_facts
    if session.hybrid:
        template = "hybrid: thinking switched by the template's flag"
    elif ReasoningParser.prompt_ends_in_think(session.template.render([{"role": "user", "content": "x"}])):
        template = "R1-style, opens <think> in the prompt"
    else:
        template = "R1-style"
    rows = [("model", session.model_name)]
    rows += [(k, str(v)) for k, v in facts.items()]
    rows += [
        ("context", f"{session.n_ctx} tokens"),
        ("chat template", template),
        ("sampling", (f"temperature {s.temperature:g}, top_p {s.top_p:g}, top_k {s.top_k}, min_p {s.min_p:g}, "
                      f"repeat_penalty {s.repeat_penalty:g}, frequency_penalty {s.frequency_penalty:g}, "
                      f"presence_penalty {s.presence_penalty:g}, max_tokens {s.max_tokens or 'off'}, "
                      f"seed {s.seed if s.seed is not None else 'random'}")),
        ("reasoning", _think_state(session)),
    ]
    return Reply(rows=rows)


def _show(session: ChatSession, arg: str) -> Reply:
    """Ollama's /show: everything (`/model`), or one part."""
    what = arg.strip().lower()
    if what in ("", "info", "model", "modelfile"):
        return _model(session, "")
    if what in ("parameters", "params"):
        s = session.settings.sampling
        rows = [("temperature", f"{s.temperature:g}"), ("top_p", f"{s.top_p:g}"), ("top_k", str(s.top_k)),
                ("min_p", f"{s.min_p:g}"), ("repeat_penalty", f"{s.repeat_penalty:g}"),
                ("frequency_penalty", f"{s.frequency_penalty:g}"), ("presence_penalty", f"{s.presence_penalty:g}"),
                ("max_tokens", str(s.max_tokens or "off")), ("seed", str(s.seed if s.seed is not None else "random"))]
        return Reply(rows=rows)
    if what == "template":
        return Reply(session.template.source)
    if what == "system":
        return _system(session, "")
    if what in ("license", "licence"):
        text = session.model_facts.get("license")
        return Reply(f"License: {text}" if text else "This model names no licence.")
    return Reply("Usage: /show [info|parameters|template|system|license].", "error")


def _exit(session: ChatSession, arg: str) -> Reply:
    return Reply(exit=True)


_HANDLERS: dict[str, Callable[[ChatSession, str], Reply]] = {
    "/help": _help, "/think": _think, "/clear": _clear, "/system": _system, "/set": _set, "/save": _save,
    "/load": _load, "/stats": _stats, "/model": _model, "/show": _show, "/exit": _exit,
}


def completions(text: str) -> list[str]:
    """Candidates for what the user has typed so far (the whole line): command names, then their first word."""
    if not text.startswith("/"):
        return []
    if " " not in text:
        names = [c.name + (" " if c.args else "") for c in COMMANDS]
        return [n for n in names if n.startswith(text.lower())]
    name, rest = text.split(" ", 1)
    cmd = _canonical(name)
    if cmd is None or " " in rest:
        return []
    choices = next(c.choices for c in COMMANDS if c.name == cmd)
    return [w for w in choices if w.startswith(rest.lower())]
