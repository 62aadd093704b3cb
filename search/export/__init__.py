"""Exporting a trained model of a search: ``pipeline.export`` runs the steps in order; every format is
registered once in ``registry`` (the shipped ones in ``builtin``); the checks, the model card and the
MLflow model each have a module of their own."""

# The shipped formats register on first use of the package, so every reader of the registry sees them.
from compactnas.search.export import builtin as _builtin  # noqa: F401
from compactnas.search.export import exits as _exits  # noqa: F401
from compactnas.search.export import packed as _packed  # noqa: F401
