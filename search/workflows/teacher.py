"""Training (or finding in the cache) the large teacher for a data set, as one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compactnas.core.data import load_data
from compactnas.core.errors import ConfigError
from compactnas.evaluators.teacher import DEFAULT_MODEL, TeacherConfig, get_teacher


def train_teacher(
    data: str,
    cache_dir: str | Path,
    *,
    model: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    resize: int | None = None,
    threads: int = 1,
    force: bool = False,
    train_device: str = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """The teacher for data source ``data``, trained unless cached under ``cache_dir`` (or ``force``).

    Returns ``{"path", "model", "cached", "metrics"}``; metrics hold params, accuracy and test_accuracy.
    """
    import torch

    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    d = TeacherConfig()
    tc = TeacherConfig(
        model=model or DEFAULT_MODEL,
        epochs=d.epochs if epochs is None else epochs,
        lr=d.lr if lr is None else lr,
        seed=seed,
        train_device=train_device,
        precision=precision,
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dataset = load_data(data, seed=seed, resize=resize)
        _, path, meta, cached = get_teacher(
            dataset, cache_dir=cache_dir, source=data, resize=resize, config=tc, force=force
        )
    finally:
        torch.set_num_threads(previous)
    return {
        "path": Path(path),
        "model": meta.get("model"),
        "cached": bool(cached),
        "metrics": dict(meta.get("metrics", {})),
    }
