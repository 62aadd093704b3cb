"""Latency measured on this host: batch 1, a fixed thread count, in ONNX Runtime or eager PyTorch.

ONNX Runtime is how a model is deployed on a host CPU; eager PyTorch pays a per-operator dispatch cost
no deployment pays, which punishes networks of many small layers for the wrong reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compactnas.core.onnx_runtime import check_runtime, onnx_session

# torch.utils.benchmark imports cpp_extension, which warns on every start that a CUDA build of torch
# finds no CUDA runtime; on a CPU machine that is expected, not news.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402


def latency_timer(
    model: nn.Module, input_shape: tuple[int, int, int], *, threads: int = 1, runtime: str = "torch"
) -> benchmark.Timer:
    """A warmed-up Timer whose statement runs one batch-1 forward pass (model left in eval mode)."""
    check_runtime(runtime)
    model.eval()
    x = torch.randn(1, *input_shape)
    if runtime == "onnxruntime":
        sess = onnx_session(model, input_shape, threads=threads)
        stmt, env = "sess.run(None, feed)", {"sess": sess, "feed": {"x": x.numpy()}}
    else:
        stmt, env = "model(x)", {"model": model, "x": x}
    timer = benchmark.Timer(stmt=stmt, globals=env, num_threads=threads)
    with torch.inference_mode():
        timer.timeit(2)  # first calls allocate
    return timer


@torch.inference_mode()
def measure_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    threads: int = 1,
    min_run_time: float = 0.2,
    repeats: int = 1,
    runtime: str = "torch",
    quiet: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> float:
    """Median milliseconds per forward pass of one input (batch 1) in eval mode.

    ``runtime``: ``torch`` (eager) or ``onnxruntime`` (the model exported in memory). ``repeats`` > 1
    takes the median over that many independent blocked_autorange measurements, which resists a busy
    neighbour better than one long measurement. ``quiet`` is entered around the timing loop only (a
    parallel search pauses its other workers there): the export and warm-up before it, often longer
    than the timing itself, need no quiet machine and keep no one waiting.
    """
    was_training = model.training
    try:
        timer = latency_timer(model, input_shape, threads=threads, runtime=runtime)
        with quiet():
            medians = sorted(
                timer.blocked_autorange(min_run_time=min_run_time).median for _ in range(repeats)
            )
    finally:
        model.train(was_training)
    return medians[len(medians) // 2] * 1e3
