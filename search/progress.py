"""Progress of a search on the terminal (rich): trials done, failures, size of the current front."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """A bar with counts, and one log line per finished trial (kept in scroll-back and CI logs)."""

    def __init__(self, *, total: int, done: int = 0, quiet: bool = False):
        self.total = total
        self.done = done
        self.failed = 0
        self.infeasible = 0
        self.stopped = 0
        self.front = 0
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self._bar: RichProgress | None = None
        self._task: Any = None
        self._started: dict[int, float] = {}

    def __enter__(self) -> Progress:
        if not self.quiet:
            self._bar = RichProgress(
                TextColumn("[bold]search"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
                disable=not self.console.is_terminal,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "search", total=self.total, completed=self.done, stats=self._stats()
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def _stats(self) -> str:
        return f"failed {self.failed}  infeasible {self.infeasible}  stopped {self.stopped}  front {self.front}"

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def start(self, number: int, arch: str) -> None:
        self._started[number] = time.time()

    def trial_done(self, number: int, outcome: str, detail: str) -> None:
        self.done += 1
        if outcome == "failed":
            self.failed += 1
        elif outcome == "infeasible":
            self.infeasible += 1
        elif outcome == "stopped":
            self.stopped += 1
        started = self._started.pop(number, None)
        took = f"{time.time() - started:.1f} s, " if started is not None else ""
        if not self.quiet:
            colour = {"ok": "green", "failed": "red", "infeasible": "yellow"}.get(outcome, "cyan")
            self.console.print(
                f"[{colour}]trial {number:>4} {outcome:<10}[/{colour}] {detail}  [dim]({took}"
                f"{self.done}/{self.total})[/dim]"
            )
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, stats=self._stats())
        sys.stderr.flush()
