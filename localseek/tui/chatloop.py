"""The interactive chat: prompt-toolkit input, slash commands, Ctrl-C.

Keys: Enter sends; Alt-Enter (Esc then Enter) or Ctrl-J inserts a new line, and pasted text keeps its
lines; a message that starts with \"\"\" continues until a line ends with \"\"\" (as in Ollama). Up/Down
recall earlier messages, kept per model under LOCALSEEK_HOME. Tab completes slash commands. Ctrl-C stops
a reply (the partial answer is kept, marked as interrupted); at an empty prompt, press it twice to leave.
Ctrl-D leaves.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console

from localseek.chat.commands import completions, is_command, run_command
from localseek.chat.generation import Done, Turn
from localseek.chat.session import ChatSession
from localseek.errors import LocalseekError
from localseek.models import store
from localseek.tui.view import ChatView, PlainView

ReadLine = Callable[[], str]


def history_file(model_key: str) -> Path:
    """Per-model input history under localseek's home (`store.home()`)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key).strip("._") or "model"
    return store.home() / "history" / f"{safe}.txt"


def prompt_reader(model_key: str) -> ReadLine:
    """A prompt-toolkit reader with history, multi-line editing and command completion."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    class SlashCompleter(Completer):
        def get_completions(self, document, complete_event):  # type: ignore[no-untyped-def]
            text = document.text_before_cursor
            if "\n" in text:
                return
            word = text.rsplit(" ", 1)[-1]
            for candidate in completions(text):
                yield Completion(candidate, start_position=-len(word), display=candidate.strip())

    keys = KeyBindings()

    @keys.add("enter")
    def _enter(event):  # type: ignore[no-untyped-def]
        buf = event.current_buffer
        text = buf.text
        if text.lstrip().startswith('"""') and not (len(text.strip()) > 3 and text.rstrip().endswith('"""')):
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    @keys.add("escape", "enter")
    @keys.add("c-j")
    def _newline(event):  # type: ignore[no-untyped-def]
        event.current_buffer.insert_text("\n")

    @keys.add("c-c")
    def _ctrl_c(event):  # type: ignore[no-untyped-def]
        buf = event.current_buffer
        if buf.text:
            buf.reset()  # clear the line, stay at the prompt
        else:
            event.app.exit(exception=KeyboardInterrupt())

    path = history_file(model_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        history = FileHistory(str(path))
    except OSError:
        history = InMemoryHistory()
    session: PromptSession[str] = PromptSession(
        history=history,
        completer=SlashCompleter(),
        complete_while_typing=False,
        multiline=True,
        key_bindings=keys,
        prompt_continuation=lambda width, line_number, wrap_count: "... ",
        placeholder=FormattedText([("fg:ansibrightblack", "Send a message (/? for help)")]),
    )
    message = FormattedText([("ansicyan bold", ">>> ")])
    return lambda: session.prompt(message)


def plain_reader() -> str:
    """Input without a terminal editor (stdin or stdout is not a terminal)."""
    return input(">>> ")


def _unquote(text: str) -> str:
    if text.startswith('"""'):
        text = text[3:]
        if text.rstrip().endswith('"""'):
            text = text.rstrip()[:-3]
    return text.strip()


def chat_loop(session: ChatSession, view: ChatView | PlainView, read_line: ReadLine, console: Console | None) -> None:
    """Read messages and commands until /exit, Ctrl-D, or Ctrl-C twice at an empty prompt."""
    banner = (
        f"Chatting with {session.model_name} (context {session.n_ctx} tokens). "
        "Type /? for help, Ctrl-D or /exit to leave."
    )
    view.notice(banner, "stats")
    armed = False
    while True:
        try:
            line = read_line()
        except EOFError:
            break
        except KeyboardInterrupt:
            if armed:
                break
            armed = True
            view.notice("Press Ctrl-C again to leave (or Ctrl-D).", "stats")
            continue
        armed = False
        text = line.strip()
        if not text:
            continue
        if is_command(text):
            reply = run_command(session, text)
            view.show_reply(reply)
            if reply.exit:
                break
            continue
        text = _unquote(text)
        if text:
            ask(session, view, text)
    if console is not None:
        console.print()


def ask(session: ChatSession, view: ChatView | PlainView, text: str) -> None:
    """One turn, with Ctrl-C stopping it and keeping the partial reply."""
    turn = Turn()
    if isinstance(view, ChatView):
        view.show_thinking = session.settings.show_thinking
    view.begin_turn()
    events: Iterable[object] = session.ask(text, turn)
    done = None
    try:
        for event in events:
            if isinstance(event, Done):
                done = event
            else:
                view.handle(event)
    except KeyboardInterrupt:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not kill the chat
        try:
            events.close()  # type: ignore[attr-defined]
            partial = session.interrupted(turn)
            view.end_turn(partial, interrupted=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        return
    except LocalseekError as exc:
        view.abort()
        view.notice(f"error: {exc}", "error")
        return
    view.end_turn(done)
