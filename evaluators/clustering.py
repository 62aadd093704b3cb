"""Weight sharing as in Deep Compression (Han et al., ICLR 2016): magnitude sparsity, k-means clusters
with a fine-tuned codebook, and the entropy-coded size of what is stored.

- ``sparsify`` zeroes each layer's smallest-magnitude weights (torch's pruning masks, which keep the
  zeros through fine-tuning; ``torch.nn.utils.prune``).
- ``cluster`` replaces each layer's non-zero weights by the nearest of ``k`` shared values found by 1-D
  k-means (scikit-learn, linear initialisation over [min, max], which the paper found best). The layer
  then stores a codebook and one index per weight; the weight is a parametrization
  (``torch.nn.utils.parametrize``) ``table[index]`` whose trainable original is the codebook, so
  fine-tuning updates each shared value from its weights' gradients (their mean; the paper sums them,
  see ``SharedWeights``). A pruned weight points at a fixed zero entry that training cannot move.
- ``layer_coding`` / ``coded_size_bytes`` count the stored form of every layer: the codebook at 32 bits
  and the indices Huffman-coded (evaluators/entropy.py), either as one stream or, for a sparse layer,
  as two (the zero run before each non-zero weight, and the non-zero weights' indices), whichever is
  smaller. A sparse layer without clusters stores its non-zero values at its weight bits plus the coded
  runs. Biases and batch norm stay dense at 32 bits, as in ``spaces.layers.size_bytes``.

Which layers take which setting comes from a function of the module's name, like
``quantization.spec_bits``; ``spec_coding`` reads it from an architecture string's ``sp``/``cl`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from compactnas.evaluators import entropy
from compactnas.spaces.arch import ArchSpec
from compactnas.spaces.layers import RUN_CAP  # a zero run of 16 is one escape symbol

CODEBOOK_BITS = 32

Coding = Callable[
    [str], tuple[float, int]
]  # module name -> (sparsity, clusters); (0, 0) = untouched


def spec_coding(spec: ArchSpec) -> Coding:
    """Module name -> (sparsity, clusters) from the string: stages.i.* take stage i's, stem and head theirs."""

    def coding(name: str) -> tuple[float, int]:
        top, _, rest = name.partition(".")
        if top == "stem":
            return spec.stem.sparsity, spec.stem.clusters
        if top == "stages":
            st = spec.stages[int(rest.partition(".")[0])]
            return st.sparsity, st.clusters
        return spec.head.sparsity, spec.head.clusters

    return coding


def is_coded(spec: ArchSpec) -> bool:
    parts = [spec.stem, *spec.stages, spec.head]
    return any(p.sparsity > 0 or p.clusters > 0 for p in parts)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


# --- sparsity --------------------------------------------------------------------------------------


def sparsify(model: nn.Module, coding: Coding, *, fraction: float = 1.0) -> None:
    """Mask each layer's smallest-magnitude weights: ``fraction`` of its target sparsity (gradual steps
    call this with rising fractions; masks already attached are replaced by the new, larger ones)."""
    for name, m in weight_layers(model):
        sparsity = coding(name)[0] * fraction
        if sparsity <= 0:
            continue
        w = _dense_weight(m).detach()
        k = int(round(sparsity * w.numel()))
        if k == 0:
            continue
        threshold = w.abs().flatten().kthvalue(k).values
        mask = (w.abs() > threshold).to(w.dtype)
        if torch_prune.is_pruned(m):
            torch_prune.remove(m, "weight")
        torch_prune.custom_from_mask(m, "weight", mask)


def fix_zeros(model: nn.Module) -> None:
    """Make the masked zeros part of the weights (removes torch's pruning masks)."""
    for _, m in weight_layers(model):
        if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks of every masked layer (by module name), made permanent: ``mask_again`` restores them
    after modules were swapped (fake quantization) or clustered."""
    masks = {
        name: m.weight_mask.detach().clone()
        for name, m in weight_layers(model)
        if hasattr(m, "weight_mask")
    }
    fix_zeros(model)
    return masks


def mask_again(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Attach ``masks`` again to the layers that are not clustered (a clustered layer's zeros are its
    fixed zero entry already)."""
    for name, mask in masks.items():
        m = model.get_submodule(name)
        if shared_of(m) is None:
            torch_prune.custom_from_mask(m, "weight", mask)


