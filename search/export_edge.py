"""Edge export formats (LiteRT and ExecuTorch): which file each writes, how it is written and run back,
and which format a device's runtime takes.

These formats need the optional ``edge`` extra; without it, asking for one ends in one line saying what
to install. Every edge export takes batch-1 input, as the runtimes on phones and microcontrollers run it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.search.export_formats import ExportError

EXTRA_HINT = "pip install 'compactnas[edge]'"


@dataclass(frozen=True, kw_only=True)
class EdgeFormat:
    name: str
    suffix: str  # file name after trial_N
    int8: bool
    modules: tuple[str, ...]  # what must be importable
    packages: str  # what to install, for the error message
    runtime: str  # who runs the file


EDGE_FORMATS: dict[str, EdgeFormat] = {
    f.name: f
    for f in (
        EdgeFormat(
            name="tflite",
            suffix=".tflite",
            int8=False,
            modules=("litert_torch", "ai_edge_litert"),
            packages="litert-torch, ai-edge-litert",
            runtime="LiteRT interpreter (TF Lite)",
        ),
        EdgeFormat(
            name="tflite-int8",
            suffix=".int8.tflite",
            int8=True,
            modules=("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
            packages="litert-torch, ai-edge-litert, ai-edge-quantizer",
            runtime="LiteRT interpreter, TF Lite Micro, STM32Cube.AI, TinyEngine",
        ),
        EdgeFormat(
            name="executorch",
            suffix=".pte",
            int8=False,
            modules=("executorch",),
            packages="executorch",
            runtime="ExecuTorch runtime (XNNPACK delegate)",
        ),
        EdgeFormat(
            name="executorch-int8",
            suffix=".int8.pte",
            int8=True,
            modules=("executorch",),
            packages="executorch",
            runtime="ExecuTorch runtime (XNNPACK delegate)",
        ),
    )
}
EDGE_SUFFIXES = (".tflite", ".pte")

# Device runtimes (as a profile names them) and the format each one loads.
RUNTIME_FORMATS = {
    "tflite-micro": "tflite-int8",
    "tflm": "tflite-int8",
    "tinyengine": "tflite-int8",
    "stm32cube.ai": "tflite-int8",
    "x-cube-ai": "tflite-int8",
    "cubeai": "tflite-int8",
    "cmsis-nn": "tflite-int8",
    "cmsisnn": "tflite-int8",
    "litert": "tflite",
    "tflite": "tflite",
    "executorch": "executorch",
    "onnxruntime": "onnx",
}


RUNTIME_NAMES = {
    "tflite-micro": "TF Lite Micro",
    "tflm": "TF Lite Micro",
    "tinyengine": "TinyEngine",
    "stm32cube.ai": "STM32Cube.AI",
    "x-cube-ai": "STM32Cube.AI",
    "cubeai": "STM32Cube.AI",
    "cmsis-nn": "CMSIS-NN (TF Lite Micro kernels)",
    "cmsisnn": "CMSIS-NN (TF Lite Micro kernels)",
}


def require(fmt: str) -> None:
    """One line naming what to install when a format's packages are missing."""
    spec = EDGE_FORMATS[fmt]
    missing = [m for m in spec.modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"the '{fmt}' export needs {spec.packages} (missing: {', '.join(missing)}); "
            f"install them with: {EXTRA_HINT}"
        )


def file_name(fmt: str, trial: int) -> str:
    return f"trial_{trial}{EDGE_FORMATS[fmt].suffix}"


def write_edge(
    fmt: str, model: nn.Module, input_shape: tuple[int, ...], path: Path, calibration: np.ndarray
) -> dict[str, Any]:
    """Write ``model`` as ``fmt`` to ``path``; returns what the card records about the conversion."""
    require(fmt)
    try:
        if fmt.startswith("tflite"):
            from compactnas.search import export_litert as lt

            if fmt == "tflite":
                lt.write_tflite(model, input_shape, path)
                return {"converter": lt.converter_version()}
            return lt.write_tflite_int8(model, input_shape, path, calibration)
        from compactnas.search import export_executorch as et

        return et.write_pte(
            model, input_shape, path, calibration if EDGE_FORMATS[fmt].int8 else None
        )
    except ExportError:
        path.unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001 - any converter failure is one line
        path.unlink(missing_ok=True)
        text = str(e).strip().splitlines()
        raise ExportError(
            f"the {fmt} converter cannot convert this model: {type(e).__name__}: "
            f"{text[0][:300] if text else ''}"
        ) from None


def load_edge(path: Path) -> Any:
    """A runnable model for a .tflite or .pte file: ``model(x)`` returns numpy logits."""
    fmt = "tflite" if path.suffix == ".tflite" else "executorch"
    require(fmt)
    try:
        if fmt == "tflite":
            from compactnas.search.export_litert import TfliteModel

            return TfliteModel(path)
        from compactnas.search.export_executorch import PteModel

        return PteModel(path)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot load {path}: {type(e).__name__}: {str(e)[:200]}") from None


