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

app = typer.Typer(
    name="localseek",
    help="Run DeepSeek models on your own machine: no cloud, no account.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": os.environ.get("LOCALSEEK_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"localseek {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (or set LOCALSEEK_DEBUG=1).")] = False,
) -> None:
    if debug:
        _state["debug"] = True


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from localseek.cli import bench, doctor, models, plan, quantize, run, worker  # noqa: F401


def error_line(message: str) -> None:
    if os.environ.get("NO_COLOR") or not sys.stderr.isatty():
        sys.stderr.write(f"error: {message}\n")
    else:
        sys.stderr.write(f"\x1b[31merror:\x1b[0m {message}\n")


def main() -> None:
    _register()
    if "--debug" in sys.argv[1:]:
        _state["debug"] = True
    try:
        app()
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
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind --debug
        if _state["debug"]:
            raise
        error_line(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback and report it)")
        sys.exit(1)
