"""Export formats by name: the one list that ``export``, its checks, the command line's ``--format``
help and the README read. A new format is one module that calls ``register_format`` once.

A format says how its file is named, how it is written from a trained model, whether it is checked by
top-1 agreement (int8: re-quantized by its own calibration) or by the float tolerance, which packages it
needs, and, when ``load_exported`` does not know its file, how to load it back for the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from compactnas.core.errors import ConfigError, RegistryError


@dataclass(frozen=True, kw_only=True)
class WriteJob:
    """What a format's writer is given for one export."""

    stage: Path  # the folder being filled (moved into the destination once every check has run)
    model: nn.Module  # the trained model: the reference every export is compared with
    deploy: (
        nn.Module
    )  # the same numbers with quantized weights stored on their grid (see deployable)
    arch: str
    input_shape: tuple[int, ...]
    data: Any  # the search's Dataset (training images calibrate int8 formats)
    trial: int
    seed: int
    settings: Any  # the ExportConfig
    written: dict[str, dict[str, Any]]  # formats already written in this export, by name


@dataclass(frozen=True, kw_only=True)
class ExportFormat:
    name: str
    file_name: str  # with {trial}: "trial_{trial}.onnx"
    write: Callable[[WriteJob, Path], dict[str, Any] | None]  # returns what the card records
    summary: str  # one line for --help
    int8: bool = False  # checked by top-1 agreement with PyTorch, not by the float tolerance
    checked: bool = True  # run back and compared with PyTorch on the test split
    needs_weights: bool = True  # False: a table search (nothing trained) can export it
    require: Callable[[], None] | None = None  # raises ExportError naming what to install
    load: Callable[[Path], Any] | None = None  # a loader for the check when load_exported has none


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    if fmt.name in FORMATS:
        raise RegistryError(f"export format '{fmt.name}' is already registered")
    if "{trial}" not in fmt.file_name and fmt.needs_weights:
        raise RegistryError(f"export format '{fmt.name}': file_name must contain {{trial}}")
    FORMATS[fmt.name] = fmt
    return fmt


def file_name(fmt: str, trial: int) -> str:
    return FORMATS[fmt].file_name.format(trial=trial)


def formats_help() -> str:
    names = list(FORMATS)
    return f"{names[0]} (default), {', '.join(names[1:])}; repeat or comma-separate"


def parse_formats(values: str | Sequence[str]) -> tuple[str, ...]:
    """Formats from repeated and/or comma-separated values, in order, without repeats."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower().replace("_", "-")
            if not name:
                continue
            if name not in FORMATS:
                raise ConfigError(
                    f"unknown export format '{name}' (use one of: {', '.join(FORMATS)})"
                )
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError(f"no export format given (use one or more of: {', '.join(FORMATS)})")
    return tuple(out)
