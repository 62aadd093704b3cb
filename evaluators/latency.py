"""Latency measured on this host: torch.utils.benchmark, batch 1, a fixed thread count."""

from __future__ import annotations

import logging

import torch
from torch import nn

# torch.utils.benchmark imports cpp_extension, which warns on every start that a CUDA build of torch
# finds no CUDA runtime; on a CPU machine that is expected, not news.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402


@torch.inference_mode()
def measure_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    threads: int = 1,
    min_run_time: float = 0.2,
    repeats: int = 1,
) -> float:
    """Median milliseconds per forward pass of one input (batch 1) in eval mode.

    ``repeats`` > 1 takes the median over that many independent blocked_autorange measurements, which
    resists a busy neighbour better than one long measurement.
    """
    was_training = model.training
    model.eval()
    x = torch.randn(1, *input_shape)
    model(x)  # warm-up: first call allocates
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
    try:
        medians = sorted(
            timer.blocked_autorange(min_run_time=min_run_time).median for _ in range(repeats)
        )
    finally:
        model.train(was_training)
    return medians[len(medians) // 2] * 1e3
