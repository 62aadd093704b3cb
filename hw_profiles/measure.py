"""Timing many modules on a small shared host: short samples, round-robin, a low percentile.

On a 2-core host with a neighbour's jobs running, block medians (evaluators/latency.py's
measure_latency_ms) of the same network moved by up to 2x from one second to the next, because most
blocks of calls get preempted. Single calls (or groups of calls lasting ~0.2 ms) mostly run between
preemptions, so the 10th percentile of many short samples stays within ~2% across runs even at a load
average of 5. Every module is visited in turn over several rounds, so no module's samples all fall in one
busy stretch. Samples are taken with torch.utils.benchmark's Timer at a fixed thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils import benchmark

from compactnas.core.errors import ConfigError
from compactnas.hw_profiles.timing import onnx_session

Progress = Callable[[int, int], None]
_SAMPLE_S = 2e-4  # long enough to dwarf the timer's own cost, short enough to dodge preemption


class _Timed:
    """One module ready to time, eagerly or as an onnxruntime session."""

    def __init__(
        self, module: nn.Module, shape: tuple[int, int, int], *, backend: str, threads: int
    ):
        x = torch.randn(1, *shape)
        if backend == "torch":
            module = module.eval()
            stmt, env = "module(x)", {"module": module, "x": x}
        elif backend == "onnxruntime":
            sess = onnx_session(module, shape, threads=threads)
            stmt, env = "sess.run(None, feed)", {"sess": sess, "feed": {"x": x.numpy()}}
        else:
            raise ConfigError(f"unknown timing backend '{backend}' (known: torch, onnxruntime)")
        self.timer = benchmark.Timer(stmt=stmt, globals=env, num_threads=threads)
        with torch.inference_mode():
            self.timer.timeit(3)  # first calls allocate
            per_call = self.timer.timeit(10).mean
        self.number = max(1, int(_SAMPLE_S / max(per_call, 1e-9)))

    def samples(self, k: int) -> list[float]:
        with torch.inference_mode():
            return [self.timer.timeit(self.number).mean for _ in range(k)]


def time_round_robin(
    build: Sequence[Callable[[], tuple[nn.Module, tuple[int, int, int]]]],
    *,
    backend: str = "torch",
    threads: int = 1,
    rounds: int = 5,
    samples: int = 10,
    quantile: float = 0.1,
    chunk: int = 300,
    progress: Progress | None = None,
) -> list[float]:
    """Milliseconds per call of each module ``build[i]()`` returns: the ``quantile`` of its samples.

    Modules are built (and exported, for onnxruntime) ``chunk`` at a time to bound memory.
    """
    if rounds < 1 or samples < 1:
        raise ConfigError("rounds and samples must be at least 1")
    out: list[float] = []
    done, total = 0, len(build) * rounds
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for start in range(0, len(build), chunk):
            timed = []
            for make in build[start : start + chunk]:
                module, shape = make()
                timed.append(_Timed(module, shape, backend=backend, threads=threads))
            got: list[list[float]] = [[] for _ in timed]
            for _ in range(rounds):
                for i, t in enumerate(timed):
                    got[i] += t.samples(samples)
                    done += 1
                    if progress is not None:
                        progress(done, total)
            out += [float(np.quantile(g, quantile)) * 1e3 for g in got]
    finally:
        torch.set_num_threads(prev)
    return out
