"""Edge export formats (LiteRT and ExecuTorch): which file each writes, how it is written and run back,
and which format a device's runtime takes.

These formats need the optional ``edge`` extra; without it, asking for one ends in one line saying what
to install. Every edge export takes batch-1 input, as the runtimes on phones and microcontrollers run it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.hw_profiles.registry import device_runtime
from compactnas.search.export import executorch as et
from compactnas.search.export import litert as lt
from compactnas.search.export.base import ExportError
from compactnas.search.export.executorch import PteModel
from compactnas.search.export.litert import TfliteModel
from compactnas.spaces.storage import precision_pairs

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


def require(fmt: str) -> None:
    """One line naming what to install when a format's packages are missing."""
    spec = EDGE_FORMATS[fmt]
    missing = [m for m in spec.modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"the '{fmt}' export needs {spec.packages} (missing: {', '.join(missing)}); "
            f"install them with: {EXTRA_HINT}"
        )


def write_edge(
    fmt: str,
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    calibration: np.ndarray,
    trained: nn.Module | None = None,
) -> dict[str, Any]:
    """Write ``model`` as ``fmt`` to ``path``; returns what the card records about the conversion.
    ``trained``: for tflite-int8, the model with its trained activation quantizers, whose ranges the
    int8 file keeps."""
    require(fmt)
    try:
        if fmt.startswith("tflite"):
            if fmt == "tflite":
                lt.write_tflite(model, input_shape, path)
                return {"converter": lt.converter_version()}
            return lt.write_tflite_int8(model, input_shape, path, calibration, trained)

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
            return TfliteModel(path)

        return PteModel(path)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot load {path}: {type(e).__name__}: {str(e)[:200]}") from None


def is_edge_model(obj: Any) -> bool:
    return hasattr(obj, "edge_runtime")


def format_for_device(device: str, spec: Any | None = None) -> tuple[str, str]:
    """(format, a line saying why) for ``device``: what its runtime loads, for a model whose bit-widths
    are those of ``spec`` (an ArchSpec: a w8/a8 model takes the runtime's int8 format); onnx for a
    profile that names no runtime."""
    runtime = device_runtime(device)
    if runtime is None:
        return "onnx", f"device '{device}' names no runtime; exporting onnx"
    fmt = runtime.format_for(precision_pairs(spec)) if spec is not None else runtime.export_format
    return fmt, f"device '{device}' runs {runtime.label}: exporting {fmt}"


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


def calibration_images(x: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """``n`` training images drawn with the search's seed (all of them when there are fewer)."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[: min(n, len(x))])
    return x[idx].numpy()
