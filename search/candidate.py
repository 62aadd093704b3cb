"""One candidate, from architecture to metrics; shared by the local and the Ray backends."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compactnas.core.data import Dataset, TableSource
from compactnas.evaluators import (
    CompressEvaluator,
    ProxyEvaluator,
    TrainConfig,
    build_pruned_model,
    count_macs,
    count_parameters,
    is_compressed,
    measure_latency_ms,
)
from compactnas.evaluators.compression import is_pruned
from compactnas.evaluators.train import Report
from compactnas.search.config import SearchConfig
from compactnas.spaces import ArchSpec, create_model
from compactnas.spaces.layers import size_bytes


@dataclass(frozen=True)
class Infeasible:
    """A candidate over a budget: it is recorded but never trained."""

    reason: str
    violations: dict[str, float]  # constraint name -> amount over its limit (> 0)


def train_config(cfg: SearchConfig, trial_number: int) -> TrainConfig:
    return TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        label_smoothing=cfg.label_smoothing,
        augment=cfg.augment,
        seed=cfg.seed * 100_003 + trial_number,
    )


def static_metrics(
    spec: ArchSpec,
    model: torch.nn.Module,
    data: Dataset,
    cfg: SearchConfig,
    latency_model: Any | None = None,
) -> dict[str, float]:
    """What is known before training: size, parameters, MACs, latency (device model or this host).

    ``model`` must have the shapes the candidate deploys with (the pruned shapes for a pruned spec);
    ``size_bytes`` comes from the string, which accounts for pruning and bit-widths.
    """
    shape = data.input_shape
    m: dict[str, float] = {
        "params": float(count_parameters(model)),
        "macs": float(count_macs(model, shape)),
        "size_bytes": float(size_bytes(spec, shape, data.num_classes)),
    }
    if latency_model is not None:
        m["latency_ms"] = float(latency_model.predict_ms(spec, shape))
        for key, fn in (
            ("energy_mj", "energy_mj"),
            ("peak_sram_kb", "peak_sram_kb"),
            ("flash_kb", "flash_kb"),
        ):
            value = getattr(latency_model, fn, None)
            value = value(spec, shape) if value is not None else None
            if value is not None:
                m[key] = float(value)
    else:
        m["latency_ms"] = measure_latency_ms(
            model, shape, threads=cfg.latency_threads, runtime=cfg.host_runtime
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


def evaluate_candidate(
    spec: ArchSpec,
    data: Dataset,
    cfg: SearchConfig,
    *,
    trial_number: int,
    latency_model: Any | None = None,
    report: Report | None = None,
    checkpoint: Path | None = None,
    on_static: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float] | Infeasible:
    """Static metrics and budgets first; only a feasible candidate is trained.

    Raises TrialDiverged (non-finite loss) or any error of the model itself; the caller records the
    trial as failed and the search goes on.
    """
    # Table data source: looked up, not trained (search/table_candidate.py).
    if isinstance(data, TableSource):
        from compactnas.search.table_candidate import evaluate_table_candidate

        return evaluate_table_candidate(
            spec, data, cfg, latency_model=latency_model, on_static=on_static
        )
    torch.manual_seed(cfg.seed * 100_003 + trial_number)
    model = create_model(spec, num_classes=data.num_classes, in_chans=data.input_shape[0])
    # A pruned candidate is counted and timed at its pruned shapes (untrained weights time the same).
    # Fake quantization is left out of the host timing: it simulates integer arithmetic in float and
    # does not speed up a CPU; what low bit-widths gain on a target is the device profile's to say.
    shaped = model
    if is_pruned(spec):
        shaped = build_pruned_model(
            spec, num_classes=data.num_classes, in_chans=data.input_shape[0]
        )
    metrics = static_metrics(spec, shaped, data, cfg, latency_model)
    if on_static is not None:
        on_static(dict(metrics))
    infeasible = check_budgets(cfg, metrics, spec, data, latency_model)
    if infeasible is not None:
        return infeasible
    tc = train_config(cfg, trial_number)
    # A compressed candidate is trained dense, pruned and QAT-tuned in place within the same epochs,
    # so model.state_dict() below is the compressed model's (see build_compressed_model).
    compressed = is_compressed(spec)
    evaluator = (
        CompressEvaluator(train_config=tc) if compressed else ProxyEvaluator(train_config=tc)
    )
    metrics.update(evaluator.evaluate(model, spec, data, report=report))
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite metric(s): {', '.join(bad)}")
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "arch": str(spec),
                "num_classes": data.num_classes,
                "input_shape": list(data.input_shape),
                "data": data.name,
                "compressed": compressed,
                "metrics": metrics,
                "state_dict": model.state_dict(),
            },
            checkpoint,
        )
    return metrics
