"""Early exits: classifiers after chosen stages (the grammar's ``ex`` key) that let confident inputs
leave the network early, and what that costs on a device.

The exits are trained after the network, on its frozen features (the "internal classifier" mode of
Kaya et al., Shallow-Deep Networks, 2019): the network's own output, and so its accuracy when no input
leaves early, is untouched, and fitting a linear classifier per exit on pooled features costs a few
seconds on a CPU. At inference an input leaves at the first exit whose top softmax probability reaches
that exit's threshold; otherwise at the network's output.

What the exits cost on a device, expected over a set of inputs and in the worst case:
hw_profiles/exits.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compactnas.spaces.exits import exit_stages


@dataclass(frozen=True)
class ExitOutcome:
    """Where a set of inputs left the network, and how accurate the answers were."""

    stages: tuple[int, ...]  # the stage index of each exit, then -1 for the network's output
    fractions: tuple[float, ...]  # share of the inputs leaving at each
    accuracy: float  # of the answers given where each input left
    final_accuracy: float  # of the network's own output on every input


@torch.no_grad()
def _features(model: nn.Module, x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Pooled outputs of the stages that have exits, for every input (the network in eval mode)."""
    keys = list(model.exits)
    out: list[list[torch.Tensor]] = [[] for _ in keys]
    for i in range(0, len(x), batch_size):
        h = model.stem(x[i : i + batch_size])
        for j, stage in enumerate(model.stages):
            h = stage(h)
            if str(j) in model.exits:
                out[keys.index(str(j))].append(model.pool(h).flatten(1))
    return [torch.cat(f) for f in out]


def fit_exits(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 256,
    seed: int = 0,
) -> None:
    """Train every exit classifier of ``model`` (in place) on its frozen features of ``x``."""
    if not len(model.exits):
        return
    was_training = model.training
    model.eval()
    feats = _features(model, x, batch_size)
    gen = torch.Generator().manual_seed(seed)
    for head, f in zip(model.exits.values(), feats, strict=True):
        # Standardised features make one learning rate fit every exit's scale.
        mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
        z = (f - mean) / std
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
        head.train()
        for _ in range(epochs):
            perm = torch.randperm(len(z), generator=gen)
            for i in range(0, len(z), batch_size):
                idx = perm[i : i + batch_size]
                loss = F.cross_entropy(head(z[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():  # fold the standardisation into the classifier
            w = head.weight / std
            head.bias.sub_((w * mean).sum(1))
            head.weight.copy_(w)
    model.train(was_training)


@torch.no_grad()
def exit_outcome(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
) -> ExitOutcome:
    """Where each input of ``x`` leaves at the spec's thresholds, and the accuracy of those answers."""
    spec = model.spec
    stages = exit_stages(spec)
    thresholds = [spec.stages[i].exit for i in stages]
    was_training = model.training
    model.eval()
    left = torch.zeros(len(stages) + 1)
    correct = final_correct = 0
    for i in range(0, len(x), batch_size):
        outs = model.forward_exits(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        pending = torch.ones(len(yb), dtype=torch.bool)
        answer = outs[-1].argmax(1)
        for j, (logits, t) in enumerate(zip(outs[:-1], thresholds, strict=True)):
            conf, pred = F.softmax(logits.float(), 1).max(1)
            go = pending & (conf >= t)
            answer = torch.where(go, pred, answer)
            left[j] += int(go.sum())
            pending &= ~go
        left[-1] += int(pending.sum())
        correct += int((answer == yb).sum())
        final_correct += int((outs[-1].argmax(1) == yb).sum())
    model.train(was_training)
    n = max(1, len(y))
    return ExitOutcome(
        stages=(*stages, -1),
        fractions=tuple(float(v) / n for v in left),
        accuracy=correct / n,
        final_accuracy=final_correct / n,
    )
