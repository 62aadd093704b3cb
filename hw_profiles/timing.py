"""onnxruntime sessions for modules exported in memory."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def onnx_session(module: nn.Module, input_shape: tuple[int, int, int], *, threads: int):
    """An onnxruntime session for the module, exported in memory (no file) with the TorchScript exporter.

    The torch.export-based exporter needs onnxscript, which the project does not depend on.
    """
    import onnxruntime as ort

    module = module.eval()
    x = torch.randn(1, *input_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
