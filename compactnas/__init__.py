"""compactnas: neural-architecture search for compact models."""

__version__ = "0.1.0"

from compactnas.errors import CompactnasError  # noqa: E402
from compactnas.spaces import ArchSpec, create_model, create_space, list_spaces, parse_arch  # noqa: E402

__all__ = ["ArchSpec", "CompactnasError", "create_model", "create_space", "list_spaces", "parse_arch"]
