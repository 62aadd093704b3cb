"""Structured channel pruning with torch-pruning (the default) and unstructured magnitude pruning.

Structured pruning removes whole hidden channels, so the network really gets smaller: an ir block's
expanded channels (conv_pw's outputs, with their batch norm, the depthwise conv, the SE in/out and
conv_pwl's inputs) or a fire block's squeeze channels (with both expand branches' inputs). Stage
outputs and residual paths are never touched. After pruning to a spec's ratios a model has exactly the
parameter count that ``compactnas.spaces.layers.count_params`` promises for the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from compactnas.evaluators.counting import count_parameters
from compactnas.spaces.arch import ArchSpec
from compactnas.spaces.build import PRUNABLE_KINDS, prune_root
from compactnas.spaces.layers import count_params, hidden_channels

IMPORTANCE = {"l1": 1, "l2": 2}


@dataclass(frozen=True)
class PrunableBlock:
    """One block with a pruning ratio: the conv whose outputs are its hidden channels."""

    name: str
    block: nn.Module
    root: nn.Conv2d
    dense: int
    target: int


def prunable_blocks(model: nn.Module, spec: ArchSpec) -> list[PrunableBlock]:
    """Blocks of stages with ``pr`` > 0, with their dense and target hidden channels."""
    out = []
    chs = spec.stem.channels
    for i, st in enumerate(spec.stages):
        for j in range(st.repeats):
            in_chs = chs if j == 0 else st.channels
            dense, target = hidden_channels(st, in_chs)
            if st.prune > 0 and st.kind in PRUNABLE_KINDS and target < dense:
                block = model.stages[i][j]
                root = prune_root(block, st.kind)
                if (
                    not isinstance(root, nn.Conv2d)
                    or root.out_channels > dense
                    or root.out_channels < target
                ):
                    raise ValueError(
                        f"stages.{i}.{j} does not match the spec (model built from another string?)"
                    )
                out.append(PrunableBlock(f"stages.{i}.{j}", block, root, dense, target))
        chs = st.channels
    return out


def _example_input(model: nn.Module, spec: ArchSpec) -> torch.Tensor:
    in_chans = model.stem[0].in_channels
    # Any resolution that survives the network's strides traces the same graph.
    size = max(8, 2 * spec.total_stride)
    return torch.zeros(1, in_chans, size, size)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def prune_structured(
    model: nn.Module, spec: ArchSpec, *, fraction: float = 1.0, importance: str = "l2"
) -> int:
    """Prune (in place) each block of a stage with ``pr`` > 0 towards its target hidden channels.

    After the call a block holds ``dense - round(fraction * (dense - target))`` hidden channels, so
    fractions 1/n, 2/n, .. 1 prune gradually; the channels removed are those of least group magnitude
    (L1 or L2 over every weight the channel owns). Returns the number of channels removed.
    """
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {', '.join(IMPORTANCE)}, got {importance!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    blocks = prunable_blocks(model, spec)
    if not blocks:
        return 0
    import torch_pruning as tp  # imports torchvision: loaded only when something is pruned

    was_training = model.training
    model.eval()  # tracing runs a forward pass: batch-norm statistics must not move
    try:
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=_example_input(model, spec), verbose=False
        )
        scorer = tp.importance.MagnitudeImportance(
            p=IMPORTANCE[importance], normalizer=None, group_reduction="mean"
        )
        names = {m: n for n, m in model.named_modules()}
        removed = 0
        for b in blocks:
            goal = b.dense - int(round(fraction * (b.dense - b.target)))
            n = b.root.out_channels - goal
            if n <= 0:
                continue
            everything = graph.get_pruning_group(
                b.root, tp.prune_conv_out_channels, idxs=list(range(b.root.out_channels))
            )
            scores = scorer(everything)
            idxs = torch.argsort(scores)[:n].tolist()
            group = graph.get_pruning_group(b.root, tp.prune_conv_out_channels, idxs=idxs)
            # Only modules holding weights count; torch-pruning's pseudo-ops (add, cat, ...) hold none.
            inside = set(b.block.modules())
            touched = {d.target.module for d, _ in group if isinstance(d.target.module, nn.Module)}
            outside = [names.get(m, "?") for m in touched if m not in inside and _has_params(m)]
            if outside:
                raise RuntimeError(
                    f"pruning {b.name} would reach outside the block: {', '.join(outside)}"
                )
            group.prune()
            removed += n
    finally:
        model.train(was_training)
    return removed


def check_pruned(
    model: nn.Module, spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    """The pruned model holds exactly the parameters its string promises (else a bug: RuntimeError)."""
    have, promised = count_parameters(model), count_params(spec, input_shape, num_classes)
    if have != promised:
        raise RuntimeError(
            f"pruned model has {have} parameters, the string promises {promised}: {spec}"
        )


# ---------------------------------------------------------------------------------------------------
# Unstructured magnitude pruning: an option, not the default. Zeros do not shrink dense kernels, so
# its saving only counts in a sparse storage format (sparse_size_bytes).


def _weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def prune_unstructured(model: nn.Module, amount: float, *, permanent: bool = True) -> float:
    """Zero the ``amount`` fraction of conv/linear weights of least magnitude, over the whole network.

    ``permanent=False`` keeps torch's pruning masks so that fine-tuning cannot regrow the zeros (call
    ``make_permanent`` afterwards). Returns the fraction of those weights that are zero.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    params = _weights(model)
    torch_prune.global_unstructured(
        params, pruning_method=torch_prune.L1Unstructured, amount=amount
    )
    if permanent:
        make_permanent(model)
    total = sum(getattr(m, n).numel() for m, n in params)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
    return zeros / max(1, total)


def make_permanent(model: nn.Module) -> None:
    for m, n in _weights(model):
        if torch_prune.is_pruned(m) and hasattr(m, f"{n}_mask"):
            torch_prune.remove(m, n)


def _index_bytes(n: int) -> int:
    return 1 if n <= 2**8 else 2 if n <= 2**16 else 4


def sparse_size_bytes(model: nn.Module, *, weight_bits: int = 32) -> int:
    """Size with conv/linear weights stored CSR-like, each as an (out, in*k*k) matrix.

    Per matrix: nonzeros * weight_bits / 8 for the values, one column index per nonzero (1, 2 or 4
    bytes, the fewest that address a row) and out + 1 row offsets (the fewest bytes that count the
    nonzeros). Biases and batch-norm parameters are dense 32-bit.
    """
    total = 0.0
    weights = set()
    for m, n in _weights(model):
        w = getattr(m, n).detach()
        # With pruning masks still attached the stored tensor is weight_orig; weight is masked.
        stored = getattr(m, f"{n}_orig", None)
        weights.add(id(stored if stored is not None else getattr(m, n)))
        rows, cols = w.shape[0], w[0].numel()
        nnz = int(torch.count_nonzero(w))
        total += (
            nnz * weight_bits / 8 + nnz * _index_bytes(cols) + (rows + 1) * _index_bytes(nnz + 1)
        )
    for p in model.parameters():
        if id(p) not in weights:
            total += p.numel() * 4
    return int(round(total))
