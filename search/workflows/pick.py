"""Choosing one model from a search's Pareto front: by one objective, or the knee.

The knee is the front point that bulges furthest towards the ideal point. Every objective is turned
into a quantity to minimise (accuracy becomes error) and scaled to [0, 1] over the front, so that no unit
dominates the geometry. The extremes are, per objective, the front point best in it; they span a line
(two objectives) or a hyperplane (k objectives). The knee is the point with the largest distance from
that line or hyperplane, counted positive on the ideal side (Das 1999; Branke et al. 2004). When the
extremes do not span a hyperplane (two objectives share their best point) the plain distance to the
smaller affine hull they span is used. Ties go to the earlier trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from compactnas.core.errors import ConfigError

PICKS = ("accuracy", "latency", "size", "knee")

# pick -> (metric, maximise?)
_SINGLE = {
    "accuracy": ("accuracy", True),
    "latency": ("latency_ms", False),
    "size": ("size_bytes", False),
}


def knee_index(points: np.ndarray) -> int:
    """Row index of the knee of ``points`` (rows: front points; columns: objectives, all minimised)."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or len(pts) == 0:
        raise ValueError("knee_index needs a non-empty 2-d array of points")
    if len(pts) <= 2:
        return 0  # both points are extremes: each lies on the line between them
    norm = _normalise(pts)
    if norm.shape[1] == 0:
        return 0
    k = norm.shape[1]
    extremes = []
    for j in range(k):
        # Best in objective j; among equals, the best in the others, so the extreme is non-dominated.
        order = np.lexsort((norm.sum(axis=1), norm[:, j]))
        if order[0] not in extremes:
            extremes.append(int(order[0]))
    anchor = norm[extremes[0]]
    basis = norm[extremes[1:]] - anchor
    if len(basis) == 0:
        return int(np.argmin(np.linalg.norm(norm, axis=1)))
    rank = np.linalg.matrix_rank(basis)
    if rank == k - 1:
        # Hyperplane normal: the direction orthogonal to every edge between extremes.
        _, _, vt = np.linalg.svd(basis)
        normal = vt[-1]
        if normal @ (np.zeros(k) - anchor) < 0:
            normal = -normal  # point towards the ideal (origin after normalisation)
        dist = (norm - anchor) @ normal
    else:
        q, _ = np.linalg.qr(basis.T)
        q = q[:, :rank]
        rel = norm - anchor
        dist = np.linalg.norm(rel - rel @ q @ q.T, axis=1)
    return int(np.flatnonzero(dist >= dist.max() - 1e-12)[0])


def _normalise(pts: np.ndarray) -> np.ndarray:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = hi - lo
    keep = span > 0
    return (pts[:, keep] - lo[keep]) / span[keep]


def pick_from_front(
    front: Sequence[dict[str, Any]], pick: str, objectives: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The front row chosen by ``pick``; ``objectives`` are summary.json's {name, metric, direction}."""
    rows = sorted(front, key=lambda r: r["trial"])
    if not rows:
        raise ConfigError("the search's Pareto front is empty: no trial completed")
    if pick in _SINGLE:
        metric, maximise = _SINGLE[pick]
        usable = [r for r in rows if r.get(metric) is not None]
        if not usable:
            raise ConfigError(f"no front model has a '{metric}' value to pick by")
        sign = -1.0 if maximise else 1.0
        return min(usable, key=lambda r: (sign * r[metric], r["trial"]))
    if pick != "knee":
        raise ConfigError(f"unknown pick '{pick}' (use one of: {', '.join(PICKS)})")
    cols = [o for o in objectives if all(r.get(o["metric"]) is not None for r in rows)]
    if not cols:
        raise ConfigError("the front lacks the objective values needed to find its knee")
    pts = np.array(
        [
            [-r[o["metric"]] if o["direction"] == "maximize" else r[o["metric"]] for o in cols]
            for r in rows
        ],
        dtype=float,
    )
    return rows[knee_index(pts)]
