"""Training a weight-sharing supernet: the sandwich rule with in-place distillation (BigNAS).

Each step trains the largest sub-network on the labels, then the smallest and a few random ones on the
largest's softened predictions (its logits of this very step, detached), accumulating the gradients of
all of them before one optimizer step: the largest pulls the shared weights toward accuracy, the others
keep every slice of them usable. The recipe (optimizer, one-cycle schedule, augmentation, label
smoothing) is the project's proxy-training recipe (evaluators/train.py).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from compactnas.core.errors import ConfigError, TrialDiverged
from compactnas.evaluators.train import TrainConfig, augment_batch, augment_mode, make_optimizer


@dataclass(frozen=True, kw_only=True)
class SandwichConfig:
    n_random: int = 2  # random sub-networks per step, beside the largest and the smallest
    temperature: float = 1.0  # softening of the largest's predictions for the others

    def __post_init__(self) -> None:
        if self.n_random < 0:
            raise ConfigError(f"random sub-networks per step must be >= 0, got {self.n_random}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a positive number, got {self.temperature}")


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL divergence to the teacher's softened distribution, scaled by t^2 (gradients keep their size)."""
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
    ) * (t * t)


class SandwichTrainer:
    """Optimizer, schedule and random state of one supernet training; resumable through state_dict."""

    def __init__(
        self,
        net: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        tc: TrainConfig,
        sw: SandwichConfig,
        *,
        shard: tuple[int, int] = (0, 1),
    ):
        self.net, self.x, self.y, self.tc, self.sw = net, x, y, tc, sw
        # (rank, world size) of data-parallel training: each rank takes its share of every batch and
        # the gradients are averaged across ranks (torch.distributed) before each optimizer step.
        self.rank, self.world = shard
        self.steps_per_epoch = max(1, math.ceil(len(y) / tc.batch_size))
        self.opt = make_optimizer(net, tc, tc.lr)
        self.sched = (
            torch.optim.lr_scheduler.OneCycleLR(
                self.opt,
                max_lr=tc.lr,
                total_steps=tc.epochs * self.steps_per_epoch,
                pct_start=0.15,
                anneal_strategy="cos",
            )
            if tc.schedule == "cosine"
            else None
        )
        self.gen = torch.Generator().manual_seed(tc.seed)
        self.rng = random.Random(tc.seed)
        self.mode = augment_mode(tc.augment, tuple(x.shape[1:]))

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "generator": self.gen.get_state(),
            "rng": self.rng.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None and state.get("scheduler") is not None:
            self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.rng.setstate(state["rng"])

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, float]:
        """One sandwich step; returns the largest's and the smallest's loss."""
        space, sw = self.net.space, self.sw
        self.opt.zero_grad(set_to_none=True)
        logits = self.net(xb, space.largest())
        loss = F.cross_entropy(logits, yb, label_smoothing=self.tc.label_smoothing)
        if not torch.isfinite(loss):
            raise TrialDiverged(f"supernet loss became {loss.item()}")
        loss.backward()
        teacher = logits.detach()
        small_loss = float("nan")
        subs = [space.smallest(), *(space.random(self.rng) for _ in range(sw.n_random))]
        for i, spec in enumerate(subs):
            kd = distill_loss(self.net(xb, spec), teacher, sw.temperature)
            kd.backward()
            if i == 0:
                small_loss = kd.item()
        if self.world > 1:
            average_gradients(self.net, self.world)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return loss.item(), small_loss

    def epoch(self) -> dict[str, float]:
        self.net.train()
        perm = torch.randperm(len(self.y), generator=self.gen)
        big = small = 0.0
        seen = 0
        for i in range(0, len(self.y), self.tc.batch_size):
            idx = perm[i : i + self.tc.batch_size]
            if len(idx) < 2 * self.world:  # batch norm needs two examples on every rank
                continue
            idx = idx[self.rank :: self.world]
            xb = augment_batch(self.x[idx], self.mode, self.gen).contiguous()
            lb, ls = self.step(xb, self.y[idx])
            big += lb * len(idx)
            small += ls * len(idx)
            seen += len(idx)
        return {"loss_largest": big / max(1, seen), "kd_loss_smallest": small / max(1, seen)}


def average_gradients(net: Any, world: int) -> None:
    """Every rank's gradients replaced by their mean over all ranks (one all-reduce per tensor)."""
    import torch.distributed as dist

    for p in net.parameters():
        if p.grad is None:  # the same sub-networks run on every rank; zeros keep the calls matched
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world
