"""Lottery-ticket rewinding: iterative magnitude pruning whose surviving weights go back to an early
point of training after each round, instead of being fine-tuned from where they were.

Frankle & Carbin (ICLR 2019) found that the weights magnitude pruning keeps, reset to their initial
values, train again to the dense network's accuracy on small networks; for deeper ones the reset has
to go to a point early in training rather than to initialisation (Frankle et al., ICML 2020, "linear
mode connectivity"), and retraining from there at the original learning rate beats fine-tuning at an
equal budget (Renda et al., ICLR 2020). Here the grammar's ``rw`` key beside ``sp`` names that point
as a share of the candidate's dense-training epochs (``rewind_epoch``); ``compress`` keeps the marked
segments' state at that epoch (``Snapshots``: every parameter and buffer of their modules, batch norm
included, as Frankle et al. rewind the whole network), and after each of its sparsity rounds
``rewind`` puts it back, the weights under the new masks. What is stored, counted and exported is the same as for ``sp`` alone:
rewinding changes how the surviving weights are found, not their number.

torch-pruning and torch.nn.utils.prune provide masks, not a training loop with rewinding, so this is
the project's own: a copy of the marked modules' tensors at one epoch and a copy back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from compactnas.spaces.arch import ArchSpec

Rewind = Callable[[str], float]  # module name -> its rewind point (share of dense epochs); 0: none


def spec_rewind(spec: ArchSpec) -> Rewind:
    """Module name -> the ``rw`` of its segment (stages.i.* take stage i's; stem and head theirs)."""

    def share_of(name: str) -> float:
        top, _, rest = name.partition(".")
        if top == "stem":
            return spec.stem.rewind
        if top == "stages":
            return spec.stages[int(rest.partition(".")[0])].rewind
        return spec.head.rewind

    return share_of


def rewinds(spec: ArchSpec) -> bool:
    return any(p.rewind > 0 for p in (spec.stem, *spec.stages, spec.head))


def rewind_epoch(share: float, dense_epochs: int) -> int:
    """The dense-training epoch whose end a ``rw`` share names: at least the first, at most the last."""
    return min(dense_epochs, max(1, math.ceil(share * dense_epochs - 1e-9)))


class Snapshots:
    """The marked modules' own parameters and buffers at the end of their rewind epoch, on the CPU.

    Pass ``snapshots.after_epoch`` as ``train(on_epoch=...)`` for the dense training. ``missing`` names
    the modules whose epoch was never reached (a training stopped early)."""

    def __init__(self, model: nn.Module, share_of: Rewind, dense_epochs: int) -> None:
        self.model = model
        self.epoch_of = {
            name: rewind_epoch(share_of(name), dense_epochs)
            for name, m in model.named_modules()
            if name and _own(m) and share_of(name) > 0
        }
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def after_epoch(self, epoch: int) -> None:
        for name, e in self.epoch_of.items():
            if e == epoch:
                own = _own(self.model.get_submodule(name))
                self.state[name] = {k: t.detach().to("cpu", copy=True) for k, t in own.items()}

    @property
    def missing(self) -> list[str]:
        return [n for n in self.epoch_of if n not in self.state]


def _own(m: nn.Module) -> dict[str, torch.Tensor]:
    """A module's own parameters and buffers (not its children's, nor a pruning mask)."""
    out = dict(m.named_parameters(recurse=False))
    out.update((k, b) for k, b in m.named_buffers(recurse=False) if b is not None)
    out.pop("weight_mask", None)
    return out


@torch.no_grad()
def rewind(model: nn.Module, state: Mapping[str, Mapping[str, torch.Tensor]]) -> int:
    """Put a snapshot's ``state`` (module name -> its tensors, ``Snapshots.state``) back into the
    modules; a pruned weight goes into ``weight_orig``, under the layer's current mask
    (``weight = weight_orig * weight_mask`` keeps the pruned ones at zero). Returns how many modules."""
    for name, saved in state.items():
        m = model.get_submodule(name)
        own = _own(m)
        for key, t in saved.items():
            target = own.get(f"{key}_orig", own.get(key))
            if target is None or target.shape != t.shape:
                got = "nothing" if target is None else tuple(target.shape)
                raise RuntimeError(
                    f"cannot rewind {name}.{key}: it is {got} now and was {tuple(t.shape)} at the "
                    "rewind point"
                )
            target.copy_(t.to(target.device))
        # torch's pruning recomputes ``weight`` (orig x mask) before each forward; do it now too, so
        # the layer reads as rewound before then.
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                setattr(m, hook._tensor_name, hook.apply_mask(m))
    return len(state)
