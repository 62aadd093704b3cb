"""Named training recipes: how a network is trained, apart from how long (the epochs are a budget).

``proxy`` is the search's short training of each candidate: AdamW with a one-cycle schedule, chosen for
ranking candidates after a few epochs. ``final`` is what a chosen model is trained with (``retrain``,
``distill``, the arena): SGD with Nesterov momentum, a learning rate scaled with the batch size, label
smoothing, a short warm-up then cosine decay, an exponential moving average of the weights and flip
test-time augmentation; benchmarks/recipe_convergence.py measured it (see REPORT.md).

A recipe fills the TrainConfig fields it names; a setting given beside it (a flag, a YAML key) wins.
"""

from __future__ import annotations

from typing import Any

from compactnas.core.errors import ConfigError

RECIPES: dict[str, dict[str, Any]] = {
    "proxy": {
        "optimizer": "adamw",
        "lr": 0.005,
        "batch_size": 64,
        "weight_decay": 5e-4,
        "label_smoothing": 0.1,
        "warmup": 0.15,
        "ema": 0.0,
        "tta": False,
    },
    "final": {
        "optimizer": "sgd",
        "lr": 0.2,
        "batch_size": 256,
        "weight_decay": 5e-4,
        "label_smoothing": 0.1,
        "warmup": 0.1,
        "ema": 0.998,
        "tta": True,
    },
}

RECIPE_KEYS = frozenset(k for r in RECIPES.values() for k in r)


def recipe(name: str) -> dict[str, Any]:
    """The settings of recipe ``name`` (a copy), or ConfigError naming the known ones."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}' (use one of: {', '.join(RECIPES)})")
    return dict(RECIPES[name])


def with_recipe(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` settings over recipe ``name``'s: what is set explicitly wins."""
    return {**recipe(name), **{k: v for k, v in given.items() if v is not None}}