def is_edge_model(obj: Any) -> bool:
    return hasattr(obj, "edge_runtime")


def run_batch1(step: Callable[[np.ndarray], np.ndarray], x: Any) -> np.ndarray:
    """Logits of every row of ``x``, one example per call (the exports take batch 1)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    outs = [step(x[i : i + 1]) for i in range(len(x))]
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def latency_ms(
    step: Callable[[np.ndarray], Any], input_shape: tuple[int, ...], min_run_time: float
) -> float:
    """Median milliseconds per batch-1 call, timed like the other exports (blocked autorange)."""
    from torch.utils import benchmark

    x = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
    step(x)
    timer = benchmark.Timer(stmt="step(x)", globals={"step": step, "x": x}, num_threads=1)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def format_for_device(device: str) -> tuple[str, str] | None:
    """(format, runtime) for a device profile that names its runtime, else None."""
    from compactnas.hw_profiles import load_profile

    profile = load_profile(device)
    runtime = str(getattr(profile, "runtime", "") or "")
    text = (runtime + " " + (profile.description or "")).lower().replace(" ", "-")
    names = [runtime.lower()] if runtime else []
    names += [r for r in RUNTIME_FORMATS if r in text]
    for name in names:
        if name in RUNTIME_FORMATS:
            return RUNTIME_FORMATS[name], RUNTIME_NAMES.get(name, runtime or name)
    return None


def quiet_env() -> None:
    """The converters print progress bars and C++ logs by default; exports report in one line."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")


def card_lines(exports: dict[str, dict[str, Any]]) -> list[str]:
    """Model-card lines for the edge exports' quantization and runtime."""
    lines = []
    for fmt, e in exports.items():
        if fmt not in EDGE_FORMATS:
            continue
        q = e.get("quantization")
        if q:
            lines.append(
                f"{fmt}: full-integer int8 ({q['scheme']}), calibrated on {q['samples']} training images; "
                f"input int8 scale {q['input']['scale']:.6g} zero point {q['input']['zero_point']}, output "
                f"int8 scale {q['output']['scale']:.6g} zero point {q['output']['zero_point']}."
                if "input" in q
                else f"{fmt}: int8 ({q['scheme']}), calibrated on {q['samples']} training images."
            )
        lines.append(f"{fmt} runs on: {EDGE_FORMATS[fmt].runtime}.")
    return lines


def log_mlflow(
    enabled: bool,
    out: Path,
    summary: dict[str, Any],
    frozen: Any,
    files: dict[str, Path],
    entries: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Log each edge export's file and its checks on the trial's MLflow run (MLflow has no model flavor
    for these files, so they are artifacts beside metrics named ``export_<format>_<check>``)."""
    from compactnas.search.export_mlflow import _on_run, resolve_tracking_uri

    done = {f: p for f, p in files.items() if f in EDGE_FORMATS and f in entries}
    if not enabled or not done:
        return {}
    run_id = frozen.user_attrs.get("mlflow_run_id")
    uri = resolve_tracking_uri(summary.get("mlflow", {}).get("tracking_uri"), out)
    if not run_id or not uri:
        return {"error": "the trial has no MLflow run to log the export to"}
    import mlflow

    logged: dict[str, Any] = {}
    try:
        with _on_run(uri, run_id):
            for fmt, path in done.items():
                e = entries[fmt]
                key = fmt.replace("-", "_")
                mlflow.log_artifact(str(path), artifact_path=f"exports/{key}")
                mlflow.log_metrics(
                    {
                        f"export_{key}_{k}": float(e[k])
                        for k in ("size_bytes", "test_accuracy", "max_abs_diff", "top1_agreement")
                        if k in e
                    }
                )
                logged[fmt] = {
                    "artifact": f"runs:/{run_id}/exports/{key}/{path.name}",
                    "run_id": run_id,
                    "tracking_uri": uri,
                }
    except Exception as e:  # noqa: BLE001 - the exports on disk stand; the card says what failed
        return {
            "error": f"could not log to {uri}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        }
    return logged


def formats_for_device(device: str) -> tuple[tuple[str, ...], str]:
    """The formats to export for ``device`` and a line saying why."""
    found = format_for_device(device)
    if found is None:
        return ("onnx",), f"device '{device}' names no runtime; exporting onnx"
    fmt, runtime = found
    return (fmt,), f"device '{device}' runs {runtime}: exporting {fmt}"


def is_int8(fmt: str) -> bool:
    return fmt in EDGE_FORMATS and EDGE_FORMATS[fmt].int8


def calibration_images(x: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """``n`` training images drawn with the search's seed (all of them when there are fewer)."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[: min(n, len(x))])
    return x[idx].numpy()
