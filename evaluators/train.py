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
# auto: crop-flip for colour images of 32 px and more (natural photos: CIFAR-like), else shift (digits and
# other small or single-channel images, where a mirrored glyph is another class).
AUGMENTS = ("auto", "crop-flip", "shift", "off")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.005
    optimizer: str = "adamw"
    schedule: str = "cosine"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: str | bool = "auto"  # one of AUGMENTS; True means auto, False off
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
        if isinstance(self.augment, bool):
            object.__setattr__(self, "augment", "auto" if self.augment else "off")
        if self.augment not in AUGMENTS:
            raise ConfigError(
                f"unknown augmentation '{self.augment}' (use one of: {', '.join(AUGMENTS)})"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule '{self.schedule}' (use one of: {', '.join(SCHEDULES)})"
            )


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
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


def augment_mode(augment: str, shape: tuple[int, ...]) -> str:
    """The augmentation ``auto`` resolves to for inputs of shape (C, H, W)."""
    if augment != "auto":
        return augment
    c, h, w = shape[-3:]
    return "crop-flip" if c == 3 and min(h, w) >= 32 else "shift"


def crop_flip(
    x: torch.Tensor, gen: torch.Generator, *, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Per-example random crop from a zero-padded copy (zero is the mean after normalisation) and
    random horizontal flip, as one gather over the batch: no Python loop over examples.

    The result is channels-last in memory, which the CPU convolutions prefer anyway.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    rows = dy + torch.arange(h)
    cols = dx + torch.arange(w)
    if flip:
        mirrored = torch.rand(n, 1, generator=gen) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    # Advanced indices on N, H, W around a sliced C give an (N, H, W, C) tensor.
    out = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    if mode == "crop-flip":
        return crop_flip(x, gen, pad=max(1, x.shape[-1] // 8))
    if mode == "shift":
        return _shift(x, max(1, x.shape[-1] // 8), gen)
    return x


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
    opt = make_optimizer(model, cfg, cfg.lr * lr_scale)
    steps_per_epoch = max(1, math.ceil(len(y) / cfg.batch_size))
    total = epochs * steps_per_epoch
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr * lr_scale, total_steps=total, pct_start=0.15, anneal_strategy="cos"
        )
        if cfg.schedule == "cosine"
        else None
    )
    mode = augment_mode(cfg.augment, tuple(x.shape[1:]))
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
            xb = augment_batch(x[idx], mode, gen).contiguous(memory_format=torch.channels_last)
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