def _dense_weight(m: nn.Module) -> torch.Tensor:
    return getattr(m, "weight_orig", m.weight) * getattr(m, "weight_mask", 1.0)


# --- clusters --------------------------------------------------------------------------------------


class SharedWeights(nn.Module):
    """weight = [codebook, 0][index]: the parametrization of a clustered layer's weight."""

    def __init__(self, index: torch.Tensor, clusters: int) -> None:
        super().__init__()
        self.clusters = clusters
        self.register_buffer("index", index.to(torch.int16))

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        index = self.index.long()
        if codebook.requires_grad:
            # Each shared value's gradient is the mean of its weights' gradients, not the paper's sum:
            # summed over the thousands of weights a dense layer shares per value, one SGD step at the
            # weights' learning rate moves a centroid that many times too far (ResNet-8 with 16
            # clusters per layer fell from 82.8% to 19.5% in fine-tuning). The forward value is unchanged.
            counts = torch.bincount(index.flatten(), minlength=self.clusters + 1)[: self.clusters]
            scale = 1.0 / counts.clamp(min=1).to(codebook.dtype)
            codebook = codebook * scale + (codebook * (1 - scale)).detach()
        table = torch.cat([codebook, codebook.new_zeros(1)])
        return table[index]

    def right_inverse(self, codebook: torch.Tensor) -> torch.Tensor:
        # What is stored is the codebook itself; ``cluster`` hands it over as the original.
        return codebook


