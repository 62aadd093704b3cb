"""The one training engine: in-memory tensors, on the CPU or an accelerator, and accuracy.

Every command that trains goes through ``train`` (search candidates, compression, retrain, distill, the
teacher, benchmarks). Where it runs is ``TrainConfig.train_device`` (``auto``: CUDA, else MPS, else the
CPU): the data set is moved there once per call, augmentation runs there in batches, and so does
evaluation. ``precision`` ``auto`` means mixed precision on an accelerator (bf16 where supported, fp16
with a gradient scaler otherwise) and fp32 on the CPU, where bf16 autocast is slower on most cores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compactnas.core.errors import ConfigError, TrialDiverged
from compactnas.evaluators.device import (
    PRECISIONS,
    Precision,
    autocast,
    check_train_device,
    on_device,
    resolve_precision,
    resolve_train_device,
)

# report(step, value) -> True means "stop now" (early stopping decided by the caller).
Report = Callable[[int, float], bool | None]  # True stops the training; None goes on
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
    # share of the steps spent warming up to the peak learning rate (one-cycle schedule)
    warmup: float = 0.15
    # exponential moving average of the weights, per step (0: off); the averaged weights are the result
    ema: float = 0.0
    # evaluate on each image and its mirror image, averaged (only where augmentation flips: crop-flip)
    tta: bool = False
    # where and how to run: see the module docstring
    train_device: str = "auto"
    precision: str = "auto"
    compile: bool = False

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
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"warmup must be in [0, 1), got {self.warmup}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1) (0: off), got {self.ema}")
        check_train_device(self.train_device)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision '{self.precision}' (use one of: {', '.join(PRECISIONS)})"
            )
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

    The random draws come from ``gen`` on the CPU (the same under a seed wherever training runs); the
    gather runs where ``x`` is. The result is channels-last in memory, which convolutions prefer.
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
    dev = x.device
    rows, cols = rows.to(dev, non_blocking=True), cols.to(dev, non_blocking=True)
    # Advanced indices on N, H, W around a sliced C give an (N, H, W, C) tensor.
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
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


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig | None = None,
    *,
    batch_size: int = 512,
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``. With ``cfg``: on its train device and precision, and
    with flip test-time augmentation where ``cfg.tta`` asks for it and the inputs are flipped in
    training; without, where the model is, in fp32."""
    if len(y) == 0:
        return 0.0
    if cfg is None:
        dev, prec, tta = _model_device(model), Precision(False, torch.float32, False), False
    else:
        dev = resolve_train_device(cfg.train_device)
        prec = resolve_precision(cfg.precision, dev)
        tta = cfg.tta and augment_mode(cfg.augment, tuple(x.shape[1:])) == "crop-flip"
    was_training = model.training
    model.eval()
    correct = 0
    with on_device(model, dev):
        for i in range(0, len(y), batch_size):
            xb = x[i : i + batch_size].to(dev, non_blocking=True)
            with autocast(dev, prec):
                logits = model(xb).float()
                if tta:
                    logits = logits + model(xb.flip(-1)).float()
            correct += int((logits.argmax(1) == y[i : i + batch_size].to(dev)).sum())
    model.train(was_training)
    return correct / len(y)


class _Ema:
    """Exponential moving average of the parameters and batch-norm statistics, updated per step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.tracked = {
            k: v
            for k, v in model.state_dict(keep_vars=True).items()
            if v.is_floating_point() and ("running_" in k or isinstance(v, nn.Parameter))
        }
        self.avg = {k: v.detach().clone() for k, v in self.tracked.items()}
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        # Early on the average would remember the random start: the decay ramps up (as in timm's EMA).
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        live = [v.detach() for v in self.tracked.values()]
        torch._foreach_lerp_(list(self.avg.values()), live, 1.0 - d)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live and the averaged values (twice restores the live ones)."""
        for k, v in self.tracked.items():
            tmp = v.detach().clone()
            v.data.copy_(self.avg[k])
            self.avg[k] = tmp


