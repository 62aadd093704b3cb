"""Export one trained model of a search: rebuild it from its checkpoint, write it in the asked formats,
check every export against the PyTorch model on the held-out test split, and describe it in a model card.

A destination folder holds the exports of one trial: ``trial_N.onnx``, ``trial_N.int8.onnx``,
``trial_N.torchscript.pt``, ``trial_N.state_dict.pt``, ``arch.txt``, plus ``card.json`` and ``card.md``.
Exporting more formats of the same trial into it later adds them to the card; nothing already there is
replaced without ``force``. Every file is written and checked in a hidden folder inside the destination
first and moved in only when all of them are done, so a failed export (even with ``force``) leaves the
destination as it was.

The parts: checkpoint (which trial, which weights, the rebuilt model), registry and builtin (every
format and its writer), checks (against PyTorch, int8 calibration), dest (the destination folder), card
(the model card), mlflow_model (logging as MLflow models); this module runs them in order.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compactnas.core.errors import ConfigError
from compactnas.core.files import write_text_atomic
from compactnas.evaluators import measure_latency_ms
from compactnas.search.export.arch import export_table_trial
from compactnas.search.export.card import build_card, card_markdown
from compactnas.search.export.checkpoint import (
    Rebuilt,
    check_formats,
    rebuild,
    select_trial,
)
from compactnas.search.export.checks import (
    sha256,
    summary_line,
    verify,
)
from compactnas.search.export.dest import (
    ExportResult,
    move_in,
    prepare_dest,
    staging,
    undo_created,
)
from compactnas.search.export.edge import format_for_device
from compactnas.search.export.formats import (
    CALIBRATIONS,
    deployable,
    reduced_bits,
)
from compactnas.search.export.mlflow_model import log_edge_exports, log_trial_exports
from compactnas.search.export.registry import FORMATS, WriteJob, file_name, parse_formats
from compactnas.search.export.runners import torch_logits
from compactnas.search.results import load_summary
from compactnas.spaces import parse_arch


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
    # A device profile: with ``formats=()``, export what its runtime loads for this model's bit-widths
    # (tflite-int8 for a w8/a8 model on LiteRT, tflite for a float one).
    device: str | None = None

    def __post_init__(self) -> None:
        if self.device and not self.formats:
            object.__setattr__(self, "formats", ())
        else:
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
        return export_table_trial(out, number, frozen, cfg, summary)
    r = rebuild(out, summary, number, frozen, cfg.weights)
    if not cfg.formats:  # ExportConfig allows none only with a device: its runtime decides
        fmt, note = format_for_device(str(cfg.device), parse_arch(r.arch))
        cfg = dataclasses.replace(cfg, formats=(fmt,))
        print(f"compactnas: {note}", file=sys.stderr)
    check_formats(r.arch, cfg.formats)
    dest = (
        Path(cfg.dest).expanduser().resolve() if cfg.dest else out / "exports" / f"trial_{number}"
    )
    with undo_created(dest):
        card = prepare_dest(dest, number, r.arch, cfg.formats, cfg.force)
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
        with staging(dest) as stage:
            entries, problems = _write_and_check(stage, r, cfg, reference, labels, quiet)
            files = move_in(stage, dest, {fmt: e["file"] for fmt, e in entries.items()})

    mlflow_info = (
        log_trial_exports(out, summary, frozen, files, r.data, reference, r.model)
        if cfg.mlflow
        else {}
    )
    if cfg.mlflow:
        mlflow_info.update(log_edge_exports(True, out, summary, frozen, files, entries))
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

    deploy = deployable(r.model)  # what ONNX and TorchScript see; the reference stays r.model
    quant_acts = any("ab" in low for low in reduced_bits(parse_arch(r.arch)))
    entries: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for fmt in cfg.formats:
        spec = FORMATS[fmt]
        path = stage / file_name(fmt, r.number)
        entry: dict[str, Any] = {"file": path.name}
        job = WriteJob(
            stage=stage, model=r.model, deploy=deploy, arch=r.arch, input_shape=r.shape,
            data=r.data, trial=r.number, seed=r.seed, settings=cfg, written=entries,
        )  # fmt: skip
        entry.update(spec.write(job, path) or {})
        if spec.checked:
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
