"""Search spaces, the architecture-string grammar and model building."""

from compactnas.spaces import mobile as _mobile  # noqa: F401  (registers 'mobile')
from compactnas.spaces import nb201 as _nb201  # noqa: F401  (registers 'nb201')
from compactnas.spaces import squeeze as _squeeze  # noqa: F401  (registers 'squeeze')
from compactnas.spaces.arch import (
    ArchSpec,
    BlockSpec,
    HeadSpec,
    StemSpec,
    as_spec,
    format_arch,
    format_stage,
    parse_arch,
)
from compactnas.spaces.build import CompactNet, Fire, create_model
from compactnas.spaces.registry import (
    SearchSpace,
    create_space,
    list_spaces,
    register_space,
    unregister_space,
)

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "CompactNet",
    "Fire",
    "HeadSpec",
    "SearchSpace",
    "StemSpec",
    "as_spec",
    "create_model",
    "create_space",
    "format_arch",
    "format_stage",
    "list_spaces",
    "parse_arch",
    "register_space",
    "unregister_space",
]
