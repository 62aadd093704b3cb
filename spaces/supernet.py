"""A weight-sharing supernet over the elastic space (spaces/elastic.py), and sub-network extraction.

One set of weights holds the largest sub-network; a smaller one uses a slice of it: the first output
and input channels of every convolution and batch norm (widths and expansion), the first blocks of a
stage (depth), the centre of each 7x7 depthwise kernel (kernel size). As in once-for-all, a 5x5 or 3x3
kernel is the centre of the next larger one passed through a small learned linear map (identity at
first), so small kernels need not share their values exactly with the large kernel's centre.

``extract(spec)`` returns exactly the module ``create_model(spec)`` builds, with the slices copied in
(a strict ``load_state_dict``), so export, retraining, distillation, latency and layer lists work on it
as on any network; in eval mode its output equals the supernet's for that sub-network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compactnas.spaces.arch import ArchSpec
from compactnas.spaces.build import CompactNet, create_model
from compactnas.spaces.elastic import ElasticSpace
from compactnas.spaces.layers import make_divisible


def _pad(k: int, stride: int) -> int:
    return ((stride - 1) + (k - 1)) // 2  # timm's static "same"-like padding


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, c: int, training: bool) -> torch.Tensor:
    # Slices of the running statistics are views: training updates the shared buffers in place.
    return F.batch_norm(
        x,
        bn.running_mean[:c],
        bn.running_var[:c],
        bn.weight[:c],
        bn.bias[:c],
        training,
        bn.momentum,
        bn.eps,
    )


def _bn_state(bn: nn.BatchNorm2d, c: int) -> dict[str, torch.Tensor]:
    return {
        "weight": bn.weight[:c],
        "bias": bn.bias[:c],
        "running_mean": bn.running_mean[:c],
        "running_var": bn.running_var[:c],
        "num_batches_tracked": bn.num_batches_tracked,
    }


class ElasticIR(nn.Module):
    """An inverted residual at its largest (1x1 expand, 7x7 depthwise, 1x1 project), sliced on demand."""

    def __init__(self, max_in: int, max_out: int, max_exp: float, max_k: int, stride: int):
        super().__init__()
        self.stride = stride
        self.max_k = max_k
        mid = make_divisible(max_in * max_exp)
        self.conv_pw = nn.Parameter(torch.empty(mid, max_in, 1, 1))
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Parameter(torch.empty(mid, 1, max_k, max_k))
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv_pwl = nn.Parameter(torch.empty(max_out, mid, 1, 1))
        self.bn3 = nn.BatchNorm2d(max_out)
        # One map per smaller kernel, from the centre of the next larger (e.g. "5": 25 x 25).
        self.kernel_maps = nn.ParameterDict(
            {str(k): nn.Parameter(torch.eye(k * k)) for k in range(max_k - 2, 1, -2)}
        )
        for w in (self.conv_pw, self.conv_pwl):
            nn.init.kaiming_normal_(w, mode="fan_out")
        nn.init.kaiming_normal_(self.conv_dw, mode="fan_out")

    def kernel(self, k: int, mid: int) -> torch.Tensor:
        w = self.conv_dw[:mid]
        size = self.max_k
        while size > k:
            start = 1
            size -= 2
            w = w[:, :, start : start + size, start : start + size]
            m = self.kernel_maps[str(size)]
            w = (w.reshape(mid, size * size) @ m).reshape(mid, 1, size, size)
        return w

    def forward(self, x: torch.Tensor, k: int, exp: float, cout: int) -> torch.Tensor:
        cin = x.shape[1]
        mid = make_divisible(cin * exp)
        h = F.conv2d(x, self.conv_pw[:mid, :cin])
        h = F.relu(_bn(h, self.bn1, mid, self.training))
        h = F.conv2d(
            h, self.kernel(k, mid), stride=self.stride, padding=_pad(k, self.stride), groups=mid
        )
        h = F.relu(_bn(h, self.bn2, mid, self.training))
        h = _bn(F.conv2d(h, self.conv_pwl[:cout, :mid]), self.bn3, cout, self.training)
        return h + x if cin == cout and self.stride == 1 else h

    def state_for(self, cin: int, k: int, exp: float, cout: int) -> dict[str, torch.Tensor]:
        mid = make_divisible(cin * exp)
        out = {
            "conv_pw.weight": self.conv_pw[:mid, :cin],
            "conv_dw.weight": self.kernel(k, mid),
            "conv_pwl.weight": self.conv_pwl[:cout, :mid],
        }
        for name, c in (("bn1", mid), ("bn2", mid), ("bn3", cout)):
            out.update({f"{name}.{k2}": v for k2, v in _bn_state(getattr(self, name), c).items()})
        return out


class Supernet(nn.Module):
    """Every sub-network of an ElasticSpace in one module; ``forward(x, spec)`` runs one of them."""

    def __init__(self, space: ElasticSpace, *, num_classes: int, in_chans: int):
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_chans = in_chans
        big = space.largest()
        self.largest_spec = big
        self.stem_conv = nn.Parameter(torch.empty(big.stem.channels, in_chans, 3, 3))
        nn.init.kaiming_normal_(self.stem_conv, mode="fan_out")
        self.stem_bn = nn.BatchNorm2d(big.stem.channels)
        stages, cin = [], big.stem.channels
        for b in big.stages:
            blocks = [
                ElasticIR(cin if j == 0 else b.channels, b.channels, b.expansion, b.kernel,
                          b.stride if j == 0 else 1)
                for j in range(b.repeats)
            ]  # fmt: skip
            stages.append(nn.ModuleList(blocks))
            cin = b.channels
        self.stages = nn.ModuleList(stages)
        self.head_conv = nn.Parameter(torch.empty(big.head.channels, cin, 1, 1))
        nn.init.kaiming_normal_(self.head_conv, mode="fan_out")
        self.head_bn = nn.BatchNorm2d(big.head.channels)
        self.classifier = nn.Linear(big.head.channels, num_classes)
        # A sub-network without a head convolution classifies the last stage's features directly.
        self.classifier_direct = nn.Linear(cin, num_classes)
        self.active: ArchSpec = big

    def set_active(self, spec: ArchSpec | str) -> ArchSpec:
        self.active = self.space.check(spec)
        return self.active

    def forward(self, x: torch.Tensor, spec: ArchSpec | None = None) -> torch.Tensor:
        spec = spec or self.active
        c = spec.stem.channels
        x = F.conv2d(x, self.stem_conv[:c], stride=spec.stem.stride, padding=1)
        x = F.relu(_bn(x, self.stem_bn, c, self.training))
        for blocks, b in zip(self.stages, spec.stages, strict=True):
            for j in range(b.repeats):
                x = blocks[j](x, b.kernel, b.expansion, b.channels)
        if spec.head.channels:
            hc = spec.head.channels
            x = F.relu(
                _bn(F.conv2d(x, self.head_conv[:hc, : x.shape[1]]), self.head_bn, hc, self.training)
            )
        x = x.mean((2, 3))
        return self._classify(x, spec)

    def _classify(self, x: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        lin = self.classifier if spec.head.channels else self.classifier_direct
        return F.linear(x, lin.weight[:, : x.shape[1]], lin.bias)

    @torch.no_grad()
    def sub_state_dict(self, spec: ArchSpec | str) -> dict[str, torch.Tensor]:
        """The sub-network's weights under the names ``create_model(spec)`` gives them (copies)."""
        spec = self.space.check(spec)
        c = spec.stem.channels
        sd: dict[str, torch.Tensor] = {"stem.0.weight": self.stem_conv[:c]}
        sd.update({f"stem.1.{k}": v for k, v in _bn_state(self.stem_bn, c).items()})
        cin = c
        for i, (blocks, b) in enumerate(zip(self.stages, spec.stages, strict=True)):
            for j in range(b.repeats):
                state = blocks[j].state_for(cin, b.kernel, b.expansion, b.channels)
                sd.update({f"stages.{i}.{j}.{k}": v for k, v in state.items()})
                cin = b.channels
        if spec.head.channels:
            hc = spec.head.channels
            sd["head.0.weight"] = self.head_conv[:hc, :cin]
            sd.update({f"head.1.{k}": v for k, v in _bn_state(self.head_bn, hc).items()})
            cin = hc
        lin = self.classifier if spec.head.channels else self.classifier_direct
        sd["classifier.weight"] = lin.weight[:, :cin]
        sd["classifier.bias"] = lin.bias
        return {k: v.detach().clone() for k, v in sd.items()}

    def extract(self, spec: ArchSpec | str) -> CompactNet:
        """``create_model(spec)`` with this supernet's weights for it (a stand-alone copy)."""
        spec = self.space.check(spec)
        model = create_model(spec, num_classes=self.num_classes, in_chans=self.in_chans)
        model.load_state_dict(self.sub_state_dict(spec), strict=True)
        model.train(self.training)
        return model
