"""A benchmark's results file, written as it goes: a benchmark that dies keeps what it measured.

``Results`` is a dict that rewrites its JSON file after every top-level assignment (and on ``save()``,
for changes inside nested values), through a temporary file and an atomic replace, so a reader never
sees half a file. ``"complete"`` is false until ``finish()``; benchmarks/report.py renders a partial
file like any other (a section whose keys are still missing says so in one line).
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from compactnas.core.files import write_json_atomic

_ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The commit the code that runs was checked out at, with ``-dirty`` when it had local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


class Results(dict):
    """``resume=True`` starts from the file's contents when it exists (what a stopped run measured)."""

    def __init__(
        self, path: str | Path, initial: dict[str, Any] | None = None, *, resume: bool = False
    ) -> None:
        self.path = Path(path)
        kept: dict[str, Any] = {}
        if resume and self.path.is_file():
            kept = json.loads(self.path.read_text())
        super().__init__({**kept, **(initial or {}), "complete": False})
        super().__setitem__("commit", commit())
        super().__setitem__("host", {"machine": platform.machine(), "cpus": _cpus()})
        self.save()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.save()

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(*args, **kwargs)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, dict(self))

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def finish(self) -> None:
        self["complete"] = True


def _cpus() -> int:
    import os

    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
