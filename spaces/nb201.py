"""The ``nb201`` space: NAS-Bench-201's cell in its macro skeleton, and NAS-Bench-201's own notation.

Skeleton (Dong & Yang, ICLR 2020): a 3x3 stem of 16 channels, three stages of five cells at 16, 32
and 64 channels joined by residual reduction blocks (stride 2), batch norm and ReLU, global pooling and
a linear classifier. One cell (six edges, five operators each: 15,625 networks) is repeated everywhere.

In our grammar a network is::

    stem_k3_s1_c16-cell_r5_c16_oXXXXXX-res_r1_s2_c32-cell_r5_c32_oXXXXXX-res_r1_s2_c64-cell_r5_c64_oXXXXXX-head_c0

and in NAS-Bench-201's notation only its cell: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compactnas.core.errors import ArchStringError
from compactnas.spaces.arch import ArchSpec, BlockSpec, HeadSpec, StemSpec, as_spec
from compactnas.spaces.cells import EDGES, OPS
from compactnas.spaces.registry import register_space

__all__ = ["EDGES", "OPS", "nb201_spec", "parse_nb201_string", "to_nb201_string"]

CHANNELS = 16
CELLS_PER_STAGE = 5
_NODE = re.compile(r"^\|(.+)\|$")


def nb201_spec(
    ops: str | tuple[str, ...], *, channels: int = CHANNELS, cells: int = CELLS_PER_STAGE
) -> ArchSpec:
    """The skeleton around one cell, given as six operator names or as six digits (index in OPS)."""
    codes = ops if isinstance(ops, str) else "".join(str(OPS.index(o)) for o in ops)
    stages: list[BlockSpec] = []
    for i, c in enumerate((channels, 2 * channels, 4 * channels)):
        if i:
            stages.append(BlockSpec(kind="res", repeats=1, stride=2, channels=c))
        stages.append(BlockSpec(kind="cell", repeats=cells, channels=c, ops=codes))
    return ArchSpec(
        stem=StemSpec(kernel=3, stride=1, channels=channels),
        stages=tuple(stages),
        head=HeadSpec(channels=0),
    )


def parse_nb201_string(text: str) -> ArchSpec:
    """NAS-Bench-201 notation -> the network in the standard skeleton; errors name the bad part."""
    if not isinstance(text, str):
        raise ArchStringError(f"expected a NAS-Bench-201 string, got {type(text).__name__}")
    nodes = text.split("+")
    if len(nodes) != 3:
        raise ArchStringError(
            f"NAS-Bench-201 string '{text}' needs 3 nodes joined by '+' (got {len(nodes)})"
        )
    ops: dict[tuple[int, int], str] = {}
    for j, node in enumerate(nodes, start=1):
        m = _NODE.match(node)
        if not m:
            raise ArchStringError(f"bad node '{node}' in '{text}': expected |op~i|...|")
        edges = m.group(1).split("|")
        if len(edges) != j:
            raise ArchStringError(f"bad node '{node}' in '{text}': node {j} takes {j} inputs")
        for edge in edges:
            op, _, src = edge.partition("~")
            if op not in OPS:
                raise ArchStringError(
                    f"bad operator '{op}' in '{text}' (operators: {', '.join(OPS)})"
                )
            if not src.isdigit() or int(src) >= j or (j, int(src)) in ops:
                raise ArchStringError(
                    f"bad edge '{edge}' in '{text}': node {j} reads nodes 0..{j - 1} once each"
                )
            ops[(j, int(src))] = op
    return nb201_spec(tuple(ops[e] for e in EDGES))


def cell_ops(spec: ArchSpec | str) -> tuple[str, ...] | None:
    """The six operator names of a network of one repeated cell, None if it is not one."""
    spec = as_spec(spec)
    codes = {b.ops for b in spec.stages if b.kind == "cell"}
    if len(codes) != 1:
        return None
    return tuple(OPS[int(d)] for d in codes.pop())


def to_nb201_string(spec: ArchSpec | str) -> str:
    """NAS-Bench-201 notation of a network in the standard skeleton (ArchStringError otherwise)."""
    spec = as_spec(spec)
    ops = cell_ops(spec)
    if ops is None or nb201_spec(ops) != spec:
        raise ArchStringError(
            f"'{spec}' is not a NAS-Bench-201 network (one cell repeated in the standard skeleton)"
        )
    nodes = []
    for j in (1, 2, 3):
        nodes.append(
            "|" + "|".join(f"{ops[e]}~{i}" for e, (to, i) in enumerate(EDGES) if to == j) + "|"
        )
    return "+".join(nodes)


@dataclass(frozen=True, kw_only=True)
class NB201Space:
    """Six categorical choices, one per edge in NAS-Bench-201's order (``edge_0`` .. ``edge_5``).

    The skeleton is fixed whatever the input size (NAS-Bench-201 trains it at 32x32 and 16x16); the
    space has no compression choices, so ``compress`` is accepted and ignored.
    """

    name: str = "nb201"
    image_size: int = 32
    compress: bool = False

    def sample(self, trial: Any) -> ArchSpec:
        return nb201_spec(
            tuple(trial.suggest_categorical(f"edge_{i}", OPS) for i in range(len(EDGES)))
        )


@register_space("nb201")
def nb201(**kwargs: Any) -> NB201Space:
    return NB201Space(**kwargs)
