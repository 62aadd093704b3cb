"""``compactnas supernet train``: one weight-sharing supernet over a space, on the user's data.

The supernet (spaces/supernet.py) is trained with the sandwich rule and in-place distillation
(evaluators/supernet_train.py). After every epoch the whole state (weights, optimizer, schedule, random
state, history) replaces ``OUT/supernet.pt`` atomically, so a killed training resumes (``--resume``) from
its last finished epoch; the checkpoint records the data's identity, space, input shape and classes.
Training curves go to an MLflow run (the embedded store ``OUT/mlflow.db`` by default), the checkpoint
to its artifacts when training ends.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from compactnas.core.data import load_data, take_subset
from compactnas.core.errors import CheckpointError, ConfigError
from compactnas.core.files import replacing
from compactnas.evaluators import is_compressed
from compactnas.evaluators.supernet import (
    SupernetEvaluator,
    check_matches,
    inherited_model,
    read_checkpoint,
)
from compactnas.search.relog import make_tracker
from compactnas.search.supernet.epochs import (
    SupernetConfig,
    run_epochs,
    save_checkpoint,
    start_training,
)
from compactnas.search.supernet.ray_train import train_on_ray
from compactnas.spaces.elastic import CompressedElastic, ElasticSpace


def _relog(tracker: Any, run_id: str, history: list[dict[str, Any]]) -> None:
    """Epochs the checkpoint holds but MLflow missed (a kill between the two writes) are logged now."""
    if not history:
        return
    logged = tracker._guard(
        "reading a run", tracker.client.get_metric_history, run_id, "loss_largest"
    )
    steps = {m.step for m in logged or []}
    for h in history:
        if h["epoch"] not in steps:
            stats = {k: v for k, v in h.items() if k != "epoch"}
            tracker.log(run_id, metrics=stats, step=h["epoch"])


def train_supernet(
    config: SupernetConfig | None = None,
    *,
    data: Any | None = None,
    quiet: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train (or resume) a supernet; returns its metadata (history, data identity, checkpoint path)."""
    import torch

    cfg = config or SupernetConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if data is None:
        data = load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
    if not hasattr(data, "train"):
        raise ConfigError("a supernet trains on images, not on a table of measured architectures")
    try:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output folder {cfg.out_dir}: {e.strerror}") from None
    torch.set_num_threads(cfg.threads)
    # The full data's identity is checked and recorded; training may use a subset of it.
    net, trainer, meta = start_training(
        cfg, data, take_subset(data, train=cfg.subset, seed=cfg.seed)
    )
    tracker = make_tracker(cfg.out_dir, cfg.tracking_uri, cfg.experiment).connect()
    run_id = meta.get("mlflow_run_id")
    if run_id is None or tracker.status(run_id) is None:
        run_id = tracker.new_parent(f"supernet · {cfg.space} · {cfg.out_dir.name}", cfg.recipe())
        tracker.log(run_id, tags={"compactnas.kind": "supernet"}, params={"backend": cfg.backend})
        meta["mlflow_run_id"] = run_id
    if not meta["epochs_done"]:
        save_checkpoint(
            cfg, net, trainer, meta
        )  # epoch 0: the starting weights and the run, for --resume
    _relog(tracker, run_id, meta["history"])
    if meta["epochs_done"]:
        say(f"resumed: {meta['epochs_done']} of {cfg.epochs} epoch(s) already done")

    def log(epoch: int, stats: dict[str, float]) -> None:
        tracker.log(run_id, metrics=stats, step=epoch)
        say(
            f"epoch {epoch}/{cfg.epochs}: loss {stats['loss_largest']:.3f}, val acc largest "
            f"{stats['val_accuracy_largest']:.3f} smallest {stats['val_accuracy_smallest']:.3f} "
            f"({stats['epoch_seconds']:.1f} s)"
        )

    if cfg.backend == "ray":
        train_on_ray(cfg, say)  # data-parallel workers continue from the checkpoint just written
        meta = {
            k: v
            for k, v in read_supernet(cfg.out_dir).items()
            if k not in ("state_dict", "trainer")
        }
        _relog(tracker, run_id, meta["history"])
    else:
        run_epochs(cfg, data, net, trainer, meta, on_epoch=log)
    path = cfg.out_dir / "supernet.pt"
    tracker.artifact(run_id, path)
    tracker.artifact(run_id, cfg.out_dir / "supernet.json")
    tracker.end(run_id, "FINISHED")
    return {
        **meta,
        "checkpoint": str(path),
        "mlflow": {"tracking_uri": tracker.uri, "run_id": run_id},
    }


