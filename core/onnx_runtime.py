"""ONNX Runtime sessions for modules exported in memory: how a deployed model runs on a host CPU.

Shared by the search's host-latency objective (evaluators/) and host lookup tables (hw_profiles/), which
may not import each other, so it lives in the bottom layer.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from compactnas.core.errors import ConfigError

HOST_RUNTIMES = ("onnxruntime", "torch")


def check_runtime(runtime: str) -> str:
    if runtime not in HOST_RUNTIMES:
        raise ConfigError(
            f"unknown host runtime '{runtime}' (use one of: {', '.join(HOST_RUNTIMES)})"
        )
    return runtime


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def onnx_session(module: nn.Module, input_shape: tuple[int, int, int], *, threads: int = 1):
    """An onnxruntime session (CPU, sequential, ``threads`` intra-op threads) for the module, exported
    in memory with the TorchScript exporter (the torch.export-based one needs onnxscript, which the
    project does not depend on). The module is put in eval mode and left there."""
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
