"""One candidate, from architecture to metrics; the same code runs in every backend's workers.

``run_candidate`` never raises for a bad candidate: it returns a plain, picklable *payload* (see
``outcomes.py``) that the search loop records, whichever process or Ray worker produced it.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from compactnas.core.data import Dataset, TableSource
from compactnas.core.errors import ConfigError, TrialDiverged
from compactnas.evaluators import (
    TrainConfig,
    build_pruned_model,
    check_result,
    create_evaluator,
    is_compressed,
)
from compactnas.evaluators.compression import is_factorised, is_pruned
from compactnas.evaluators.early_exit import exit_outcome, fit_exits
from compactnas.evaluators.train import Report
from compactnas.hw_profiles import create_latency_model, load_profile
from compactnas.hw_profiles.exits import exit_latency_ms
from compactnas.search.config import SearchConfig
from compactnas.search.metrics import Gate, Infeasible, check_budgets, static_metrics
from compactnas.search.table_candidate import evaluate_table_candidate
from compactnas.spaces import ArchSpec, create_model, parse_arch
from compactnas.spaces.exits import exit_stages


def train_config(cfg: SearchConfig, trial_number: int) -> TrainConfig:
    return TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        label_smoothing=cfg.label_smoothing,
        augment=cfg.augment,
        warmup=cfg.warmup,
        ema=cfg.ema,
        tta=cfg.tta,
        train_device=cfg.train_device,
        precision=cfg.precision,
        compile=cfg.compile,
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

    profile = load_profile(cfg.device)
    lacks = {"energy": profile.energy is None, "sram": profile.memory is None}
    unscorable = [o.name for o in objectives if o.needs and lacks.get(o.needs, False)]
    if unscorable:
        raise ConfigError(
            f"device '{profile.name}' has no figures for objective(s) {', '.join(unscorable)}"
        )
    return create_latency_model(profile, num_classes=num_classes, on_missing="measure")


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
        return evaluate_table_candidate(
            spec, data, cfg, latency_model=latency_model, on_static=on_static
        )
    torch.manual_seed(cfg.seed * 100_003 + trial_number)
    model = create_model(spec, num_classes=data.num_classes, in_chans=data.input_shape[0])
    # A pruned candidate is counted and timed at its pruned shapes (untrained weights time the same).
    # Fake quantization is left out of the host timing: it simulates integer arithmetic in float and
    # does not speed up a CPU; what low bit-widths gain on a target is the device profile's to say.
    shaped = model
    if is_pruned(spec) or is_factorised(spec):
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
    if exit_stages(spec) and latency_model is not None:
        metrics.update(score_exits(model, spec, data, latency_model, seed=cfg.seed))
    if checkpoint is not None and getattr(evaluator, "trains", True):
        _save_checkpoint(checkpoint, spec, data, metrics, model)
    return metrics


def score_exits(
    model: torch.nn.Module, spec: ArchSpec, data: Dataset, latency_model: Any, *, seed: int
) -> dict[str, float]:
    """A trained network with early exits: its exits fitted on its frozen features, then scored on
    the validation split as a device runs it. Accuracy is that of the answers given where each image
    left, latency the device's expected latency over where they left (the worst case beside)."""
    fit_exits(model, data.train.x, data.train.y, seed=seed)
    o = exit_outcome(model, data.val.x, data.val.y)
    lat = exit_latency_ms(latency_model, spec, data.input_shape, o.fractions,
                          num_classes=data.num_classes)  # fmt: skip
    return {
        "accuracy": o.accuracy, "final_accuracy": o.final_accuracy,
        "exited_early": 1.0 - o.fractions[-1], "latency_ms": lat["expected_ms"],
        "worst_latency_ms": lat["worst_ms"],
    }  # fmt: skip


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
