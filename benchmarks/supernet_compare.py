"""The supernet benchmark's from-scratch side: stand-alone training in worker processes, the search at
equal wall-clock, the picks of both fronts retrained, their hypervolume and the arena's baselines.

Stand-alone networks train with the arena's final recipe (the search's optimizer, augmentation and label
smoothing; F epochs; the arena's training subset), one per process, two at a time on two cores. They are
scored on the whole validation split; the test split is left alone (it would cost more than training
the smaller networks and is not what either side ranks by).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

_DATA: Any = None


def _init(source: str, subset: int | None, seed: int) -> None:
    import torch

    from compactnas.core.data import load_data, take_subset

    global _DATA
    torch.set_num_threads(1)
    _DATA = take_subset(load_data(source, seed=seed), train=subset, seed=seed)


def _train(arch: str, recipe: dict[str, Any]) -> dict[str, Any]:
    from compactnas.evaluators import TrainConfig
    from compactnas.search.workflows.retrain import train_final
    from compactnas.spaces import parse_arch

    _, m = train_final(parse_arch(arch), _DATA, TrainConfig(**recipe), test=False)
    return {"arch": arch, **m}


def train_standalone(
    archs: list[str], source: str, recipe: dict[str, Any], subset: int | None, on_done: Any
) -> list[dict[str, Any]]:
    """Each architecture trained from scratch (two processes at a time); ``on_done(result)`` as each
    finishes, so the caller records it at once. Results come back in the order of ``archs``."""
    procs = max(1, min(2, os.cpu_count() or 1))
    out: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(procs, initializer=_init, initargs=(source, subset, 0)) as pool:
        futures = [pool.submit(_train, a, recipe) for a in archs]
        for f in futures:
            r = f.result()
            out[r["arch"]] = r
            on_done(r)
    return [out[a] for a in archs]


def spread_picks(front: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Up to ``k`` front members spread evenly over latency (the fastest and the slowest included)."""
    rows = sorted(front, key=lambda r: (r["latency_ms"], -r["accuracy"]))
    if len(rows) <= k:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (k - 1)) for i in range(k)})
    return [rows[i] for i in idx]


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy, latency) points, maximising accuracy and minimising latency,
    inside the box from ``ref`` = (lowest accuracy, highest latency) counted, in accuracy x ms."""
    import numpy as np

    from compactnas.search.results import hypervolume

    acc_ref, lat_ref = ref
    box = np.array([1.0 - acc_ref, lat_ref])  # minimised: accuracy above acc_ref, latency
    pts = np.array([(1.0 - a, lat) for a, lat in points]).reshape(-1, 2)
    return hypervolume(pts, box) * float(box.prod())


def arena_baselines(path: Path, data_name: str, recipe: dict[str, Any], subset: int | None,
                    device: str) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """The arena's baselines (validation accuracy, the device's predicted latency), when its file was
    made on the same data with the same final recipe and training subset; else ([], why not)."""
    import json

    if not path.is_file():
        return [], f"{path.name} is absent"
    doc = json.loads(path.read_text())
    theirs = {k: v for k, v in (doc.get("recipe") or {}).items() if k != "seed"}
    ours = {k: v for k, v in recipe.items() if k != "seed"}
    if (
        doc.get("data_name") != data_name
        or theirs != ours
        or doc.get("final_train_examples")
        != (subset if subset is not None else doc.get("train_examples"))
    ):
        return [], f"{path.name} was made with other data, recipe or training subset"
    rows = []
    for name, b in (doc.get("baselines") or {}).items():
        pred = b.get(f"predicted_{device}") or {}
        if "@" in name or not b.get("accuracy") or pred.get("latency_ms") is None:
            continue
        rows.append(
            {"name": name, "accuracy": b["accuracy"]["mean"], "latency_ms": pred["latency_ms"]}
        )
    return rows, None


def dominated_baselines(picks: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> list[str]:
    """Baselines that some retrained pick beats on both accuracy and latency."""
    return [
        b["name"]
        for b in baselines
        if any(p["accuracy"] > b["accuracy"] and p["latency_ms"] < b["latency_ms"] for p in picks)
    ]


def plot(path: Path, sides: dict[str, list[dict[str, Any]]], baselines: list[dict[str, Any]],
         device: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, picks), marker in zip(sides.items(), ("o", "s"), strict=False):
        pts = sorted((p["latency_ms"], p["accuracy"]) for p in picks)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, label=label)
    if baselines:
        ax.scatter([b["latency_ms"] for b in baselines], [b["accuracy"] for b in baselines],
                   marker="x", color="grey", label="arena baselines")  # fmt: skip
        for b in baselines:
            ax.annotate(b["name"], (b["latency_ms"], b["accuracy"]), fontsize=6, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel(f"{device} latency, ms (device profile)")
    ax.set_ylabel("validation accuracy after retraining")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
