"""Running exports on this host: ONNX Runtime sessions, PyTorch logits, agreement with PyTorch and
batch-1 latency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.utils import benchmark


def ort_session(path: Path | str, *, threads: int = 1) -> Any:
    opts = ort.SessionOptions()
    # One thread, in sequence: comparable with the single-threaded PyTorch timing of the search.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An ONNX export run by onnxruntime: ``model(x)`` takes an N x C x H x W array (numpy or torch)
    and returns numpy logits."""

    def __init__(self, path: Path | str, *, threads: int = 1):
        self.path = Path(path)
        self.session = ort_session(self.path, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: Any, *, batch_size: int = 256) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = [
            self.session.run([self.output_name], {self.input_name: x[i : i + batch_size]})[0]
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r})"


@torch.no_grad()
def torch_logits(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    if isinstance(model, nn.Module):
        model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


@dataclass(frozen=True, kw_only=True)
class Agreement:
    max_abs_diff: float
    top1_agreement: float
    accuracy: float


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray) -> Agreement:
    return Agreement(
        max_abs_diff=float(np.abs(reference - exported).max()) if reference.size else 0.0,
        top1_agreement=float((reference.argmax(1) == exported.argmax(1)).mean()),
        accuracy=float((exported.argmax(1) == labels).mean()),
    )


def onnx_latency_ms(
    session: Any, input_shape: tuple[int, int, int], *, min_run_time: float = 0.2
) -> float:
    """Median milliseconds per batch-1 run, timed like evaluators.measure_latency_ms (blocked autorange)."""
    feed = {
        session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
            (1, *input_shape), dtype=np.float32
        )
    }
    session.run(None, feed)
    timer = benchmark.Timer(
        stmt="run(None, feed)", globals={"run": session.run, "feed": feed}, num_threads=1
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3
