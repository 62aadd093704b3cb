"""Training, distillation, pruning, quantization and counting. No Optuna or Ray here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compactnas.core.errors import RegistryError
from compactnas.evaluators.base import EvaluationError, Evaluator, check_result
from compactnas.evaluators.compression import (
    CompressEvaluator,
    CompressionConfig,
    build_compressed_model,
    build_pruned_model,
    is_compressed,
)
from compactnas.evaluators.counting import count_macs, count_parameters
from compactnas.evaluators.latency import measure_latency_ms
from compactnas.evaluators.proxy import ProxyEvaluator
from compactnas.evaluators.supernet import SupernetEvaluator
from compactnas.evaluators.table import TableEvaluator
from compactnas.evaluators.train import TrainConfig, accuracy, train

_EVALUATORS: dict[str, Callable[..., Evaluator]] = {"table": TableEvaluator}


def register_evaluator(name: str) -> Callable:
    def deco(factory: Callable[..., Evaluator]) -> Callable[..., Evaluator]:
        if name in _EVALUATORS:
            raise ValueError(f"evaluator '{name}' is already registered")
        _EVALUATORS[name] = factory
        return factory

    return deco


def unregister_evaluator(name: str) -> None:
    """Remove an evaluator registered by ``register_evaluator`` (the built-in ones stay)."""
    if name in _BUILTIN:
        raise ValueError(f"evaluator '{name}' is built in and cannot be removed")
    _EVALUATORS.pop(name, None)


def list_evaluators() -> list[str]:
    return sorted(_EVALUATORS)


def evaluator_factories() -> dict[str, Callable[..., Evaluator]]:
    """Every registered factory by name (the search hands them to its worker processes)."""
    return dict(_EVALUATORS)


def create_evaluator(
    evaluator: str | Evaluator,
    *,
    train_config: TrainConfig | None = None,
    options: dict[str, Any] | None = None,
    **ignored: Any,
) -> Evaluator:
    """The evaluator registered as ``evaluator``; factories take ``train_config`` and ``options``."""
    if not isinstance(evaluator, str):
        return evaluator
    if evaluator not in _EVALUATORS:
        raise RegistryError(
            f"unknown evaluator '{evaluator}' (known: {', '.join(list_evaluators())})"
        )
    return _EVALUATORS[evaluator](train_config=train_config or TrainConfig(), options=options or {})


@register_evaluator("proxy")
def _proxy(*, train_config: TrainConfig, **_: Any) -> Evaluator:
    return ProxyEvaluator(train_config=train_config)


@register_evaluator("compress")
def _compress(*, train_config: TrainConfig, **_: Any) -> Evaluator:
    return CompressEvaluator(train_config=train_config)


@register_evaluator("supernet")
def _supernet(*, options: dict[str, Any], **_: Any) -> Evaluator:
    if not options.get("supernet"):
        raise RegistryError(
            "the supernet evaluator needs a trained supernet's folder (--supernet DIR)"
        )
    return SupernetEvaluator(folder=str(options["supernet"]), space=options.get("space"))


__all__ = [
    "CompressEvaluator",
    "CompressionConfig",
    "EvaluationError",
    "Evaluator",
    "check_result",
    "ProxyEvaluator",
    "TableEvaluator",
    "TrainConfig",
    "accuracy",
    "build_compressed_model",
    "build_pruned_model",
    "count_macs",
    "count_parameters",
    "create_evaluator",
    "evaluator_factories",
    "is_compressed",
    "list_evaluators",
    "measure_latency_ms",
    "register_evaluator",
    "train",
    "unregister_evaluator",
]


_BUILTIN = frozenset(_EVALUATORS)  # registered above, at import
