"""Zero-cost proxies: a network's promise scored from one minibatch at initialisation, no training.

Each proxy is computed on a freshly initialised network (``torch.manual_seed(seed)`` before the build
is the caller's; the proxies themselves draw nothing at random, so a seed and a batch fix the value):

``synflow``  (Tanaka et al., NeurIPS 2020; as a NAS proxy, Abdelfattah et al., ICLR 2021): every weight
             made positive, batch norm left out, an all-ones input in float64; the score is
             ``sum |theta * d(sum of outputs)/d theta|`` over convolution and linear weights. Needs no data.
``naswot``   (Mellor et al., ICML 2021): each input's binary code of which ReLUs are active; the score
             is ``log |det K|`` with ``K[i, j]`` = units where inputs i and j agree (both on or both off).
``jacov``    (Mellor et al., 2020, the first version): eigenvalues ``v`` of the correlation of the
             per-input Jacobians of the summed logits w.r.t. the input; ``-sum(log(v + k) + 1 / (v + k))``,
             ``k = 1e-5``.
``grad_norm``(Abdelfattah et al.): the sum over layers of the L2 norm of the cross-entropy gradient.
``snip``     (Lee et al., ICLR 2019): ``sum |theta * dL/d theta|`` over convolution and linear weights.
``meco``     (Jiang et al., NeurIPS 2023, MeCo): for every layer's feature map of the first input, the
             smallest eigenvalue of the correlation between its channels; the sum over layers.
``params``   the trainable parameter count, the baseline every proxy must beat.

Proxies whose raw values span many orders of magnitude (synflow, snip, grad_norm, params) are returned
as natural logarithms, so that a value is a finite float and a difference reads as a ratio. A proxy
that cannot be computed for a network (no ReLU for naswot, say) is ``nan``.

``rank_vote`` combines proxies over a population: each candidate's mean rank across the chosen proxies,
scaled to [0, 1]. Ranks are what the combination needs, not values: proxies live on unrelated scales.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

Proxy = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]

_WEIGHTED = (nn.Conv2d, nn.Linear)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, _WEIGHTED)]


def _forward_with_hook(
    model: nn.Module, x: torch.Tensor, modules: list[nn.Module], hook: Callable[..., None]
) -> None:
    """One forward pass without gradients, ``hook`` seeing the output of each of ``modules``."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


def _log(value: float) -> float:
    return math.log(value) if value > 0 else float("nan")


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = copy.deepcopy(model).double()
    for m in list(net.modules()):
        for child, sub in list(m.named_children()):
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                setattr(m, child, nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64)
    net(ones).sum().backward()
    with torch.no_grad():
        total = sum(float((w * w.grad).abs().sum()) for w in _weights(net) if w.grad is not None)
    return _log(total)


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    # K accumulates layer by layer: the codes of a whole network do not fit in memory at once.
    k = torch.zeros((len(x), len(x)), dtype=torch.float64)
    seen = []

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        c = (out.detach().reshape(len(out), -1) > 0).to(torch.float32)
        k.add_((c @ c.T + (1 - c) @ (1 - c).T).to(torch.float64))
        seen.append(True)

    _forward_with_hook(model, x, [m for m in model.modules() if isinstance(m, nn.ReLU)], hook)
    if not seen:
        return float("nan")
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) != 0 else float("nan")


def jacov(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    inp = x.clone().requires_grad_(True)
    model.zero_grad()
    model(inp).sum().backward()
    assert inp.grad is not None
    jac = inp.grad.reshape(len(x), -1).to(torch.float64)
    corr = torch.nan_to_num(torch.corrcoef(jac))
    v = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-torch.sum(torch.log(v.clamp_min(0) + k) + 1.0 / (v.clamp_min(0) + k)))


def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [w for w in _weights(model) if w.grad is not None]


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    ws = _loss_grads(model, x, y)
    with torch.no_grad():
        return _log(sum(float(w.grad.norm()) for w in ws))  # type: ignore[union-attr]


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    ws = _loss_grads(model, x, y)
    with torch.no_grad():
        return _log(sum(float((w * w.grad).abs().sum()) for w in ws))  # type: ignore[operator]


def meco(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    values: list[float] = []

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[1] < 2:
            return
        if out.shape[2] * out.shape[3] < 2:  # one value per channel: no correlation to measure
            return
        fea = out[0].detach().reshape(out.shape[1], -1).to(torch.float64)
        corr = torch.nan_to_num(torch.corrcoef(fea))
        values.append(float(torch.linalg.eigvalsh(corr)[0]))

    _forward_with_hook(model, x, [m for m in model.modules() if not list(m.children())], hook)
    return float(sum(values)) if values else float("nan")


def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return _log(float(sum(p.numel() for p in model.parameters() if p.requires_grad)))


PROXIES: dict[str, Proxy] = {
    "synflow": synflow,
    "naswot": naswot,
    "jacov": jacov,
    "grad_norm": grad_norm,
    "snip": snip,
    "meco": meco,
    "params": params,
}


def check_proxies(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ValueError(
            f"unknown zero-cost proxy {', '.join(map(repr, unknown))} (known: {', '.join(PROXIES)})"
        )
    return names


def score(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] = tuple(PROXIES),
    *,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """Every proxy in ``names`` for ``model`` on the minibatch ``(x, y)``, the model in training mode
    (batch norm on the batch's statistics, as at the first step of training). The model's weights and
    buffers (batch-norm statistics) are left as they were; its gradients are cleared. ``timings``:
    filled with each proxy's seconds."""
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    out: dict[str, float] = {}
    try:
        for name in check_proxies(names):
            t0 = time.perf_counter()
            out[name] = PROXIES[name](model, x, y)
            if timings is not None:
                timings[name] = time.perf_counter() - t0
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    return out


def ranks(values: Sequence[float]) -> list[float]:
    """Average ranks from 0 (lowest) upward, ties sharing their mean rank; ``nan`` ranks lowest."""
    filled = [-math.inf if math.isnan(v) else v for v in values]
    return [float(r) - 1.0 for r in rankdata(filled, method="average")]


def rank_vote(table: Sequence[Mapping[str, float]], names: Sequence[str]) -> list[float]:
    """Each row's mean rank over ``names`` (higher is better), scaled to [0, 1]."""
    if not table:
        return []
    per = [ranks([row[n] for row in table]) for n in names]
    top = max(len(table) - 1, 1)
    return [sum(r[i] for r in per) / (len(per) * top) for i in range(len(table))]
