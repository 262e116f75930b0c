"""Download progress for the terminal: one bar per file and one for the total (bytes, speed, ETA).

Off a terminal it writes one plain line per file instead, so logs and pipes stay readable. Everything goes to
stderr; stdout is kept for `--json`.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from localseek.models import hub
from localseek.sizes import format_size
from localseek.tui import THEME


def err_console() -> Console:
    return Console(file=sys.stderr, theme=THEME, highlight=False, no_color=bool(os.environ.get("NO_COLOR")),
                   soft_wrap=True)


class PlainProgress(hub.Progress):
    """One line per event, for logs and pipes."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def _say(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def start(self, files: list[tuple[str, int, int]]) -> None:
        for name, size, _have in files:
            self.sizes[name] = size
        total = sum(size for _n, size, _h in files)
        if len(files) > 1:
            self._say(f"{len(files)} files, {format_size(total)}")

    def verifying(self, name: str, size: int) -> None:
        self._say(f"verifying {name} ({format_size(size)}) against the Hub's sha256")

    def file_done(self, name: str, how: str) -> None:
        self._say(f"{how:>10}  {name} ({format_size(self.sizes.get(name))})")

    def message(self, text: str) -> None:
        self._say(text)


class RichProgress(hub.Progress):
    """Live bars on a terminal. Use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or err_console()
        self.bars = Progress(
            TextColumn("{task.description}", style="bold"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.total: TaskID | None = None

    def __enter__(self) -> RichProgress:  # noqa: PYI034
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def start(self, files: list[tuple[str, int, int]]) -> None:
        if len(files) > 1:
            self.total = self.bars.add_task("total", total=sum(s for _n, s, _h in files),
                                            completed=sum(h for _n, _s, h in files))
        for name, size, have in files:
            short = name.rsplit("/", 1)[-1]
            self.tasks[name] = self.bars.add_task(short if len(short) < 48 else "…" + short[-47:], total=size,
                                                  completed=have, start=True)

    def advance(self, name: str, n: int) -> None:
        task = self.tasks.get(name)
        if task is not None:
            self.bars.advance(task, n)
            if self.total is not None:
                self.bars.advance(self.total, n)

    def rewind(self, name: str, done: int) -> None:
        task = self.tasks.get(name)
        if task is not None:
            before = self.bars.tasks[self._index(task)].completed
            self.bars.update(task, completed=done)
            if self.total is not None:
                self.bars.advance(self.total, done - before)

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self.bars.tasks) if t.id == task)

    def verifying(self, name: str, size: int) -> None:
        task = self.tasks.get(name)
        if task is not None:
            self.bars.update(task, description=f"verifying {name.rsplit('/', 1)[-1]}")

    def file_done(self, name: str, how: str) -> None:
        task = self.tasks.get(name)
        if task is not None:
            t = self.bars.tasks[self._index(task)]
            if self.total is not None and t.total and how != "downloaded":
                # cached or verified files count as done in the total without having been downloaded
                missing = t.total - t.completed
                if missing > 0:
                    self.bars.advance(self.total, missing)
            self.bars.update(task, completed=t.total, description=f"{name.rsplit('/', 1)[-1]} ({how})")

    def message(self, text: str) -> None:
        self.console.print(text, style="notice", markup=False)


def make_progress() -> hub.Progress:
    if sys.stderr.isatty():
        return RichProgress()
    return PlainProgress()
