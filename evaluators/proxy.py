"""The proxy evaluator: short training, then accuracy on the validation and test splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compactnas.evaluators.base import Evaluator  # noqa: F401  (the contract, re-exported)
from compactnas.evaluators.train import Report, TrainConfig, accuracy, train


@dataclass(frozen=True, kw_only=True)
class ProxyEvaluator:
    """Train ``model`` in place with ``train_config`` and measure accuracy.

    ``accuracy`` (validation) is what the search optimises; ``test_accuracy`` is recorded alongside and
    only reported for the final Pareto set, so the test split never steers the search.
    """

    name: str = "proxy"
    trains: bool = True
    train_config: TrainConfig = field(default_factory=TrainConfig)

    def evaluate(
        self, model: nn.Module, spec: Any, data: Any, *, report: Report | None = None
    ) -> dict[str, float]:
        stats = train(
            model,
            data.train.x,
            data.train.y,
            self.train_config,
            val=(data.val.x, data.val.y),
            report=report,
        )
        return trained_metrics(model, data, stats, self.train_config)


def trained_metrics(
    model: nn.Module, data: Any, stats: dict[str, float], cfg: TrainConfig | None = None
) -> dict[str, float]:
    """What every evaluator reports after training: validation and test accuracy (on the recipe's train
    device, with its test-time augmentation), and how it went."""
    return {
        "accuracy": accuracy(model, data.val.x, data.val.y, cfg),
        "test_accuracy": accuracy(model, data.test.x, data.test.y, cfg),
        "epochs": stats["epochs"],
        "train_loss": stats["loss"],
        "stopped_early": stats["stopped_early"],
    }