def kmeans_1d(values: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` centroids of ``values`` (fewer when there are fewer distinct values), sorted."""
    from sklearn.cluster import KMeans  # scikit-learn is heavy to import; only clustering needs it

    distinct = np.unique(values)
    if len(distinct) <= k:
        return np.pad(distinct, (0, k - len(distinct)), mode="edge").astype(np.float32)
    init = np.linspace(values.min(), values.max(), k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=100, random_state=seed)
    km.fit(values.reshape(-1, 1))
    return np.sort(km.cluster_centers_.ravel()).astype(np.float32)


@torch.no_grad()
def cluster(model: nn.Module, coding: Coding, *, seed: int = 0) -> None:
    """Share each selected layer's non-zero weights among its ``k`` k-means centroids (in place).

    Zeros (from ``sparsify``) point at the fixed zero entry. Pruning masks are made permanent first.
    """
    fix_zeros(model)
    for name, m in weight_layers(model):
        k = coding(name)[1]
        if k <= 0:
            continue
        w = m.weight.detach()
        nonzero = w != 0
        values = w[nonzero].cpu().numpy().astype(np.float64)
        centroids = kmeans_1d(values, k, seed) if len(values) else np.zeros(k, np.float32)
        book = torch.from_numpy(centroids).to(w.device)
        nearest = (w.reshape(-1, 1) - book.reshape(1, -1)).abs().argmin(dim=1).reshape(w.shape)
        index = torch.where(nonzero, nearest, torch.full_like(nearest, k))
        attach_shared(m, index, book)


def attach_shared(m: nn.Module, index: torch.Tensor, codebook: torch.Tensor) -> None:
    """Parametrize ``m.weight`` as ``codebook`` entries picked by ``index`` (index k = fixed zero)."""
    k = int(codebook.numel())
    m.weight = nn.Parameter(codebook.clone().to(m.weight.dtype))
    parametrize.register_parametrization(m, "weight", SharedWeights(index, k), unsafe=True)


def attach_placeholders(model: nn.Module, coding: Coding) -> None:
    """The clustered structure with empty codebooks: what ``load_state_dict`` of a clustered model needs."""
    for name, m in weight_layers(model):
        k = coding(name)[1]
        if k > 0:
            index = torch.zeros(m.weight.shape, dtype=torch.long)
            attach_shared(m, index, torch.zeros(k, dtype=m.weight.dtype))


def shared_of(m: nn.Module) -> SharedWeights | None:
    if not parametrize.is_parametrized(m, "weight"):
        return None
    for p in m.parametrizations["weight"]:
        if isinstance(p, SharedWeights):
            return p
    return None


@torch.no_grad()
def bake(model: nn.Module) -> nn.Module:
    """Replace every shared weight by its plain tensor (in place): the model any runtime loads.

    Not ``parametrize.remove_parametrizations``: it deletes the weight property from the module's
    parametrized class, which a deep copy shares with its original, so baking a copy would break the
    model it was copied from."""
    for _, m in weight_layers(model):
        if shared_of(m) is not None:
            weight = m.weight.detach().clone()
            base = parametrize.type_before_parametrizations(m)
            del m._modules["parametrizations"]
            m.__class__ = base
            m.weight = nn.Parameter(weight)
    fix_zeros(model)
    return model


# --- coded size --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCoding:
    """How one layer's weights are stored and what that takes."""

    name: str
    weights: int
    nonzero: int
    clusters: int
    mode: str  # "dense" (at its bits), "indices" (one coded stream), "runs" (runs + values)
    bytes: int


def zero_runs(zero: np.ndarray) -> np.ndarray:
    """The run-length symbols of a zero mask: before each non-zero, the zeros since the previous one,
    with each full run of RUN_CAP zeros written as the escape symbol RUN_CAP. Trailing zeros are
    implied by the layer's size."""
    nz = np.flatnonzero(~zero)
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    escapes = gaps // RUN_CAP
    rest = gaps % RUN_CAP
    # Each non-zero: its escapes, then its remainder.
    counts = escapes + 1
    out = np.full(int(counts.sum()), RUN_CAP, dtype=np.int64)
    ends = np.cumsum(counts) - 1
    out[ends] = rest
    return out


def layer_coding(
    name: str, weight: torch.Tensor, *, clusters: int, wbits: int, index: torch.Tensor | None = None
) -> LayerCoding:
    """The smallest stored form of one layer's weight (see the module docstring)."""
    w = weight.detach().cpu()
    n = w.numel()
    if index is not None:
        idx = index.detach().cpu().numpy().ravel().astype(np.int64)
        zero = idx == clusters
    else:
        idx = None
        zero = (w == 0).numpy().ravel()
    nnz = int((~zero).sum())
    if idx is None:  # not clustered: values at the layer's bits, positions coded when sparse
        scales = w.shape[0] * 4 if wbits < 32 else 0  # one 32-bit scale per output channel
        dense = math.ceil(n * wbits / 8) + scales
        runs = (
            math.ceil(nnz * wbits / 8) + scales + entropy.coded_bytes(zero_runs(zero), RUN_CAP + 1)
        )
        # Binary levels have no zero: a binary layer with zeros codes their positions whatever it costs.
        coded = nnz < n and (runs < dense or wbits == 1)
        mode, size = ("runs", runs) if coded else ("dense", dense)
        return LayerCoding(name, n, nnz, 0, mode, size)
    book = clusters * CODEBOOK_BITS // 8
    one = entropy.coded_bytes(idx, clusters + 1)
    two = entropy.coded_bytes(zero_runs(zero), RUN_CAP + 1) + entropy.coded_bytes(
        idx[~zero], clusters
    )
    mode, size = ("runs", two) if nnz < n and two < one else ("indices", one)
    return LayerCoding(name, n, nnz, clusters, mode, book + size)


def model_codings(model: nn.Module, wbits: Callable[[str], int]) -> list[LayerCoding]:
    out = []
    for name, m in weight_layers(model):
        shared = shared_of(m)
        out.append(
            layer_coding(
                name,
                m.weight,
                clusters=shared.clusters if shared is not None else 0,
                wbits=wbits(name),
                index=shared.index if shared is not None else None,
            )
        )
    return out


def coded_size_bytes(model: nn.Module, wbits: Callable[[str], int] | None = None) -> int:
    """Bytes of the stored model: each weight layer in its coded form, every other parameter and the
    batch-norm statistics' affine parameters at 32 bits (running statistics fold into them)."""
    wb = wbits or (lambda name: int(getattr(_module(model, name), "weight_bits", 32)))
    total = sum(c.bytes for c in model_codings(model, wb))
    coded = set()
    for _, m in weight_layers(model):
        for p in m.parameters(recurse=True):
            coded.add(id(p))
    # Biases of the coded layers and every other parameter (batch norm's weight and bias).
    for _, m in weight_layers(model):
        if m.bias is not None:
            total += m.bias.numel() * 4
    total += sum(p.numel() * 4 for p in model.parameters() if id(p) not in coded)
    return int(total)


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)
