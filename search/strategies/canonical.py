"""Canonical parameter assignments: equivalent architectures share one, so none is evaluated twice.

A space whose different answers can build the same network names a function here that maps an
assignment to its canonical one (the same network, with every redundant choice fixed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# NAS-Bench-201's edges as (to, from) in its edge order; parameter edge_i chooses the op of edge i.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_NONE = "none"


def nb201_canonical(params: dict[str, Any]) -> dict[str, Any]:
    """The NAS-Bench-201 cell with dead edges set to ``none`` and nodes 1 and 2 in a fixed order.

    An edge whose source receives nothing from the input, or whose target never reaches the output,
    carries zeros or is never read: its op does not change the network. If the output receives nothing,
    every cell computes the same zero (all edges ``none``). When no edge joins node 1 to node 2 the two
    nodes are interchangeable, and the lexically smaller order is kept.
    """
    names = [f"edge_{i}" for i in range(len(NB201_EDGES))]
    if any(n not in params for n in names):
        return params
    ops = [params[n] for n in names]
    fed = {0}
    for j in (1, 2, 3):
        if any(
            op != _NONE and t == j and s in fed for op, (t, s) in zip(ops, NB201_EDGES, strict=True)
        ):
            fed.add(j)
    read = {3}
    for i in (2, 1, 0):
        if any(
            op != _NONE and s == i and t in read
            for op, (t, s) in zip(ops, NB201_EDGES, strict=True)
        ):
            read.add(i)
    if 3 not in fed:
        ops = [_NONE] * len(ops)
    else:
        ops = [
            op if s in fed and t in read else _NONE
            for op, (t, s) in zip(ops, NB201_EDGES, strict=True)
        ]
        if ops[2] == _NONE:
            swapped = [ops[1], ops[0], _NONE, ops[3], ops[5], ops[4]]
            ops = min(ops, swapped)
    return {**params, **dict(zip(names, ops, strict=True))}


CANONICAL: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"nb201": nb201_canonical}


def canonical_for(space_name: str | None) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    return CANONICAL.get(space_name or "")
