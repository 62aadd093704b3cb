"""A candidate scored from a benchmark table (data source ``table:PATH``): nothing is built or trained.

Parameters, MACs and size come from the layer list (the same numbers a built model counts, without
building one); latency from the table's latency column when one is chosen, else from the device profile,
else timed on this host. Budgets are checked on these numbers like any candidate's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compactnas.core.data import TableSource
from compactnas.evaluators import create_evaluator
from compactnas.evaluators.table import check_table_columns
from compactnas.search.config import SearchConfig
from compactnas.search.metrics import check_budgets, static_metrics
from compactnas.spaces import ArchSpec, create_model
from compactnas.spaces.layers import count_macs, count_params, size_bytes


def check_table(cfg: SearchConfig, data: TableSource) -> None:
    """ConfigError before any trial when the table lacks the columns the search reads."""
    check_table_columns(data.frame, cfg.table_accuracy, cfg.table_latency)


def evaluate_table_candidate(
    spec: ArchSpec,
    data: TableSource,
    cfg: SearchConfig,
    *,
    latency_model: Any | None = None,
    on_static: Callable[[dict[str, float]], None] | None = None,
) -> Any:

    shape, classes = data.input_shape, data.num_classes
    evaluator = create_evaluator(
        "table", options={"accuracy": cfg.table_accuracy, "latency": cfg.table_latency}
    )
    looked_up = evaluator.evaluate(None, spec, data)
    metrics: dict[str, float] = {
        "params": float(count_params(spec, shape, classes)),
        "macs": float(count_macs(spec, shape, classes)),
        "size_bytes": float(size_bytes(spec, shape, classes)),
    }
    if "latency_ms" in looked_up:
        metrics["latency_ms"] = looked_up["latency_ms"]
        if latency_model is not None:
            metrics["predicted_latency_ms"] = float(latency_model.predict_ms(spec, shape))
    else:
        model = create_model(spec, num_classes=classes, in_chans=shape[0])
        metrics.update(
            {
                k: v
                for k, v in static_metrics(spec, model, data, cfg, latency_model).items()
                if k not in metrics
            }
        )
    if on_static is not None:
        on_static(dict(metrics))
    infeasible = check_budgets(cfg, metrics, spec, data, latency_model)
    if infeasible is not None:
        return infeasible
    metrics.update(looked_up)
    return metrics