def read_supernet(folder: Path) -> dict[str, Any]:

    return read_checkpoint(folder)


def supernet_space(cfg: Any, data: Any) -> Any:
    """The sub-space of the supernet a search names (``cfg.supernet``), once it fits the search's data
    and space; a supernet made for other data or another space is refused in one line."""

    if not hasattr(data, "train"):
        raise ConfigError("a supernet search needs image data, not a table")
    blob = read_checkpoint(cfg.supernet)
    check_matches(blob, data, cfg.space)
    space = ElasticSpace.from_dict(blob["elastic"])
    if cfg.compress:  # pruning ratios read as hidden-width choices, bit-widths left to fine-tuning
        return CompressedElastic(space)
    return space


def search_data(scfg: dict[str, Any]) -> Any:
    """The data a search evaluated on: its split, and its training subset (batch-norm calibration)."""

    seed = int(scfg.get("seed", 0))
    data = load_data(scfg.get("data", "digits"), seed=seed, resize=scfg.get("resize"))
    return take_subset(data, train=scfg.get("subset"), val=scfg.get("val_subset"), seed=seed)


def inherited_model_for(
    scfg: dict[str, Any], arch: str, data: Any | None = None
) -> tuple[Any, Any]:
    """(model with inherited weights and recalibrated batch norm, data): what the supernet evaluator
    measured for ``arch`` in the search configured by ``scfg``."""

    data = data if data is not None else search_data(scfg)
    ev = SupernetEvaluator(folder=scfg["supernet"], space=scfg.get("space"))
    net, _ = ev.network(data)
    model = inherited_model(
        net, arch, data, batches=ev.calib_batches, batch_size=ev.calib_batch_size
    )
    return model, data


def inherited_checkpoint(out: Path, summary: dict[str, Any], frozen: Any) -> Path | None:
    """``OUT/checkpoints/trial_N.pt`` for a trial of a supernet search, written from the supernet the
    first time it is needed (a search keeps no weights per candidate: they are the supernet's)."""
    import torch

    number = int(frozen.user_attrs.get("duplicate_of", frozen.number))
    path = out / "checkpoints" / f"trial_{number}.pt"
    arch = frozen.user_attrs.get("arch")
    if path.is_file() or arch is None or frozen.state.name != "COMPLETE":
        return path if path.is_file() else None

    if is_compressed(arch):
        if any(
            (out / kind / f"trial_{number}.pt").is_file() for kind in ("retrained", "distilled")
        ):
            return None  # fine-tuned weights exist: export takes those
        raise CheckpointError(
            f"trial {number} is a compressed candidate: its pruned and quantized weights come from "
            f"fine-tuning (compactnas retrain {out} --init inherited), not from the supernet"
        )
    model, data = inherited_model_for(summary.get("config") or {}, arch)
    with replacing(path) as tmp:
        torch.save(
            {
                "arch": arch, "num_classes": data.num_classes, "input_shape": list(data.input_shape),
                "data": data.name, "compressed": False, "init": "inherited",
                "metrics": frozen.user_attrs.get("metrics", {}), "state_dict": model.state_dict(),
            },
            tmp,
        )  # fmt: skip
    return path
