"""A benchmark's results file, written as it goes: a benchmark that dies keeps what it measured.

``Results`` is a dict that rewrites its JSON file after every top-level assignment (and on ``save()``,
for changes inside nested values), through a temporary file and an atomic replace, so a reader never
sees half a file. Every file carries ``"commit"`` (the checkout's HEAD, ``-dirty`` when tracked
files had changed) and ``"host"``. ``"complete"`` is false until ``finish()``; benchmarks/report.py
renders a partial file like any other (a section whose keys are still missing says so in one line).
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
        # A benchmark's own "host" (a dict or a description) is kept: the stamp adds to a dict and
        # never replaces what the benchmark recorded about the machine.
        own = (initial or {}).get("host")
        stamp = {"machine": platform.machine(), "cpus": _cpus()}
        super().__setitem__("host", {**stamp, **own} if isinstance(own, dict) else own or stamp)
        self.save()

    def __setitem__(self, key: str, value: Any) -> None:
        _own_keys({key: value})
        super().__setitem__(key, value)
        self.save()

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        new = dict(*args, **kwargs)
        _own_keys(new)
        super().update(new)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, dict(self))

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def finish(self) -> None:
        self["complete"] = True


def _own_keys(new: dict[str, Any]) -> None:
    """``"complete"`` is the file's own flag (``finish()`` sets it): a benchmark's value under that name
    would be overwritten, so it is refused at once."""
    if "complete" in new and not isinstance(new["complete"], bool):
        raise KeyError(
            '"complete" is set by Results.finish(); record the benchmark\'s own under another key'
        )


def _cpus() -> int:
    import os

    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
