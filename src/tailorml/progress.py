"""Progress reporting that the library can call without depending on a terminal.

Library functions take a `Reporter`; the CLI passes one backed by Rich progress bars
(with ETA), tests and library users get the silent default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, amount: int = 1) -> None: ...

    def describe(self, text: str) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> Iterator[Task]: ...

    def log(self, message: str, style: str | None = None) -> None: ...


class _SilentTask:
    def advance(self, amount: int = 1) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


class SilentReporter:
    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        yield _SilentTask()

    def log(self, message: str, style: str | None = None) -> None:
        pass


class _RichTask:
    def __init__(self, progress, task_id) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._id, amount)

    def describe(self, text: str) -> None:
        self._progress.update(self._id, description=text)


class RichReporter:
    """Rich progress bars with elapsed time and ETA; messages go above the bars."""

    def __init__(self, console=None) -> None:
        from rich.console import Console

        # markup off: messages and task names carry ids and paths (see cli.console)
        self.console = console or Console(stderr=True, markup=False)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            SpinnerColumn(),
            TextColumn("{task.description}", style="progress.description", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield _RichTask(progress, task_id)

    def log(self, message: str, style: str | None = None) -> None:
        """Print `message` above the bars, as plain text in `style` (never as markup)."""
        self.console.print(message, style=style)


SILENT = SilentReporter()
