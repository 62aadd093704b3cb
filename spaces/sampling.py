"""Drawing architectures without an optimiser: a seeded random stand-in for an Optuna trial.

Spaces are define-by-run functions over ``trial.suggest_*``; this trial answers each call uniformly at
random, so table building and validation can sample a space without importing Optuna.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from compactnas.spaces.arch import ArchSpec, format_arch
from compactnas.spaces.registry import SearchSpace


class RandomTrial:
    """Answers ``suggest_categorical/int/float`` uniformly at random and records the answers."""

    def __init__(self, rng: random.Random):
        self._rng = rng
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.params.setdefault(name, self._rng.choice(list(choices)))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self.params.setdefault(name, self._rng.randrange(low, high + 1, step))

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return self.params.setdefault(name, self._rng.uniform(low, high))


def random_specs(space: SearchSpace, *, seed: int):
    """An endless stream of architectures drawn at random from the space (repeats possible)."""
    rng = random.Random(seed)
    while True:
        yield space.sample(RandomTrial(rng))


def sample_archs(space: SearchSpace, n: int, *, seed: int) -> list[ArchSpec]:
    """``n`` distinct architectures drawn at random (repeats are skipped; fewer if the space is small)."""
    seen: dict[str, ArchSpec] = {}
    stream = random_specs(space, seed=seed)
    for _ in range(100 * n):
        if len(seen) >= n:
            break
        spec = next(stream)
        seen.setdefault(format_arch(spec), spec)
    return list(seen.values())
