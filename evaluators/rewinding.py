"""Lottery-ticket rewinding: iterative magnitude pruning whose surviving weights go back to an early
point of training after each round, instead of being fine-tuned from where they were.

Frankle & Carbin (ICLR 2019) found that the weights magnitude pruning keeps, reset to their initial
values, train again to the dense network's accuracy on small networks; for deeper ones the reset has
to go to a point early in training rather than to initialisation (Frankle et al., ICML 2020, "linear
mode connectivity"), and retraining from there at the original learning rate beats fine-tuning at an
equal budget (Renda et al., ICLR 2020). Here the grammar's ``rw`` key beside ``sp`` names that point
as a share of the candidate's dense-training epochs (``rewind_epoch``); ``compress`` keeps the marked
layers' weights at that epoch (``Snapshots``), and after each of its sparsity rounds ``rewind`` puts
them back under the new masks. What is stored, counted and exported is the same as for ``sp`` alone:
rewinding changes how the surviving weights are found, not their number.

torch-pruning and torch.nn.utils.prune provide masks, not a training loop with rewinding, so this is
the project's own: a weight copy per marked layer at one epoch and a copy back.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from compactnas.evaluators.clustering import weight_layers
from compactnas.spaces.arch import ArchSpec

Rewind = Callable[[str], float]  # module name -> its rewind point (share of dense epochs); 0: none


def spec_rewind(spec: ArchSpec) -> Rewind:
    """Module name -> the ``rw`` of its segment (stages.i.* take stage i's; stem and head theirs)."""

    def rewind(name: str) -> float:
        top, _, rest = name.partition(".")
        if top == "stem":
            return spec.stem.rewind
        if top == "stages":
            return spec.stages[int(rest.partition(".")[0])].rewind
        return spec.head.rewind

    return rewind


def rewinds(spec: ArchSpec) -> bool:
    return any(p.rewind > 0 for p in (spec.stem, *spec.stages, spec.head))


def rewind_epoch(share: float, dense_epochs: int) -> int:
    """The dense-training epoch whose end a ``rw`` share names: at least the first, at most the last."""
    return min(dense_epochs, max(1, math.ceil(share * dense_epochs - 1e-9)))


class Snapshots:
    """The marked layers' weights at the end of their rewind epoch, kept on the CPU.

    Pass ``snapshots.after_epoch`` as ``train(on_epoch=...)`` for the dense training. ``missing`` names
    the layers whose epoch was never reached (a training stopped early)."""

    def __init__(self, model: nn.Module, rewind: Rewind, dense_epochs: int) -> None:
        self.model = model
        self.epoch_of = {
            name: rewind_epoch(rewind(name), dense_epochs)
            for name, _ in weight_layers(model)
            if rewind(name) > 0
        }
        self.weights: dict[str, torch.Tensor] = {}

    def after_epoch(self, epoch: int) -> None:
        for name, e in self.epoch_of.items():
            if e == epoch:
                w = self.model.get_submodule(name).weight
                self.weights[name] = w.detach().to("cpu", copy=True)

    @property
    def missing(self) -> list[str]:
        return [n for n in self.epoch_of if n not in self.weights]


@torch.no_grad()
def rewind(model: nn.Module, snapshots: Snapshots) -> int:
    """Put every snapshot back into its layer under the layer's current pruning mask (the masked
    weights stay zero through ``weight = weight_orig * weight_mask``); returns how many layers."""
    done = 0
    for name, w in snapshots.weights.items():
        m = model.get_submodule(name)
        target = getattr(m, "weight_orig", m.weight)
        if target.shape != w.shape:
            raise RuntimeError(
                f"cannot rewind {name}: its weight is {tuple(target.shape)} now and was "
                f"{tuple(w.shape)} at the rewind point"
            )
        target.copy_(w.to(target.device))
        # torch's pruning recomputes ``weight`` (orig x mask) before each forward; do it now too, so
        # the layer reads as rewound before then.
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                setattr(m, hook._tensor_name, hook.apply_mask(m))
        done += 1
    return done
