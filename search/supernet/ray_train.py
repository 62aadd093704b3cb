"""Supernet training on Ray Train: a TorchTrainer whose workers share every batch (gloo on CPU).

The driver has already checked the data and settings and written the starting checkpoint
(``OUT/supernet.pt``, epoch 0 or the last finished one); every worker loads it, takes its share of each
batch (the same sub-networks are drawn on every rank, from the same random state), and the gradients
are averaged across workers before each step. Rank 0 measures the curves and replaces the checkpoint
after every epoch, exactly as a local training does, so a killed Ray training resumes with
``--resume`` on either backend; the driver logs the curves to MLflow when the workers are done.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from compactnas.core.data import load_data, take_subset
from compactnas.core.errors import ConfigError
from compactnas.search.backends.ray_connect import connect_ray
from compactnas.search.supernet.epochs import SupernetConfig, run_epochs, start_training


def _worker(config: dict[str, Any]) -> None:
    import ray.train
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = SupernetConfig(**{**config["cfg"], "resume": True})
    torch.set_num_threads(cfg.threads)
    data = load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
    train = take_subset(data, train=cfg.subset, seed=cfg.seed)
    net, trainer, meta = start_training(cfg, data, train, shard=(rank, world))

    def report(epoch: int, stats: dict[str, float]) -> None:
        ray.train.report({"epoch": epoch, **stats})  # every rank: it keeps the workers in step

    run_epochs(cfg, data, net, trainer, meta, save=rank == 0, on_epoch=report)


def train_on_ray(cfg: Any, say: Any) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    # Ray picks its Train API (v1 or v2) when ray.train is first imported in a process, and the
    # trainer checks the switch again when it runs; the Tune backend switches v2 off for itself
    # (backends/ray_tune.py, when a Ray search runs). This training is written for v2.
    if not TorchTrainer.__module__.startswith("ray.train.v2"):
        raise ConfigError(
            "supernet training on Ray needs Ray Train v2, and this process already loaded v1 "
            "(for a Tune search): run `compactnas supernet train --backend ray` in a process of its own"
        )
    os.environ["RAY_TRAIN_V2_ENABLED"] = "1"
    started = connect_ray(cfg.address, cfg.workers)
    try:
        say(f"training on Ray: {cfg.workers} worker(s), gloo")
        trainer = TorchTrainer(
            _worker,
            # Workers start in their own folders: every path they get is absolute.
            train_loop_config={"cfg": {**dataclasses.asdict(cfg), "out": str(cfg.out_dir)}},
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(
                num_workers=cfg.workers, use_gpu=False, resources_per_worker={"CPU": 1}
            ),
            run_config=RunConfig(name="supernet", storage_path=str(cfg.out_dir / "ray")),
        )
        try:
            trainer.fit()
        except (TrainingFailedError, ray.exceptions.RayError) as e:  # one line; epochs stay saved
            last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or [type(e).__name__]
            raise ConfigError(
                f"supernet training on Ray failed: {last[0].strip()[:300]} (continue with --resume)"
            ) from None
    finally:
        if started:
            ray.shutdown()
