"""One candidate, from architecture to metrics; the same code runs in every backend's workers.

``run_candidate`` never raises for a bad candidate: it returns a plain, picklable *payload* (see
``outcomes.py``) that the search loop records, whichever process or Ray worker produced it.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compactnas.core.data import Dataset, TableSource
from compactnas.core.errors import ConfigError, TrialDiverged
from compactnas.evaluators import (
    TrainConfig,
    build_pruned_model,
    check_result,
    count_macs,
    count_parameters,
    create_evaluator,
    is_compressed,
    measure_latency_ms,
)
from compactnas.evaluators.compression import is_pruned
from compactnas.evaluators.train import Report
from compactnas.search.config import SearchConfig
from compactnas.spaces import ArchSpec, create_model, parse_arch
from compactnas.spaces.layers import size_bytes

# A context manager the host-latency measurement runs in: the parallel backend pauses the other
# workers' training inside it, so a candidate is timed on an otherwise quiet machine.
Gate = Callable[[], contextlib.AbstractContextManager[Any]]


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


def evaluator_name(cfg: SearchConfig, spec: ArchSpec) -> str:
    """The registered evaluator a candidate goes to: the configured one, or the ``auto`` choice."""
    if cfg.evaluator != "auto":
        return cfg.evaluator
    if cfg.data.startswith("table:"):
        return "table"  # a benchmark table answers for the candidate: nothing is trained
    return "compress" if is_compressed(spec) else "proxy"


def resolve_latency_model(
    cfg: SearchConfig, objectives: list[Any], *, num_classes: int = 10
) -> Any:
    """The device profile's model, or None to measure on this host.

    An objective the profile cannot score (energy without energy figures, sram on a device without
    SRAM limits) is an error before anything runs. A measured-table profile times a block it lacks
    on this host the first time it is needed, so a new block never fails a trial.
    """
    if cfg.device is None:
        missing = [o.name for o in objectives if o.needs]
        if missing:
            raise ConfigError(
                f"objective(s) {', '.join(missing)} need a device profile (--device NAME)"
            )
        return None
    from compactnas.hw_profiles import create_latency_model, load_profile

    profile = load_profile(cfg.device)
    lacks = {"energy": profile.energy is None, "sram": profile.memory is None}
    unscorable = [o.name for o in objectives if o.needs and lacks.get(o.needs, False)]
    if unscorable:
        raise ConfigError(
            f"device '{profile.name}' has no figures for objective(s) {', '.join(unscorable)}"
        )
    return create_latency_model(profile, num_classes=num_classes, on_missing="measure")


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
        "size_bytes": float(size_bytes(spec, shape, data.num_classes)),
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
    gate: Gate = contextlib.nullcontext,
) -> dict[str, float] | Infeasible:
    """Static metrics and budgets first; only a feasible candidate goes to its evaluator.

    Raises TrialDiverged (non-finite loss), EvaluationError (a result that breaks the contract) or any
    error of the model itself; ``run_candidate`` turns those into a failed trial.
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
    metrics = static_metrics(spec, shaped, data, cfg, latency_model, gate)
    if on_static is not None:
        on_static(dict(metrics))
    infeasible = check_budgets(cfg, metrics, spec, data, latency_model)
    if infeasible is not None:
        return infeasible
    name = evaluator_name(cfg, spec)
    evaluator = create_evaluator(
        name, train_config=train_config(cfg, trial_number), options=cfg.to_dict()
    )
    # A compressed candidate is trained dense, pruned and QAT-tuned in place within the same epochs,
    # so model.state_dict() below is the compressed model's (see build_compressed_model).
    result = check_result(name, evaluator.evaluate(model, spec, data, report=report))
    metrics.update(result)  # a measured latency_ms (a table's, say) replaces the predicted one
    if checkpoint is not None and getattr(evaluator, "trains", True):
        _save_checkpoint(checkpoint, spec, data, metrics, model)
    return metrics


def _save_checkpoint(
    path: Path, spec: ArchSpec, data: Dataset, metrics: dict[str, float], model: torch.nn.Module
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "arch": str(spec),
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "data": data.name,
            "compressed": is_compressed(spec),
            "metrics": metrics,
            "state_dict": model.state_dict(),
        },
        tmp,
    )
    tmp.replace(path)  # a checkpoint is complete or absent, never half-written


def run_candidate(
    arch: str,
    number: int,
    data: Dataset,
    cfg: SearchConfig,
    *,
    latency_model: Any | None = None,
    report: Report | None = None,
    on_static: Callable[[dict[str, float]], None] | None = None,
    gate: Gate = contextlib.nullcontext,
) -> dict[str, Any]:
    """Evaluate one candidate and describe how it went as a payload (see outcomes.Outcome)."""
    t0 = time.time()
    try:
        with _threads(cfg.threads):
            result = evaluate_candidate(
                parse_arch(arch),
                data,
                cfg,
                trial_number=number,
                latency_model=latency_model,
                report=report,
                checkpoint=cfg.out_dir / "checkpoints" / f"trial_{number}.pt",
                on_static=on_static,
                gate=gate,
            )
    except (Exception, TrialDiverged) as e:  # noqa: BLE001 - one bad candidate must not end the search
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        return {"kind": "failed", "reason": reason, "traceback": traceback.format_exc()[-4000:]}
    if isinstance(result, Infeasible):
        return {"kind": "infeasible", "reason": result.reason, "violations": result.violations}
    result["train_seconds"] = round(time.time() - t0, 3)
    kind = "stopped" if result.get("stopped_early") else "complete"
    return {"kind": kind, "metrics": result}


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
