"""The evaluator contract: how a candidate gets its metrics, whatever the method.

An evaluator is any object with a ``name`` and an ``evaluate`` method; it is registered by name
(``register_evaluator``) with a factory that takes keyword arguments only (the search passes
``train_config`` and ``options``, a mapping of evaluator-specific settings; a factory ignores what it
does not use). Evaluators never import Optuna, Ray or MLflow: they learn that the search wants them to
stop through ``report(step, value) -> bool`` (True: stop now).

``evaluate(model, spec, data, *, report=None) -> dict[str, float]`` returns:

required
    ``accuracy``       validation accuracy in [0, 1]: the objective the search optimises.
optional
    ``test_accuracy``  held-out test accuracy; recorded, never used to steer the search.
    ``epochs``         epochs actually trained (fewer than asked when stopped early).
    ``train_loss``     final training loss (shows whether the model converged).
    ``stopped_early``  1.0 when ``report`` asked it to stop.
    ``latency_ms``     a latency the evaluator *measured* (a benchmark table's column, say); it replaces
                       the device profile's prediction for this candidate.
    anything else      extra float metrics, recorded as they are.

Every value must be a finite float. ``trains`` says whether ``model`` carries trained weights after
``evaluate`` (False for a table lookup: no checkpoint is written, nothing to export but the string).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

Report = Callable[[int, float], bool]

REQUIRED_KEYS: tuple[str, ...] = ("accuracy",)
OPTIONAL_KEYS: tuple[str, ...] = (
    "test_accuracy",
    "epochs",
    "train_loss",
    "stopped_early",
    "latency_ms",
)


class EvaluationError(ValueError):
    """An evaluator broke its contract (missing or non-finite metric)."""


@runtime_checkable
class Evaluator(Protocol):
    name: str
    trains: bool

    def evaluate(
        self, model: nn.Module | None, spec: Any, data: Any, *, report: Report | None = None
    ) -> dict[str, float]: ...


def check_result(name: str, result: Mapping[str, Any]) -> dict[str, float]:
    """The result as plain floats, or EvaluationError naming what breaks the contract."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise EvaluationError(f"evaluator '{name}' returned no {', '.join(missing)}")
    out: dict[str, float] = {}
    for key, value in result.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise EvaluationError(f"evaluator '{name}': {key}={value!r} is not a number") from None
        if not math.isfinite(value):
            raise EvaluationError(f"evaluator '{name}': {key} is {value}")
        out[key] = value
    return out
