"""Search strategies by name: which Optuna sampler proposes the next candidate.

``create_sampler(name, seed=, trials=, workers=, space_name=)`` builds one, with its settings adapted to
the trial budget and to the number of parallel workers. Names: ``guided`` (our surrogate-guided sampler,
the default), ``nsga2`` (``nsga2-p16`` picks the population), ``nsga3`` (``nsga3-p16`` likewise), ``tpe``
(multivariate, multi-objective), ``gp`` (Optuna's Gaussian-process sampler, log expected hypervolume
improvement for several objectives) and ``random``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from compactnas.core.errors import ConfigError
from compactnas.search.strategies.canonical import canonical_for
from compactnas.search.strategies.guided import GuidedSampler


def _startup(trials: int, workers: int, most: int = 10) -> int:
    """Random candidates before a model takes over: a tenth of the budget, 4 to ``most``, and at
    least one per worker so the first wave needs no results."""
    return max(min(most, max(4, trials // 5)), workers)


def _guided(seed, trials, workers, space_name, population):
    return GuidedSampler(
        seed=seed,
        n_startup_trials=_startup(trials, workers),
        canonical=canonical_for(space_name),
    )


def _nsga2(seed, trials, workers, space_name, population):
    return optuna.samplers.NSGAIISampler(population_size=population or 8, seed=seed)


def _nsga3(seed, trials, workers, space_name, population):
    with warnings.catch_warnings():  # experimental in Optuna: the warning says nothing to a user
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(population_size=population or 8, seed=seed)


def _tpe(seed, trials, workers, space_name, population):
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=_startup(trials, workers),
        multivariate=True,
        # Running trials count as bad: parallel workers get different proposals.
        constant_liar=workers > 1,
    )


def _gp(seed, trials, workers, space_name, population):
    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=_startup(trials, workers), warn_independent_sampling=False
    )


def _random(seed, trials, workers, space_name, population):
    return optuna.samplers.RandomSampler(seed=seed)


STRATEGIES: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "guided": _guided,
    "nsga2": _nsga2,
    "nsga3": _nsga3,
    "tpe": _tpe,
    "gp": _gp,
    "random": _random,
}

_POPULATION = re.compile(r"^(nsga2|nsga3)-p(\d+)$")


def parse_strategy(name: str) -> tuple[str, int | None]:
    """``nsga2-p16`` -> ("nsga2", 16); a plain name -> (name, None). Unknown names are a ConfigError."""
    m = _POPULATION.match(name)
    base, population = (m.group(1), int(m.group(2))) if m else (name, None)
    if base not in STRATEGIES:
        raise ConfigError(
            f"unknown sampler '{name}' (use one of: {', '.join(STRATEGIES)}; nsga2-pN sets a population)"
        )
    if population is not None and population < 2:
        raise ConfigError(f"population must be >= 2, got {population} in '{name}'")
    return base, population


def workers_of(cfg: Any) -> int:
    """How many candidates a search evaluates at once: Ray's concurrency, or the local workers."""
    if getattr(cfg, "backend", "local") == "ray":
        return max(1, int(getattr(cfg, "concurrency", 1)))
    workers = getattr(cfg, "workers", 1)
    return max(1, int(workers if workers is not None else (os.cpu_count() or 1)))


def create_sampler(
    name: str,
    *,
    seed: int | None = None,
    trials: int = 30,
    workers: int = 1,
    space_name: str | None = None,
    population: int | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``, set up for ``trials`` candidates and ``workers`` at once.

    ``population`` (NSGA-II/III) applies unless the name carries its own (``nsga2-p16``).
    """
    base, named_population = parse_strategy(name)
    return STRATEGIES[base](
        seed, max(1, trials), max(1, workers), space_name, named_population or population
    )
