"""Checking an export against PyTorch: run the written file on the held-out test split, time it on this
host, and pick the int8 calibration whose model agrees best with fp32 on the validation split."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compactnas.evaluators import measure_latency_ms
from compactnas.search.export import edge
from compactnas.search.export.formats import quantize_onnx_int8
from compactnas.search.export.loading import load_exported
from compactnas.search.export.registry import FORMATS
from compactnas.search.export.runners import OnnxModel, compare, onnx_latency_ms, torch_logits

# A float export counts as exact when no logit differs by more than this from PyTorch.
FLOAT_TOLERANCE = 1e-4
# An export whose activations are quantized (int8 ONNX; a trained ab8 model in any format) counts as
# faithful when its top-1 class agrees this often: a value lying on a rounding boundary may land one
# quantization step away in another runtime, so its logits cannot be expected to match to 1e-4.
MIN_AGREEMENT = 0.98


def verify(
    fmt: str,
    path: Path,
    shape: tuple[int, ...],
    data: Any,
    reference: np.ndarray,
    labels: np.ndarray,
    *,
    quant_acts: bool,
    min_run_time: float,
) -> dict[str, Any]:
    """Run the written file (not the in-memory model) on the test split and time it on this host."""

    spec = FORMATS[fmt]
    loaded = spec.load(path) if spec.load is not None else load_exported(path)
    if edge.is_edge_model(loaded):
        outputs = loaded(data.test.x)
        latency = loaded.latency_ms(shape, min_run_time)
        runtime = loaded.edge_runtime
    elif isinstance(loaded, OnnxModel):
        outputs = loaded(data.test.x)
        latency = onnx_latency_ms(loaded.session, shape, min_run_time=min_run_time)
        runtime = onnxruntime_version()
    else:
        outputs = torch_logits(loaded, data.test.x)
        latency = measure_latency_ms(loaded, shape, threads=1, min_run_time=min_run_time)
        runtime = f"torch {torch.__version__}" + (" (TorchScript)" if fmt == "torchscript" else "")
    a = compare(reference, outputs, labels)
    if spec.int8 or quant_acts:
        rule, passed = f"top-1 agreement >= {MIN_AGREEMENT}", a.top1_agreement >= MIN_AGREEMENT
    else:
        rule, passed = f"max |diff| <= {FLOAT_TOLERANCE}", a.max_abs_diff <= FLOAT_TOLERANCE
    return {
        "runtime": runtime,
        "test_accuracy": a.accuracy,
        "max_abs_diff": a.max_abs_diff,
        "top1_agreement": a.top1_agreement,
        "latency_ms_host": latency,
        "checks": {
            "rule": rule,
            "passed": bool(passed),
            "examples": int(len(labels)),
            "split": "test",
        },
    }


def onnxruntime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} (CPU, 1 thread)"


def summary_line(entry: dict[str, Any]) -> str:
    """One line of an entry's check, for progress output and warnings."""
    if "max_abs_diff" not in entry:
        return ""
    return (
        f"test acc {entry['test_accuracy']:.4f}  max |diff| {entry['max_abs_diff']:.2e}  "
        f"top-1 agree {100 * entry['top1_agreement']:.2f}%  {entry['latency_ms_host']:.3f} ms"
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _calibration_set(x: torch.Tensor, n: int, seed: int) -> np.ndarray:
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[: min(n, len(x))])
    return x[idx].numpy()


def quantize_calibrated(
    fp32: Path,
    path: Path,
    data: Any,
    model: torch.nn.Module,
    *,
    calibration: str,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """Quantize with ``calibration``; 'auto' tries each and keeps the one whose top-1 agreement with the
    fp32 model on the validation split is highest (the test split stays unseen)."""
    calib = _calibration_set(data.train.x, samples, seed)
    # 'auto' leaves entropy out: on these networks it chose the same ranges as minmax at twice the cost.
    methods = ["minmax", "percentile"] if calibration == "auto" else [calibration]
    if len(methods) == 1:
        quantize_onnx_int8(fp32, path, calib, method=methods[0])
        return {"method": methods[0], "samples": len(calib), "split": "train"}
    ref = torch_logits(model, data.val.x)
    labels = data.val.y.numpy()
    tried: dict[str, dict[str, float]] = {}
    best: tuple[float, float] | None = None
    chosen = methods[0]
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            cand = Path(tmp) / f"{m}.onnx"
            quantize_onnx_int8(fp32, cand, calib, method=m)
            agree = compare(ref, OnnxModel(cand)(data.val.x), labels)
            tried[m] = {
                "val_top1_agreement": agree.top1_agreement,
                "val_max_abs_diff": agree.max_abs_diff,
            }
            key = (agree.top1_agreement, -agree.max_abs_diff)
            if best is None or key > best:
                best = key
                shutil.copyfile(cand, path)
                chosen = m
    return {
        "method": chosen,
        "samples": len(calib),
        "split": "train",
        "selection": "validation",
        "tried": tried,
    }
