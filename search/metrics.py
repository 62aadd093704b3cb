"""What is known of a candidate before it trains (size, parameters, MACs, latency on the device
profile or this host) and the budgets it must fit; shared by trained and table-scored candidates."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from compactnas.core.data import Dataset
from compactnas.evaluators import count_macs, count_parameters, measure_latency_ms
from compactnas.hw_profiles.registry import device_runtime
from compactnas.search.config import SearchConfig
from compactnas.spaces import ArchSpec
from compactnas.spaces.layers import size_bytes
from compactnas.spaces.storage import LAYOUTS, file_bytes, precision_pairs

# A context manager the host-latency measurement runs in: the parallel backend pauses the other
# workers' training inside it, so a candidate is timed on an otherwise quiet machine.
Gate = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True)
class Infeasible:
    """A candidate over a budget: it is recorded but never trained."""

    reason: str
    violations: dict[str, float]  # constraint name -> amount over its limit (> 0)


def searched_size_bytes(
    spec: ArchSpec | str, shape: tuple[int, int, int], num_classes: int, device: str | None
) -> int:
    """The size a search counts: for a device whose runtime loads a file of known layout
    (spaces/storage.py), that file's estimated size; else the weights at their own bit-widths
    (spaces.layers.size_bytes, what the ``packed`` export stores)."""
    runtime = device_runtime(device)
    if runtime is not None:
        fmt = runtime.format_for(precision_pairs(spec))
        if fmt in LAYOUTS:
            return file_bytes(spec, shape, num_classes, fmt)
    return size_bytes(spec, shape, num_classes)


def static_metrics(
    spec: ArchSpec,
    model: torch.nn.Module,
    data: Dataset,
    cfg: SearchConfig,
    latency_model: Any | None = None,
    gate: Gate = contextlib.nullcontext,
) -> dict[str, float]:
    """What is known before training: size, parameters, MACs, latency (device model or this host).

    ``model`` must have the shapes the candidate deploys with (the pruned shapes for a pruned spec);
    ``size_bytes`` comes from the string, which accounts for pruning and bit-widths.
    """
    shape = data.input_shape
    m: dict[str, float] = {
        "params": float(count_parameters(model)),
        "macs": float(count_macs(model, shape)),
        "size_bytes": float(searched_size_bytes(spec, shape, data.num_classes, cfg.device)),
    }
    if latency_model is not None:
        m["latency_ms"] = float(latency_model.predict_ms(spec, shape))
        for key in ("energy_mj", "peak_sram_kb", "flash_kb"):
            fn = getattr(latency_model, key, None)
            value = fn(spec, shape) if fn is not None else None
            if value is not None:
                m[key] = float(value)
    else:
        m["latency_ms"] = measure_latency_ms(
            model, shape, threads=cfg.latency_threads, runtime=cfg.host_runtime, quiet=gate
        )
    return m


def check_budgets(
    cfg: SearchConfig,
    metrics: dict[str, float],
    spec: ArchSpec,
    data: Dataset,
    latency_model: Any | None,
) -> Infeasible | None:
    over: dict[str, float] = {}
    reasons = []
    if cfg.max_latency_ms is not None and metrics["latency_ms"] > cfg.max_latency_ms:
        over["latency_ms"] = metrics["latency_ms"] - cfg.max_latency_ms
        reasons.append(f"latency {metrics['latency_ms']:.3f} ms > {cfg.max_latency_ms:g} ms")
    if cfg.max_size_kb is not None and metrics["size_bytes"] / 1024 > cfg.max_size_kb:
        over["size_kb"] = metrics["size_bytes"] / 1024 - cfg.max_size_kb
        reasons.append(f"size {metrics['size_bytes'] / 1024:.1f} KB > {cfg.max_size_kb:g} KB")
    if cfg.max_params is not None and metrics["params"] > cfg.max_params:
        over["params"] = metrics["params"] - cfg.max_params
        reasons.append(f"{int(metrics['params'])} parameters > {cfg.max_params}")
    fits = getattr(latency_model, "fits", None)
    if fits is not None:
        reason = fits(spec, data.input_shape, num_classes=data.num_classes)
        if reason:
            over["device_memory"] = 1.0
            reasons.append(reason)
    return Infeasible("; ".join(reasons), over) if over else None
