"""Export one trained model of a search: rebuild it from its checkpoint, write it in the asked formats,
check every export against the PyTorch model on the held-out test split, and describe it in a model card.

A destination folder holds the exports of one trial: ``trial_N.onnx``, ``trial_N.int8.onnx``,
``trial_N.torchscript.pt``, ``trial_N.state_dict.pt``, ``arch.txt``, plus ``card.json`` and ``card.md``.
Exporting more formats of the same trial into it later adds them to the card; nothing already there is
replaced without ``force``. Every file is written and checked in a hidden folder inside the destination
first and moved in only when all of them are done, so a failed export (even with ``force``) leaves the
destination as it was.

The parts: export_checkpoint (which trial, which weights, the rebuilt model), export_formats (writing and
loading each format), export_checks (checks against PyTorch, int8 calibration), export_card (the model
card), export_mlflow (logging as MLflow models); this module runs them in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compactnas.core.errors import ConfigError
from compactnas.core.files import write_text_atomic
from compactnas.search import export_edge as edge
from compactnas.search.export_checkpoint import (
    Rebuilt,
    check_formats,
    rebuild,
    select_trial,
)
from compactnas.search.export_checks import (
    quantize_calibrated,
    sha256,
    summary_line,
    verify,
)
from compactnas.search.export_formats import (
    CALIBRATIONS,
    ExportError,
    deployable,
    reduced_bits,
    torch_logits,
    write_onnx,
    write_state_dict,
    write_torchscript,
)

FORMATS = ("onnx", "onnx-int8", "torchscript", "state-dict", "arch", *edge.EDGE_FORMATS)


def file_name(fmt: str, trial: int) -> str:
    if fmt in edge.EDGE_FORMATS:
        return edge.file_name(fmt, trial)
    return {
        "onnx": f"trial_{trial}.onnx",
        "onnx-int8": f"trial_{trial}.int8.onnx",
        "torchscript": f"trial_{trial}.torchscript.pt",
        "state-dict": f"trial_{trial}.state_dict.pt",
        "arch": "arch.txt",
    }[fmt]


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


class ExportWarning(UserWarning):
    """An export was written but missed its check (see the card's ``warnings``)."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    formats: tuple[str, ...] = ("onnx",)
    dest: str | Path | None = None  # default: OUT/exports/trial_N
    force: bool = False
    weights: str = "auto"  # auto: distilled (OUT/distilled/) if there, else retrained (OUT/retrained/), else trained
    calibration: str = (
        "auto"  # auto: the method whose int8 model best agrees with fp32 on validation data
    )
    calibration_samples: int = 1024
    opset: int = 17
    mlflow: bool = True
    latency_min_run_time: float = 0.2
    threads: int = 1  # torch threads while exporting; timings always use one

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if self.weights not in ("auto", "trained", "retrained", "distilled"):
            raise ConfigError(
                f"unknown weights '{self.weights}' (use auto, trained, retrained or distilled)"
            )
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(
                f"unknown calibration '{self.calibration}' (use one of: {', '.join(CALIBRATIONS)})"
            )
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if not 13 <= self.opset <= 20:
            raise ConfigError(f"opset must be between 13 and 20, got {self.opset}")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if not self.latency_min_run_time > 0:
            raise ConfigError("latency_min_run_time must be positive")


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    dest: Path
    trial: int
    arch: str
    files: dict[str, Path]  # format -> file written
    card: dict[str, Any]
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --- destination ----------------------------------------------------------------------------


def _prepare_dest(
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


# --- the export itself -------------------------------------------------------------------------------


def export(
    out: str | Path,
    *,
    trial: int | None = None,
    pick: str | None = None,
    config: ExportConfig | None = None,
    quiet: bool = True,
    **overrides: Any,
) -> ExportResult:
    """Export trial ``trial`` (or the front model chosen by ``pick``) of the search in ``out``.

    ``overrides`` are ExportConfig fields, e.g. ``formats="onnx,onnx-int8"``, ``dest="export/"``,
    ``force=True``. Errors a user can cause raise CompactnasError subclasses with a one-line message.
    """
    cfg = config or ExportConfig()
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ExportConfig)})
        if unknown:
            raise ConfigError(f"unknown export option(s) {', '.join(unknown)}")
        cfg = dataclasses.replace(cfg, **overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _export(Path(out).expanduser().resolve(), trial, pick, cfg, quiet)
    finally:
        torch.set_num_threads(threads)


def _export(
    out: Path, trial: int | None, pick: str | None, cfg: ExportConfig, quiet: bool
) -> ExportResult:
    from compactnas.evaluators import measure_latency_ms
    from compactnas.search.export_card import build_card, card_markdown
    from compactnas.search.export_mlflow import log_trial_exports
    from compactnas.search.results import load_summary

    summary = load_summary(out)
    if isinstance(summary.get("devices"), dict):
        raise ConfigError(
            f"{out} holds one front per device ({', '.join(summary['devices'])}): export from one "
            "device's folder (OUT/devices/NAME) or with --device NAME"
        )
    number, frozen = select_trial(out, summary, trial=trial, pick=pick)
    if str(summary.get("config", {}).get("data", "")).startswith(
        "table:"
    ):  # looked up, not trained
        from compactnas.search.export_arch import export_table_trial

        return export_table_trial(out, number, frozen, cfg, summary)
    r = rebuild(out, summary, number, frozen, cfg.weights)
    check_formats(r.arch, cfg.formats)
    dest = (
        Path(cfg.dest).expanduser().resolve() if cfg.dest else out / "exports" / f"trial_{number}"
    )
    card = _prepare_dest(dest, number, r.arch, cfg.formats, cfg.force)
    if not quiet:
        print(f"exporting trial {number} ({r.weights} weights): {r.arch}")
    labels = r.data.test.y.numpy()
    reference = torch_logits(r.model, r.data.test.x)
    pytorch = {
        "test_accuracy": float((reference.argmax(1) == labels).mean()),
        "latency_ms_host": measure_latency_ms(
            r.model, r.shape, threads=1, min_run_time=cfg.latency_min_run_time
        ),
    }
    with _staging(dest) as stage:
        entries, problems = _write_and_check(stage, r, cfg, reference, labels, quiet)
        files = _move_in(stage, dest, {fmt: e["file"] for fmt, e in entries.items()})

    mlflow_info = (
        log_trial_exports(out, summary, frozen, files, r.data, reference, r.model)
        if cfg.mlflow
        else {}
    )
    if cfg.mlflow:
        mlflow_info.update(edge.log_mlflow(True, out, summary, frozen, files, entries))
    for fmt, info in mlflow_info.items():
        if fmt in entries:
            entries[fmt]["mlflow"] = info
        elif fmt == "error":
            problems.append(f"MLflow: {info}")
    card = build_card(card, dest, out, summary, r, pytorch, entries, pick)
    for problem in problems:
        warnings.warn(problem, ExportWarning, stacklevel=3)
    card["warnings"] = problems
    write_text_atomic(dest / "card.json", json.dumps(card, indent=2) + "\n")
    write_text_atomic(dest / "card.md", card_markdown(card))
    return ExportResult(
        dest=dest, trial=number, arch=r.arch, files=files, card=card, warnings=tuple(problems)
    )


def _write_and_check(
    stage: Path,
    r: Rebuilt,
    cfg: ExportConfig,
    reference: np.ndarray,
    labels: np.ndarray,
    quiet: bool,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Write every format into ``stage`` and check each written file; returns (entries, problems)."""
    from compactnas.spaces import parse_arch

    deploy = deployable(r.model)  # what ONNX and TorchScript see; the reference stays r.model
    quant_acts = any("ab" in low for low in reduced_bits(parse_arch(r.arch)))
    entries: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for fmt in cfg.formats:
        path = stage / file_name(fmt, r.number)
        entry: dict[str, Any] = {"file": path.name}
        if fmt == "arch":
            path.write_text(r.arch + "\n")
        elif fmt == "onnx":
            write_onnx(deploy, r.shape, path, opset=cfg.opset)
        elif fmt == "onnx-int8":
            fp32 = stage / file_name("onnx", r.number)
            if "onnx" not in entries:  # an fp32 model to quantize, not kept
                fp32 = stage / ".fp32.onnx"
                write_onnx(deploy, r.shape, fp32, opset=cfg.opset)
            entry["calibration"] = quantize_calibrated(
                fp32, path, r.data, r.model, calibration=cfg.calibration,
                samples=cfg.calibration_samples, seed=r.seed,
            )  # fmt: skip
            if fp32.name == ".fp32.onnx":
                fp32.unlink()
        elif fmt == "torchscript":
            write_torchscript(deploy, r.shape, path)
        elif fmt == "state-dict":
            write_state_dict(
                r.model, path, arch=r.arch, num_classes=r.data.num_classes, input_shape=r.shape
            )
        elif fmt in edge.EDGE_FORMATS:
            calib = edge.calibration_images(r.data.train.x, cfg.calibration_samples, r.seed)
            entry.update(edge.write_edge(fmt, deploy, r.shape, path, calib))
        if fmt != "arch":
            entry.update(
                verify(
                    fmt, path, r.shape, r.data, reference, labels, quant_acts=quant_acts,
                    min_run_time=cfg.latency_min_run_time,
                )
            )  # fmt: skip
            if not entry["checks"]["passed"]:
                problems.append(f"{fmt}: {entry['checks']['rule']} not met ({summary_line(entry)})")
        entry["size_bytes"] = path.stat().st_size
        entry["sha256"] = sha256(path)
        entries[fmt] = entry
        if not quiet:
            print(f"  {fmt:<12} {path.name}  {entry['size_bytes']:,} bytes  {summary_line(entry)}")
    return entries, problems


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A hidden folder inside ``dest`` (same file system, so moving out of it is atomic); always removed."""
    stage = Path(tempfile.mkdtemp(dir=dest, prefix=".export-"))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _move_in(stage: Path, dest: Path, names: dict[str, str]) -> dict[str, Path]:
    """Move the checked files into ``dest``, each replacing its earlier version in one step."""
    files = {}
    for fmt, name in names.items():
        os.replace(stage / name, dest / name)
        files[fmt] = dest / name
    return files
