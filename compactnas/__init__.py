"""compactnas: neural-architecture search for compact models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from compactnas.errors import CompactnasError  # noqa: E402
from compactnas.spaces import ArchSpec, create_model, create_space, list_spaces, parse_arch  # noqa: E402

# Heavier entry points (Optuna, MLflow, onnxruntime) load on first use.
_LAZY = {
    "run_search": ("compactnas.search", "run_search"),
    "SearchConfig": ("compactnas.search", "SearchConfig"),
    "load_data": ("compactnas.data", "load_data"),
    "load_profile": ("compactnas.hw_profiles", "load_profile"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'compactnas' has no attribute '{name}'")


__all__ = [
    "ArchSpec",
    "CompactnasError",
    "SearchConfig",
    "create_model",
    "create_space",
    "list_spaces",
    "load_data",
    "load_profile",
    "parse_arch",
    "run_search",
]
