"""A benchmark's results file, written as it goes: a benchmark that dies keeps what it measured.

``Results`` is a dict that rewrites its JSON file after every top-level assignment (and on ``save()``,
for changes inside nested values), through a temporary file and an atomic replace, so a reader never
sees half a file. ``"complete"`` is false until ``finish()``; benchmarks/report.py renders a partial
file like any other (a section whose keys are still missing says so in one line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compactnas.core.files import write_json_atomic


class Results(dict):
    def __init__(self, path: str | Path, initial: dict[str, Any] | None = None) -> None:
        super().__init__({"complete": False, **(initial or {})})
        self.path = Path(path)
        self.save()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.save()

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(*args, **kwargs)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, dict(self))

    def finish(self) -> None:
        self["complete"] = True
