"""ExecuTorch exports: a .pte program lowered to the XNNPACK delegate, fp32 or int8 through PyTorch's
PT2E quantization (XNNPACK's quantizer, calibrated on training images), run back with ExecuTorch's
Python runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.search.export.base import latency_ms, run_batch1, silenced

_CALIBRATION_BATCH = 64


def _version() -> str:
    from importlib.metadata import version

    return version("executorch")


def write_pte(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    calibration: np.ndarray | None,
) -> dict[str, Any]:
    """fp32 when ``calibration`` is None, else int8 weights (per channel) and activations."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model.eval()
    example = (torch.zeros(1, *input_shape),)
    info: dict[str, Any] = {"converter": f"executorch {_version()} (XNNPACK delegate)"}
    with silenced(), torch.no_grad():
        if calibration is not None:
            model, info["quantization"] = _quantized(model, input_shape, calibration)
        program = torch.export.export(model, example)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        path.write_bytes(lowered.to_executorch().buffer)
    return info


def _quantized(
    model: nn.Module, input_shape: tuple[int, ...], calibration: np.ndarray
) -> tuple[nn.Module, dict[str, Any]]:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    # A free batch axis while observing, so calibration runs in batches rather than one image a call.
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(
        model, (torch.zeros(2, *input_shape),), dynamic_shapes=({0: batch},)
    ).module()
    prepared = prepare_pt2e(graph, quantizer)
    x = torch.from_numpy(np.ascontiguousarray(calibration, dtype=np.float32))
    for i in range(0, len(x), _CALIBRATION_BATCH):
        prepared(x[i : i + _CALIBRATION_BATCH])
    return convert_pt2e(prepared), {
        "scheme": "PT2E static (XNNPACKQuantizer): int8 weights per channel, int8 activations, "
        "min/max ranges; float input and output",
        "samples": len(x),
        "split": "train",
    }


class PteModel:
    """A .pte program run by ExecuTorch's Python runtime: ``model(x)`` returns numpy logits."""

    def __init__(self, path: Path | str):
        from executorch.runtime import Runtime

        self.path = Path(path)
        with silenced():
            self.method = Runtime.get().load_program(self.path).load_method("forward")

    @property
    def edge_runtime(self) -> str:
        return f"executorch {_version()} runtime (XNNPACK delegate, CPU)"

    def step(self, x: np.ndarray) -> np.ndarray:
        return self.method.execute([torch.from_numpy(x)])[0].numpy()

    def __call__(self, x: Any) -> np.ndarray:
        return run_batch1(self.step, x)

    def latency_ms(self, input_shape: tuple[int, ...], min_run_time: float) -> float:
        return latency_ms(self.step, input_shape, min_run_time)

    def __repr__(self) -> str:
        return f"PteModel({str(self.path)!r})"
