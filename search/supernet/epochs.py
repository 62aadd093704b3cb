"""A supernet's training state and epochs: its settings, starting or resuming from the checkpoint, and
the epochs that replace the checkpoint one by one; shared by training here and on Ray (ray_train.py)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compactnas.core.errors import CheckpointError, ConfigError
from compactnas.core.files import replacing, write_json_atomic
from compactnas.evaluators import TrainConfig
from compactnas.evaluators.supernet import (
    CHECKPOINT,
    FORMAT,
    check_matches,
    data_fingerprint,
    inherited_model,
    read_checkpoint,
)
from compactnas.evaluators.supernet_train import SandwichConfig, SandwichTrainer
from compactnas.evaluators.train import accuracy
from compactnas.spaces.elastic import ElasticSpace
from compactnas.spaces.supernet import Supernet

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
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
            augment=self.augment, seed=self.seed,
        )  # fmt: skip


def start_training(
    cfg: SupernetConfig, data: Any, train: Any, shard: tuple[int, int] = (0, 1)
) -> tuple[Any, Any, dict[str, Any]]:
    """(supernet, trainer, checkpoint metadata): fresh, or resumed from ``OUT/supernet.pt``."""
    import torch

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


def save_checkpoint(cfg: SupernetConfig, net: Any, trainer: Any, meta: dict[str, Any]) -> Path:
    import torch

    path = cfg.out_dir / CHECKPOINT
    with replacing(path) as tmp:
        torch.save({**meta, "state_dict": net.state_dict(), "trainer": trainer.state_dict()}, tmp)
    write_json_atomic(cfg.out_dir / "supernet.json", {**meta, "checkpoint": str(path)})
    return path


def curves(net: Any, data: Any, cfg: SupernetConfig) -> dict[str, float]:

    out = {}
    for name, spec in (("largest", net.space.largest()), ("smallest", net.space.smallest())):
        model = inherited_model(
            net, spec, data, batches=cfg.calib_batches, batch_size=cfg.batch_size
        )
        out[f"val_accuracy_{name}"] = accuracy(model, data.val.x, data.val.y)
    return out


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
            stats.update(curves(net, data, cfg))
        stats["epoch_seconds"] = round(time.time() - t0, 2)
        meta["epochs_done"] = epoch
        meta["seconds"] = round(meta["seconds"] + stats["epoch_seconds"], 2)
        meta["history"].append({"epoch": epoch, **stats})
        if save:
            save_checkpoint(cfg, net, trainer, meta)
        if on_epoch is not None:
            on_epoch(epoch, stats)
