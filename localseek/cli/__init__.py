"""The `localseek` command. Each command group lives in its own module and registers itself on `app`.

`main()` is the single place where errors become one line and an exit code.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from localseek import __version__
from localseek.errors import LocalseekError
from localseek.text import printable

# What `localseek --help` lists under "Environment" (tests/test_cli_grammar.py keeps it complete: every
# LOCALSEEK_* variable the code reads is here).
ENVIRONMENT = (
    ("LOCALSEEK_HOME", "where localseek keeps its registry, converted models, header cache and chat history"),
    ("LOCALSEEK_MODELS_PATH", "more folders of .gguf files to find models in (separated by ':', ';' on Windows)"),
    ("LOCALSEEK_THREADS", "CPU threads when --threads is not given"),
    ("LOCALSEEK_RAM_BYTES", "plan as if the machine had this much RAM (e.g. 16GiB)"),
    ("LOCALSEEK_CATALOG", "a models.toml to use instead of the built-in catalog"),
    ("LOCALSEEK_DEBUG", "1: show tracebacks (same as --debug)"),
    ("LOCALSEEK_HOST, LOCALSEEK_PORT", "where `serve` listens and `ps`/`stop` find it (default 127.0.0.1:11435)"),
    ("LOCALSEEK_API_KEY", "the key `serve` requires and `ps`/`stop` send (same as --api-key)"),
    ("LOCALSEEK_RPC, LOCALSEEK_RPC_TIMEOUT", "workers to use (same as --rpc); seconds a silent worker is waited for"),
    ("LOCALSEEK_TEMPLATE_PYTHON", "the Python command chat templates are rendered in (default: this one)"),
    ("OLLAMA_MODELS", "Ollama's model folder, if not ~/.ollama/models (its models are used in place)"),
    ("LLAMA_CACHE", "llama.cpp's download cache, if not the default (its models are used in place)"),
    ("HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE", "Hugging Face cache, mirror, login and offline mode"),
    ("NO_COLOR", "no colours"),
)

_EPILOG = "Environment: " + "  ·  ".join(f"{name}: {what}" for name, what in ENVIRONMENT)

HELP_NAMES = ["-h", "--help"]

app = typer.Typer(
    name="localseek",
    help="Run DeepSeek models on your own machine: no cloud, no account.",
    epilog=_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": HELP_NAMES},
)

# The order `localseek --help` lists commands in: the everyday ones first.
COMMAND_ORDER = ("run", "pull", "list", "show", "rm", "models", "plan", "serve", "bench", "quantize", "doctor")

_state = {"debug": os.environ.get("LOCALSEEK_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"localseek {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", "-v", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (or set LOCALSEEK_DEBUG=1).")] = False,
) -> None:
    if debug:
        _state["debug"] = True


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from localseek.cli import bench, doctor, models, plan, quantize, run, serve, worker  # noqa: F401


def command() -> typer.core.TyperGroup:
    """The click command behind `app`, as `localseek` shows it: commands in COMMAND_ORDER, plain metavars."""
    from localseek.cli.helptext import plain_help

    _register()
    group = typer.main.get_command(app)
    plain_help(group, COMMAND_ORDER, HELP_NAMES)
    return group  # type: ignore[return-value]


def error_line(message: str) -> None:
    message = printable(message)  # messages quote names from files and servers: no escapes reach the terminal
    if os.environ.get("NO_COLOR") or not sys.stderr.isatty():
        sys.stderr.write(f"error: {message}\n")
    else:
        sys.stderr.write(f"\x1b[31merror:\x1b[0m {message}\n")


def os_error_line(exc: OSError) -> str:
    from localseek.models.store import home

    where = f" ({exc.filename})" if exc.filename else ""
    return (f"{exc.strerror or exc}{where}. localseek keeps its files in {home()} (set LOCALSEEK_HOME to move them): "
            "check that it can write there and that the disk has room; --debug shows where it happened.")


def main() -> None:
    if "--debug" in sys.argv[1:]:
        _state["debug"] = True
    try:
        command()(prog_name="localseek")
    except LocalseekError as exc:
        if _state["debug"]:
            raise
        error_line(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)
    except OSError as exc:  # the file system said no (a home that cannot be created, a full disk): not a bug
        if _state["debug"]:
            raise
        error_line(os_error_line(exc))
        sys.exit(1)
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind --debug
        if _state["debug"]:
            raise
        error_line(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback and report it)")
        sys.exit(1)
