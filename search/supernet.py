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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compactnas.core.errors import CheckpointError, ConfigError
from compactnas.core.files import replacing, write_json_atomic

SPACES = ("mobile",)  # spaces with an elastic supernet


@dataclass(frozen=True, kw_only=True)
class SupernetConfig:
    space: str = "mobile"
    data: str = "digits"
    resize: int | None = None
    subset: int | None = None  # train on this many examples (stratified); validation stays whole
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.005
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: str = "auto"
    n_random: int = 2
    temperature: float = 1.0
    calib_batches: int = 8
    threads: int = 1
    out: str = "runs/supernet"
    resume: bool = False
    tracking_uri: str | None = None
    experiment: str = "compactnas"
    backend: str = (
        "local"  # or "ray": Ray Train's TorchTrainer, data-parallel workers (gloo on CPU)
    )
    workers: int = 2  # Ray Train workers
    address: str | None = None  # Ray cluster to join (default: start a local one)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(
                f"no supernet for space '{self.space}' (supernets exist for: {', '.join(SPACES)})"
            )
        for name in ("epochs", "batch_size", "threads", "calib_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"unknown backend '{self.backend}' (use local or ray)")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.subset is not None and self.subset < 2:
            raise ConfigError(f"subset must be at least 2 examples, got {self.subset}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser().resolve()

    def recipe(self) -> dict[str, Any]:
        """The settings that define a training: a resume must keep them (threads, out and tracking aside)."""
        d = dataclasses.asdict(self)
        for k in (
            "threads",
            "out",
            "resume",
            "tracking_uri",
            "experiment",
            "backend",
            "workers",
            "address",
        ):
            d.pop(k)
        return d

    def train_config(self) -> Any:
        from compactnas.evaluators import TrainConfig

        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
            augment=self.augment, seed=self.seed,
        )  # fmt: skip


def _start(
    cfg: SupernetConfig, data: Any, train: Any, shard: tuple[int, int] = (0, 1)
) -> tuple[Any, Any, dict[str, Any]]:
    """(supernet, trainer, checkpoint metadata): fresh, or resumed from ``OUT/supernet.pt``."""
    import torch

    from compactnas.evaluators.supernet import (
        CHECKPOINT,
        FORMAT,
        check_matches,
        data_fingerprint,
        read_checkpoint,
    )
    from compactnas.evaluators.supernet_train import SandwichConfig, SandwichTrainer
    from compactnas.spaces.elastic import ElasticSpace
    from compactnas.spaces.supernet import Supernet

    path = cfg.out_dir / CHECKPOINT
    blob = None
    if cfg.resume:
        blob = read_checkpoint(cfg.out_dir)
        check_matches(blob, data, cfg.space)
        diff = sorted(k for k, v in cfg.recipe().items() if blob["recipe"].get(k) != v)
        if diff:
            k = diff[0]
            raise ConfigError(
                f"--resume must keep the training's settings: {k} was {blob['recipe'].get(k)!r}, "
                f"now {getattr(cfg, k)!r}"
            )
    elif path.exists():
        raise CheckpointError(f"{cfg.out_dir} already holds a supernet: continue it with --resume")
    space = ElasticSpace.for_image(data.image_size)
    torch.manual_seed(cfg.seed)
    net = Supernet(space, num_classes=data.num_classes, in_chans=data.input_shape[0])
    trainer = SandwichTrainer(
        net, train.train.x, train.train.y, cfg.train_config(),
        SandwichConfig(n_random=cfg.n_random, temperature=cfg.temperature), shard=shard,
    )  # fmt: skip
    if blob is not None:
        net.load_state_dict(blob["state_dict"])
        trainer.load_state_dict(blob["trainer"])
        return net, trainer, {k: v for k, v in blob.items() if k not in ("state_dict", "trainer")}
    meta = {
        "format": FORMAT,
        "space": cfg.space,
        "elastic": space.to_dict(),
        "data": data.name,
        "fingerprint": data_fingerprint(data),
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "recipe": cfg.recipe(),
        "largest": str(space.largest()),
        "smallest": str(space.smallest()),
        "epochs_done": 0,
        "history": [],
        "seconds": 0.0,
        "mlflow_run_id": None,
    }
    return net, trainer, meta


def _save(cfg: SupernetConfig, net: Any, trainer: Any, meta: dict[str, Any]) -> Path:
    import torch

    from compactnas.evaluators.supernet import CHECKPOINT

    path = cfg.out_dir / CHECKPOINT
    with replacing(path) as tmp:
        torch.save({**meta, "state_dict": net.state_dict(), "trainer": trainer.state_dict()}, tmp)
    write_json_atomic(cfg.out_dir / "supernet.json", {**meta, "checkpoint": str(path)})
    return path


def _curves(net: Any, data: Any, cfg: SupernetConfig) -> dict[str, float]:
    from compactnas.evaluators.supernet import inherited_model
    from compactnas.evaluators.train import accuracy

    out = {}
    for name, spec in (("largest", net.space.largest()), ("smallest", net.space.smallest())):
        model = inherited_model(
            net, spec, data, batches=cfg.calib_batches, batch_size=cfg.batch_size
        )
        out[f"val_accuracy_{name}"] = accuracy(model, data.val.x, data.val.y)
    return out


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


def run_epochs(
    cfg: SupernetConfig,
    data: Any,
    net: Any,
    trainer: Any,
    meta: dict[str, Any],
    *,
    save: bool = True,
    on_epoch: Any = None,
) -> None:
    """The epochs still to train; with ``save`` (rank 0), curves measured and the checkpoint replaced
    after each. ``on_epoch(epoch, stats)`` follows every epoch, on every rank."""
    for epoch in range(meta["epochs_done"] + 1, cfg.epochs + 1):
        t0 = time.time()
        stats = trainer.epoch()
        if save:
            stats.update(_curves(net, data, cfg))
        stats["epoch_seconds"] = round(time.time() - t0, 2)
        meta["epochs_done"] = epoch
        meta["seconds"] = round(meta["seconds"] + stats["epoch_seconds"], 2)
        meta["history"].append({"epoch": epoch, **stats})
        if save:
            _save(cfg, net, trainer, meta)
        if on_epoch is not None:
            on_epoch(epoch, stats)


def train_supernet(
    config: SupernetConfig | None = None,
    *,
    data: Any | None = None,
    quiet: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train (or resume) a supernet; returns its metadata (history, data identity, checkpoint path)."""
    import torch

    from compactnas.core.data import load_data, take_subset
    from compactnas.search.relog import make_tracker

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
    net, trainer, meta = _start(cfg, data, take_subset(data, train=cfg.subset, seed=cfg.seed))
    tracker = make_tracker(cfg.out_dir, cfg.tracking_uri, cfg.experiment).connect()
    run_id = meta.get("mlflow_run_id")
    if run_id is None or tracker.status(run_id) is None:
        run_id = tracker.new_parent(f"supernet · {cfg.space} · {cfg.out_dir.name}", cfg.recipe())
        tracker.log(run_id, tags={"compactnas.kind": "supernet"}, params={"backend": cfg.backend})
        meta["mlflow_run_id"] = run_id
    if not meta["epochs_done"]:
        _save(cfg, net, trainer, meta)  # epoch 0: the starting weights and the run, for --resume
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
        from compactnas.search.supernet_ray import train_on_ray

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
    from compactnas.evaluators.supernet import read_checkpoint

    return read_checkpoint(folder)


def supernet_space(cfg: Any, data: Any) -> Any:
    """The sub-space of the supernet a search names (``cfg.supernet``), once it fits the search's data
    and space; a supernet made for other data or another space is refused in one line."""
    from compactnas.evaluators.supernet import check_matches, read_checkpoint
    from compactnas.spaces.elastic import ElasticSpace

    if not hasattr(data, "train"):
        raise ConfigError("a supernet search needs image data, not a table")
    blob = read_checkpoint(cfg.supernet)
    check_matches(blob, data, cfg.space)
    space = ElasticSpace.from_dict(blob["elastic"])
    if cfg.compress:  # pruning ratios read as hidden-width choices, bit-widths left to fine-tuning
        from compactnas.spaces.elastic import CompressedElastic

        return CompressedElastic(space)
    return space


def search_data(scfg: dict[str, Any]) -> Any:
    """The data a search evaluated on: its split, and its training subset (batch-norm calibration)."""
    from compactnas.core.data import load_data, take_subset

    seed = int(scfg.get("seed", 0))
    data = load_data(scfg.get("data", "digits"), seed=seed, resize=scfg.get("resize"))
    return take_subset(data, train=scfg.get("subset"), val=scfg.get("val_subset"), seed=seed)


def inherited_model_for(
    scfg: dict[str, Any], arch: str, data: Any | None = None
) -> tuple[Any, Any]:
    """(model with inherited weights and recalibrated batch norm, data): what the supernet evaluator
    measured for ``arch`` in the search configured by ``scfg``."""
    from compactnas.evaluators.supernet import SupernetEvaluator, inherited_model

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
    from compactnas.evaluators import is_compressed

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
