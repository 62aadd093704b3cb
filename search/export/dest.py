"""An export's destination folder: refusing to replace another trial's exports, staging the files until
every check has run, and moving them in; and the result an export returns."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compactnas.search.export.base import ExportError
from compactnas.search.export.registry import file_name


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    dest: Path
    trial: int
    arch: str
    files: dict[str, Path]  # format -> file written
    card: dict[str, Any]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def prepare_dest(
    dest: Path, trial: int, arch: str, formats: Sequence[str], force: bool
) -> dict[str, Any]:
    """Create and probe ``dest``; refuse to replace exports without ``force``. Returns the card to extend."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest, prefix=".probe-"):
            pass
    except OSError as e:
        raise ExportError(f"cannot write to {dest}: {e.strerror or e}") from None
    card_path = dest / "card.json"
    card: dict[str, Any] = {}
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except (json.JSONDecodeError, OSError):
            card = {}
        if card and (card.get("trial") != trial or card.get("arch") != arch):
            if not force:
                raise ExportError(
                    f"{dest} holds the export of trial {card.get('trial')}; choose another --dest or pass --force"
                )
            card = {}
    taken = [file_name(f, trial) for f in formats if (dest / file_name(f, trial)).exists()]
    if taken and not force:
        raise ExportError(f"{dest} already holds {', '.join(taken)}; pass --force to overwrite")
    return card


@contextlib.contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """A hidden folder inside ``dest`` (same file system, so moving out of it is atomic); always removed."""
    stage = Path(tempfile.mkdtemp(dir=dest, prefix=".export-"))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def move_in(stage: Path, dest: Path, names: dict[str, str]) -> dict[str, Path]:
    """Move the checked files into ``dest``, each replacing its earlier version in one step."""
    files = {}
    for fmt, name in names.items():
        os.replace(stage / name, dest / name)
        files[fmt] = dest / name
    return files


@contextlib.contextmanager
def undo_created(dest: Path) -> Iterator[None]:
    """The folders ``dest`` needs that do not exist yet are removed again (while empty) when the export
    fails, so that a failed export leaves the file system as it found it."""
    missing = []
    folder = dest
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for created in missing:  # the deepest first
            with contextlib.suppress(OSError):
                created.rmdir()
        raise
