"""Result tables, the Pareto front, hypervolume, the front plot and summary.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compactnas.core.errors import ConfigError
from compactnas.search.objectives import Objective

FRONT_COLUMNS = [
    "trial", "arch", "accuracy", "test_accuracy", "latency_ms", "size_bytes", "params", "macs",
    "energy_mj", "peak_sram_kb", "flash_kb",
]  # fmt: skip


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of rows not dominated by any other row (all columns minimised)."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        dominated_by = np.all(points <= points[i], axis=1) & np.any(points < points[i], axis=1)
        if dominated_by.any():
            keep[i] = False
    return keep


def to_minimisation(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    return np.column_stack([df[o.metric].map(o.to_min).to_numpy(dtype=float) for o in objectives])


def pareto_front(complete: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Non-dominated completed trials, one row per distinct architecture, best accuracy first."""
    if complete.empty:
        return complete.copy()
    unique = complete.sort_values("trial").drop_duplicates("arch", keep="first")
    mask = non_dominated(to_minimisation(unique, objectives))
    front = unique[mask]
    sort = [o.metric for o in objectives]
    asc = [o.direction == "minimize" for o in objectives]
    return front.sort_values(sort, ascending=asc).reset_index(drop=True)


def hypervolume(
    points: np.ndarray, reference: np.ndarray, lower: np.ndarray | None = None
) -> float:
    """Hypervolume of minimisation points, normalised to the box [lower, reference] (1.0 = whole box)."""
    from optuna._hypervolume import (
        compute_hypervolume,  # one wrapped private call; optuna is pinned
    )

    if len(points) == 0:
        return 0.0
    lower = np.zeros_like(reference) if lower is None else lower
    span = np.where(reference - lower > 0, reference - lower, 1.0)
    norm = (np.asarray(points, dtype=float) - lower) / span
    inside = np.all(norm < 1.0, axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(norm[inside], np.ones(norm.shape[1])))


def reference_point(complete: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """In minimisation space: the worst value an objective can take where it has a bound (error 1.0),
    otherwise its worst completed value pushed 10% further out."""
    ref = []
    for o in objectives:
        if o.bounds is not None:
            ref.append(o.to_min(o.bounds[0]))
            continue
        worst = float(complete[o.metric].map(o.to_min).max()) if not complete.empty else 1.0
        ref.append(worst + 0.1 * abs(worst) if worst != 0 else 1.0)
    return np.array(ref)


def _clean(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def front_records(front: pd.DataFrame) -> list[dict[str, Any]]:
    cols = [c for c in FRONT_COLUMNS if c in front.columns]
    out = []
    for row in front[cols].to_dict("records"):
        rec = {k: _clean(v) for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
        for k in ("trial", "params", "macs", "size_bytes"):
            if k in rec and rec[k] is not None:
                rec[k] = int(rec[k])
        out.append(rec)
    return out


def write_results(
    out_dir: Path,
    trials: pd.DataFrame,
    objectives: Sequence[Objective],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """pareto.csv, pareto.png, trials.csv and summary.json in ``out_dir``; returns the summary."""
    complete = trials[trials["state"] == "COMPLETE"] if not trials.empty else trials
    front = pareto_front(complete, objectives)
    ref = reference_point(complete, objectives)
    hv = hypervolume(to_minimisation(front, objectives), ref) if not front.empty else 0.0
    cols = [c for c in FRONT_COLUMNS if c in front.columns]
    front[cols].to_csv(out_dir / "pareto.csv", index=False)
    trials.to_csv(out_dir / "trials.csv", index=False)
    summary = {
        "n_trials": int(len(trials)),
        "n_complete": int((trials["state"] == "COMPLETE").sum()) if not trials.empty else 0,
        "n_failed": int((trials["state"] == "FAIL").sum()) if not trials.empty else 0,
        "n_infeasible": int((trials["state"] == "INFEASIBLE").sum()) if not trials.empty else 0,
        "n_stopped_early": int((trials["state"] == "STOPPED").sum()) if not trials.empty else 0,
        "objectives": [
            {"name": o.name, "metric": o.metric, "direction": o.direction} for o in objectives
        ],
        "hypervolume": hv,
        "hypervolume_reference": {o.metric: float(r) for o, r in zip(objectives, ref, strict=True)},
        "pareto": front_records(front),
        **(extra or {}),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_front(
        out_dir / "pareto.png", complete, front, objectives, device=(extra or {}).get("device")
    )
    return summary


def plot_front(
    path: Path,
    complete: pd.DataFrame,
    front: pd.DataFrame,
    objectives: Sequence[Objective],
    *,
    device: str | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [o for o in objectives if o.name != "accuracy"] or [o for o in objectives]
    fig, axes = plt.subplots(1, len(others), figsize=(5 * len(others), 4), squeeze=False)
    for ax, o in zip(axes[0], others, strict=True):
        if not complete.empty:
            ax.scatter(complete[o.metric], complete["accuracy"], s=14, c="0.7", label="evaluated")
        if not front.empty:
            f = front.sort_values(o.metric)
            ax.scatter(
                f[o.metric], f["accuracy"], s=30, c="tab:red", label="Pareto front (all objectives)"
            )
        ax.set_xlabel(o.label)
        ax.set_ylabel("validation accuracy")
        if o.metric in ("size_bytes", "params", "macs"):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    if not complete.empty:
        axes[0][0].legend(loc="lower right", fontsize=8)
    where = "this host" if device in (None, "host") else f"device {device}"
    fig.suptitle(
        f"Pareto front on {where}: {', '.join(o.label for o in objectives)}\n"
        f"{len(complete)} evaluated candidates, {len(front)} on the front",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_summary(out_dir: Path) -> dict[str, Any]:

    p = Path(out_dir) / "summary.json"
    if not p.is_file():
        raise ConfigError(f"{out_dir} holds no search results (no summary.json)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{p} is not valid JSON") from None
