"""compactnas: neural-architecture search for compact models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

import logging as _logging  # noqa: E402

# A CUDA build of torch on a CPU-only machine warns at import of cpp_extension (pulled in by
# torch.utils.benchmark and Ray) that it finds no CUDA runtime: expected here, so kept quiet.
_logging.getLogger("torch.utils.cpp_extension").setLevel(_logging.ERROR)

# Everything loads on first use, so that importing a lower layer (compactnas.core, compactnas.spaces)
# never pulls in the layers above it.
_LAZY = {
    "ArchSpec": ("compactnas.spaces", "ArchSpec"),
    "CompactnasError": ("compactnas.core.errors", "CompactnasError"),
    "create_model": ("compactnas.spaces", "create_model"),
    "create_space": ("compactnas.spaces", "create_space"),
    "list_spaces": ("compactnas.spaces", "list_spaces"),
    "parse_arch": ("compactnas.spaces", "parse_arch"),
    "run_search": ("compactnas.search", "run_search"),
    "SearchConfig": ("compactnas.search", "SearchConfig"),
    "load_data": ("compactnas.core.data", "load_data"),
    "load_profile": ("compactnas.hw_profiles", "load_profile"),
    "export": ("compactnas.search.export.pipeline", "export"),
    "load_exported": ("compactnas.search.export.loading", "load_exported"),
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
    "export",
    "list_spaces",
    "load_data",
    "load_exported",
    "load_profile",
    "parse_arch",
    "run_search",
]
