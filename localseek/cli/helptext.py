"""Help screens in plain words: `MODEL` instead of `{model}`, `N` instead of `<int range>`, no `<bool>` on switches,
and commands in the order people use them. Applied once to the click command Typer builds (`cli.command()`)."""

from __future__ import annotations

from pathlib import Path

import typer

_WORDS = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def _annotation(param: object) -> object:
    descriptor = getattr(param, "type_descriptor", None)
    return getattr(descriptor, "annotation", None)


class _PlainArgument(typer.core.TyperArgument):
    """An argument shown by its name alone: `MODEL` in the usage line (`[PROMPT]` when optional), no `<str>`."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        name = self.metavar or (self.name or "value").upper()
        return [name if self.required else f"[{name}]"]


def plain_metavars(command: typer.core.TyperCommand | typer.core.TyperGroup, help_names: list[str]) -> None:
    """Give every argument and option of `command` (and its subcommands) a plain-word metavar, unless it has one.
    `help_names`: the help option's names (the help option is made here, once, as click would make it)."""
    help_option = command.get_help_option(typer.Context(command, help_option_names=help_names))
    if help_option is not None:
        help_option.metavar = ""
    for param in command.params:
        if isinstance(param, typer.core.TyperArgument) and type(param) is typer.core.TyperArgument:
            param.__class__ = _PlainArgument  # same object, plain words in help and usage
        if param.metavar is not None:
            continue
        if isinstance(param, typer.core.TyperArgument):
            param.metavar = (param.name or "value").upper()
        elif getattr(param, "is_flag", False) or getattr(param, "is_bool_flag", False) or _annotation(param) is bool:
            param.metavar = ""  # a switch takes no value: no type label
        else:
            param.metavar = _WORDS.get(_annotation(param), "VALUE")  # type: ignore[arg-type]
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub, help_names)


def plain_help(group: typer.core.TyperGroup, order: tuple[str, ...], help_names: list[str]) -> None:
    """Plain metavars everywhere, and `group`'s commands listed in `order` (others after, as registered)."""
    plain_metavars(group, help_names)
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(group.commands.items(), key=lambda kv: rank.get(kv[0], len(order)))
    group.commands.clear()
    group.commands.update(ordered)
