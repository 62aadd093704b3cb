"""``compactnas export``: the command line of compactnas.search.export.pipeline (one trained model of a search as
ONNX, int8 ONNX, TorchScript, a state dict or its architecture string, checked and described in a card)."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from compactnas.search.devices import device_folder
from compactnas.search.export.formats import CALIBRATIONS
from compactnas.search.export.pipeline import ExportConfig, ExportWarning, export
from compactnas.search.export.registry import formats_help
from compactnas.search.workflows.pick import PICKS


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model of a search (ONNX, int8 ONNX, TorchScript, state dict) with a model card",
        description="Rebuild one trial's model from its checkpoint (distilled weights when OUT/distilled has "
        "them, else retrained ones from OUT/retrained), write it in the given formats into --dest, check each export against PyTorch on the held-out "
        "test split, log it as an MLflow model on the trial's run, and write card.json and card.md.",
    )
    p.add_argument("out", help="the search's output folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="the trial to export")
    which.add_argument(
        "--pick",
        choices=PICKS,
        help="a Pareto-front model: best validation accuracy, lowest latency, smallest size, or the knee "
        "(the front point furthest from the hyperplane through the per-objective extremes, on objectives "
        "scaled to [0, 1])",
    )
    p.add_argument(
        "--format", action="append", dest="formats", metavar="FORMAT", help=formats_help()
    )
    p.add_argument(
        "--device",
        metavar="NAME",
        help="a device profile: without --format, export the format its runtime loads (tflite-int8 for "
        "TF Lite Micro, STM32Cube.AI, TinyEngine); for a search with one front per device, that "
        "device's front",
    )
    p.add_argument(
        "--dest", metavar="DIR", help="folder for the exports (default OUT/exports/trial_N)"
    )
    p.add_argument("--force", action="store_true", help="overwrite exports already in --dest")
    g = p.add_argument_group("details")
    g.add_argument(
        "--weights", choices=("auto", "trained", "retrained", "distilled"), default="auto",
        help="which weights: distilled, else retrained, when present (auto, default), or force one",
    )  # fmt: skip
    g.add_argument(
        "--calibration", choices=CALIBRATIONS, default="auto",
        help="int8 calibration method; auto (default) keeps the one that best matches fp32 on validation data",
    )  # fmt: skip
    g.add_argument(
        "--calibration-samples",
        type=int,
        default=1024,
        metavar="N",
        help="training images for calibration",
    )
    g.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    g.add_argument(
        "--no-mlflow", action="store_true", help="do not log the exports to the trial's MLflow run"
    )
    g.add_argument("-q", "--quiet", action="store_true", help="print only the destination")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    formats = tuple(args.formats or ())
    cfg = ExportConfig(
        formats=formats or (() if args.device else ("onnx",)),
        device=args.device,
        dest=args.dest,
        force=args.force,
        weights=args.weights,
        calibration=args.calibration,
        calibration_samples=args.calibration_samples,
        opset=args.opset,
        mlflow=not args.no_mlflow,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportWarning)  # printed below, one line each
        out = device_folder(args.out, args.device)  # one device's front of a multi-device search
        result = export(out, trial=args.trial, pick=args.pick, config=cfg, quiet=args.quiet)
    for w in result.warnings:
        print(f"compactnas: warning: {w}", file=sys.stderr)
    if args.quiet:
        print(result.dest)
    else:
        print(f"model card: {result.dest / 'card.md'}")
    return 0
