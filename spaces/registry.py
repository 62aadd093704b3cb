"""Search-space registry (timm's register_model style): spaces are found by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from compactnas.core.errors import RegistryError
from compactnas.spaces.arch import ArchSpec


@runtime_checkable
class SearchSpace(Protocol):
    """A pure define-by-run function over an Optuna-like trial: only ``trial.suggest_*`` calls."""

    name: str

    def sample(self, trial: Any) -> ArchSpec: ...


_SPACES: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str) -> Callable:
    def deco(factory: Callable[..., SearchSpace]) -> Callable[..., SearchSpace]:
        if name in _SPACES:
            raise ValueError(f"search space '{name}' is already registered")
        _SPACES[name] = factory
        return factory

    return deco


def unregister_space(name: str) -> None:
    """Remove a registered space (for spaces registered by a program or a test for a while)."""
    if name not in _SPACES:
        raise RegistryError(f"unknown search space '{name}'")
    del _SPACES[name]


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def create_space(space: str | SearchSpace, **kwargs: Any) -> SearchSpace:
    """A space by registered name (keyword arguments go to its factory), or a space object as is."""
    if not isinstance(space, str):
        if not callable(getattr(space, "sample", None)):
            raise RegistryError(f"{space!r} is not a search space (it has no sample(trial) method)")
        return space
    if space not in _SPACES:
        raise RegistryError(f"unknown search space '{space}' (known: {', '.join(list_spaces())})")
    return _SPACES[space](**kwargs)
