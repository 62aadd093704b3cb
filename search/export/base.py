"""What every export format shares: its error, quieting the converters, and running or timing a batch-1
export; the lowest module of the export package (it imports none of the others)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils import benchmark

from compactnas.core.errors import CompactnasError


class ExportError(CompactnasError):
    """An export that cannot be made or loaded; the message says which and why."""


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Silence the exporters' deprecation chatter, onnxruntime's calibration prints and the IR dump the
    TorchScript exporter writes straight to file descriptor 1 when it fails."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization logs through the root logger
    try:
        with warnings.catch_warnings(), _fd_to_devnull(1):
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _fd_to_devnull(fd: int) -> Iterator[None]:
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (an embedded interpreter): nothing to silence
        yield
        return
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(devnull)
        os.close(saved)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


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
    x = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
    step(x)
    timer = benchmark.Timer(stmt="step(x)", globals={"step": step, "x": x}, num_threads=1)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def quiet_env() -> None:
    """The converters print progress bars and C++ logs by default; exports report in one line."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
