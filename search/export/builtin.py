"""The formats compactnas ships, each registered once: ONNX (fp32 and int8), TorchScript, a state dict,
the architecture string, and the edge formats (LiteRT and ExecuTorch, fp32 and int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compactnas.search.export import edge
from compactnas.search.export.checks import quantize_calibrated
from compactnas.search.export.formats import (
    without_activation_quant,
    write_onnx,
    write_state_dict,
    write_torchscript,
)
from compactnas.search.export.registry import ExportFormat, WriteJob, file_name, register_format


def _onnx(job: WriteJob, path: Path) -> None:
    write_onnx(job.deploy, job.input_shape, path, opset=job.settings.opset)


def _onnx_int8(job: WriteJob, path: Path) -> dict[str, Any]:
    # Quantized from the fp32 ONNX file of the same export when there is one, else from one written
    # for the purpose and not kept.
    fp32 = job.stage / file_name("onnx", job.trial)
    kept = "onnx" in job.written
    if not kept:
        fp32 = job.stage / ".fp32.onnx"
        write_onnx(job.deploy, job.input_shape, fp32, opset=job.settings.opset)
    try:
        calibration = quantize_calibrated(
            fp32, path, job.data, job.model, calibration=job.settings.calibration,
            samples=job.settings.calibration_samples, seed=job.seed,
        )  # fmt: skip
    finally:
        if not kept:
            fp32.unlink(missing_ok=True)
    return {"calibration": calibration}


def _torchscript(job: WriteJob, path: Path) -> None:
    write_torchscript(job.deploy, job.input_shape, path)


def _state_dict(job: WriteJob, path: Path) -> None:
    write_state_dict(
        job.model,
        path,
        arch=job.arch,
        num_classes=job.data.num_classes,
        input_shape=job.input_shape,
    )


def _arch(job: WriteJob, path: Path) -> None:
    path.write_text(job.arch + "\n")


def _edge_writer(name: str) -> Any:
    def write(job: WriteJob, path: Path) -> dict[str, Any]:
        calib = edge.calibration_images(
            job.data.train.x, job.settings.calibration_samples, job.seed
        )
        if not edge.EDGE_FORMATS[name].int8:
            return edge.write_edge(name, job.deploy, job.input_shape, path, calib)
        model = without_activation_quant(job.deploy)
        trained = job.deploy if model is not job.deploy else None
        return edge.write_edge(name, model, job.input_shape, path, calib, trained)

    return write


for _fmt in (
    ExportFormat(name="onnx", file_name="trial_{trial}.onnx", write=_onnx, summary="ONNX, fp32"),
    ExportFormat(
        name="onnx-int8",
        file_name="trial_{trial}.int8.onnx",
        write=_onnx_int8,
        int8=True,
        summary="ONNX, int8 weights and activations (static, calibrated on training images)",
    ),  # fmt: skip
    ExportFormat(
        name="torchscript",
        file_name="trial_{trial}.torchscript.pt",
        write=_torchscript,
        summary="TorchScript",
    ),  # fmt: skip
    ExportFormat(
        name="state-dict",
        file_name="trial_{trial}.state_dict.pt",
        write=_state_dict,
        summary="PyTorch state dict with its architecture string (compactnas loads it back)",
    ),  # fmt: skip
    ExportFormat(
        name="arch",
        file_name="arch.txt",
        write=_arch,
        checked=False,
        needs_weights=False,
        summary="the architecture string alone",
    ),  # fmt: skip
    *(
        ExportFormat(
            name=e.name,
            file_name="trial_{trial}" + e.suffix,
            write=_edge_writer(e.name),
            int8=e.int8,
            summary=f"for {e.runtime}",
            require=lambda n=e.name: edge.require(n),
        )  # fmt: skip
        for e in edge.EDGE_FORMATS.values()
    ),
):
    register_format(_fmt)