def backward_step(
    loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Gradients of ``loss`` and one optimizer step, through the fp16 gradient scaler when there is one."""
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()


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
    checkpoint: Path | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train in place on ``cfg.train_device``. After each epoch, ``report(epoch, val_accuracy)`` may stop
    training early. The model comes back where it was (and, with ``cfg.ema``, holds the averaged weights).

    With ``checkpoint``, the whole training state (weights, optimizer, schedule, weight average, random
    generator, the reports so far) is written there after every epoch, and a training started again with
    the same file, settings and data carries on from its last finished epoch: ``report`` is called again
    for the restored epochs, in order, so a caller's curve is whole. A file from other settings is
    ignored and overwritten.

    ``on_epoch(epoch)`` is called after each epoch this call runs, with the model's raw weights (not
    the averaged ones) in place: a caller keeps what it needs of the training's path (rewinding does).

    Raises TrialDiverged on a non-finite loss. Returns {'epochs': run, 'loss': last, 'stopped_early': 0/1,
    'resumed_from': the checkpoint's epoch it carried on from, 0 if none}.
    """
    epochs = epochs or cfg.epochs
    dev = resolve_train_device(cfg.train_device)
    prec = resolve_precision(cfg.precision, dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    mode = augment_mode(cfg.augment, tuple(x.shape[1:]))
    with on_device(model, dev):
        # Channels-last makes CPU (oneDNN) depthwise convolutions, backward above all, several times
        # faster, and lets tensor cores take convolutions on a GPU.
        model.to(memory_format=torch.channels_last)
        try:
            saver = (
                _EpochCheckpoint(checkpoint, cfg, epochs, lr_scale, x, y) if checkpoint else None
            )
            stats = _train_on(model, x.to(dev), y.to(dev), cfg, epochs, dev, prec, gen, mode,
                              val=val, report=report, loss_fn=loss_fn, lr_scale=lr_scale,
                              saver=saver, on_epoch=on_epoch)  # fmt: skip
        finally:
            model.to(memory_format=torch.contiguous_format)
    return stats


def _train_on(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    epochs: int,
    dev: torch.device,
    prec: Precision,
    gen: torch.Generator,
    mode: str,
    *,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    report: Report | None,
    loss_fn: LossFn | None,
    lr_scale: float,
    saver: _EpochCheckpoint | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    opt = make_optimizer(model, cfg, cfg.lr * lr_scale)
    steps_per_epoch = max(1, math.ceil(len(y) / cfg.batch_size))
    total = epochs * steps_per_epoch
    # OneCycleLR divides by the length of its warm-up phase (warmup x steps - 1): never let it be 0.
    pct = cfg.warmup or 1e-9
    if abs(pct * total - 1) < 1e-6:
        pct += 0.5 / total
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr * lr_scale, total_steps=total, pct_start=pct, anneal_strategy="cos"
        )
        if cfg.schedule == "cosine"
        else None
    )
    scaler = torch.amp.GradScaler(dev.type) if prec.scaled else None
    ema = _Ema(model, cfg.ema) if cfg.ema > 0 else None
    step = torch.compile(model) if cfg.compile else model
    # On the CPU a non-finite loss is caught at its step; on an accelerator, where reading the loss
    # would stall the queue every step, at the end of its epoch.
    check_each_step = dev.type == "cpu"
    model.train()
    last_loss = float("nan")
    stopped = False
    first = 0
    reports: list[float] = []
    if saver is not None:
        first, last_loss, reports = saver.restore(model, opt, sched, scaler, ema, gen)
        # The reports of the epochs already run go to ``report`` again, up to the first that
        # stopped the training (a resumed training that had stopped runs no further epoch).
        for e, acc in enumerate(reports, 1):
            if report is not None and report(e, acc):
                stopped = True
                break
    epoch = first
    for epoch in range(first + 1, (first if stopped else epochs) + 1):
        perm = torch.randperm(len(y), generator=gen).to(dev)
        running = torch.zeros((), device=dev)
        for i in range(0, len(y), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two examples
                continue
            xb = augment_batch(x[idx], mode, gen).contiguous(memory_format=torch.channels_last)
            yb = y[idx]
            with autocast(dev, prec):
                logits = step(xb)
                if loss_fn is not None:
                    loss = loss_fn(logits.float(), yb, xb)
                else:
                    loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            if check_each_step and not torch.isfinite(loss):
                raise TrialDiverged(f"loss became {loss.item()} at epoch {epoch}")
            backward_step(loss, opt, scaler)
            if sched is not None:
                sched.step()
            if ema is not None:
                ema.update()
            running += loss.detach() * len(idx)
        last_loss = float(running) / len(y)
        if not math.isfinite(last_loss):
            raise TrialDiverged(f"loss became {last_loss} in epoch {epoch}")
        if report is not None and val is not None:
            if ema is not None:
                ema.swap()
            acc = accuracy(model, *val, cfg)
            if ema is not None:
                ema.swap()
            reports.append(acc)
            stopped = bool(report(epoch, acc))  # a report that returns nothing goes on
        if saver is not None:
            saver.save(epoch, last_loss, reports, model, opt, sched, scaler, ema, gen)
        if on_epoch is not None:
            on_epoch(epoch)
        if stopped:
            break
    if ema is not None:
        ema.swap()  # the averaged weights are the trained model
    return {
        "epochs": float(epoch), "loss": last_loss, "stopped_early": float(stopped),
        "resumed_from": float(first),
    }  # fmt: skip


class _EpochCheckpoint:
    """The state of one training after an epoch, in one file, written atomically."""

    def __init__(
        self,
        path: Path,
        cfg: TrainConfig,
        epochs: int,
        lr_scale: float,
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        self.path = Path(path)
        # What must match for the file to be the same training: settings and the data's shape and sums.
        self.key = {
            **asdict(cfg), "epochs": epochs, "lr_scale": lr_scale, "x": list(x.shape),
            "x_sum": float(x.double().sum()), "y_sum": int(y.long().sum()),
        }  # fmt: skip

    def restore(self, model, opt, sched, scaler, ema, gen) -> tuple[int, float, list[float]]:
        if not self.path.is_file():
            return 0, float("nan"), []
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # a torn or foreign file: start over
            return 0, float("nan"), []
        if not isinstance(blob, dict) or blob.get("key") != self.key:
            return 0, float("nan"), []
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        if sched is not None:
            sched.load_state_dict(blob["sched"])
        if scaler is not None and blob.get("scaler"):
            scaler.load_state_dict(blob["scaler"])
        if ema is not None:
            dev = next(iter(ema.avg.values())).device
            ema.avg = {k: v.to(dev) for k, v in blob["ema"].items()}
            ema.steps = blob["ema_steps"]
        gen.set_state(blob["gen"])
        return blob["epoch"], blob["loss"], list(blob["reports"])

    def save(self, epoch, loss, reports, model, opt, sched, scaler, ema, gen) -> None:
        blob: dict[str, Any] = {
            "key": self.key, "epoch": epoch, "loss": loss, "reports": list(reports),
            "model": model.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict() if sched is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.avg if ema is not None else None,
            "ema_steps": ema.steps if ema is not None else 0, "gen": gen.get_state(),
        }  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.path)
