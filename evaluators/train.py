"""Short proxy training on in-memory tensors, and accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compactnas.core.errors import ConfigError, TrialDiverged

# report(step, value) -> True means "stop now" (early stopping decided by the caller).
Report = Callable[[int, float], bool]
# loss_fn(logits, targets, inputs) -> loss; lets distillation replace cross-entropy.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.005
    optimizer: str = "adamw"
    schedule: str = "cosine"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer '{self.optimizer}' (use one of: {', '.join(OPTIMIZERS)})"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule '{self.schedule}' (use one of: {', '.join(SCHEDULES)})"
            )


def _optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    # No weight decay on biases and normalisation parameters.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero padding), one offset per batch."""
    if max_shift <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    x = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    h, w = x.shape[-2] - 2 * max_shift, x.shape[-1] - 2 * max_shift
    return x[..., max_shift + dy : max_shift + dy + h, max_shift + dx : max_shift + dx + w]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(y))


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    *,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    report: Report | None = None,
    loss_fn: LossFn | None = None,
    lr_scale: float = 1.0,
    epochs: int | None = None,
) -> dict[str, float]:
    """Train in place. After each epoch, ``report(epoch, val_accuracy)`` may stop training early.

    Raises TrialDiverged on a non-finite loss. Returns {'epochs': run, 'loss': last, 'stopped_early': 0/1}.
    """
    epochs = epochs or cfg.epochs
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg, cfg.lr * lr_scale)
    steps_per_epoch = max(1, math.ceil(len(y) / cfg.batch_size))
    total = epochs * steps_per_epoch
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr * lr_scale, total_steps=total, pct_start=0.15, anneal_strategy="cos"
        )
        if cfg.schedule == "cosine"
        else None
    )
    max_shift = max(1, x.shape[-1] // 8) if cfg.augment else 0
    # Channels-last makes CPU (oneDNN) depthwise convolutions, backward above all, several times faster.
    model.to(memory_format=torch.channels_last)
    model.train()
    last_loss = float("nan")
    stopped = False
    epoch = 0
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(y), generator=gen)
        running = 0.0
        for i in range(0, len(y), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two examples
                continue
            xb = _shift(x[idx], max_shift, gen).contiguous(memory_format=torch.channels_last)
            yb = y[idx]
            logits = model(xb)
            if loss_fn is not None:
                loss = loss_fn(logits, yb, xb)
            else:
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise TrialDiverged(f"loss became {loss.item()} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            running += loss.item() * len(idx)
        last_loss = running / len(y)
        if report is not None and val is not None:
            if report(epoch, accuracy(model, *val)):
                stopped = True
                break
    model.to(memory_format=torch.contiguous_format)
    return {"epochs": float(epoch), "loss": last_loss, "stopped_early": float(stopped)}
