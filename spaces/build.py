"""Building (ArchSpec -> nn.Module). The only module that touches timm's private block builder."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import EfficientNetBuilder, decode_arch_def
from torch import nn

from compactnas.spaces.arch import ArchSpec, BlockSpec, as_spec, format_stage, rank_of
from compactnas.spaces.cells import build_cell_stage


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expand branches concatenated.

    A stride of 2 is a 3x3 max pool in front, as SqueezeNet downsamples between fire modules; the block
    adds its input back when shapes allow (SqueezeNet's simple bypass).
    """

    def __init__(self, in_chs: int, out_chs: int, squeeze: int, stride: int = 1):
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride, padding=1) if stride > 1 else nn.Identity()
        self.squeeze = _conv_bn_act(in_chs, squeeze, 1)
        self.expand1x1 = _conv_bn_act(squeeze, out_chs // 2, 1)
        self.expand3x3 = _conv_bn_act(squeeze, out_chs - out_chs // 2, 3)
        self.has_skip = in_chs == out_chs and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        s = self.squeeze(x)
        out = torch.cat([self.expand1x1(s), self.expand3x3(s)], dim=1)
        return out + x if self.has_skip else out


def _timm_stage(block: BlockSpec, in_chs: int) -> nn.Sequential:
    # Compression keys are stripped: timm reads unknown keys silently and 'p'/'a' as kernel sizes.
    builder = EfficientNetBuilder(
        round_chs_fn=lambda c: int(c),
        se_from_exp=False,
        act_layer=nn.ReLU,
        norm_layer=nn.BatchNorm2d,
        se_layer=SqueezeExcite,
    )
    stages = builder(in_chs, decode_arch_def([[format_stage(block, compression=False)]]))
    assert len(stages) == 1
    return stages[0]


def build_stage(block: BlockSpec, in_chs: int) -> nn.Sequential:
    if block.kind in ("cell", "res"):
        return build_cell_stage(block, in_chs)
    if block.kind == "fire":
        layers = [
            Fire(
                in_chs if i == 0 else block.channels,
                block.channels,
                block.squeeze,
                block.stride if i == 0 else 1,
            )
            for i in range(block.repeats)
        ]
        return nn.Sequential(*layers)
    return _timm_stage(block, in_chs)


def _narrow_conv(conv: nn.Conv2d, *, cin: int | None = None, cout: int | None = None) -> nn.Conv2d:
    new = copy.deepcopy(conv)
    cin = conv.in_channels if cin is None else cin
    cout = conv.out_channels if cout is None else cout
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    groups = cout if depthwise else conv.groups
    new.in_channels, new.out_channels, new.groups = cin, cout, groups
    new.weight = nn.Parameter(conv.weight.detach()[:cout, : cin // groups].clone())
    if conv.bias is not None:
        new.bias = nn.Parameter(conv.bias.detach()[:cout].clone())
    return new


def _narrow_bn(bn: nn.BatchNorm2d, n: int) -> nn.BatchNorm2d:
    new = copy.deepcopy(bn)
    new.num_features = n
    new.weight = nn.Parameter(bn.weight.detach()[:n].clone())
    new.bias = nn.Parameter(bn.bias.detach()[:n].clone())
    new.running_mean = bn.running_mean[:n].clone()
    new.running_var = bn.running_var[:n].clone()
    return new


def _narrow_fire(m: nn.Module, hid: int) -> None:
    m.squeeze[0] = _narrow_conv(m.squeeze[0], cout=hid)
    m.squeeze[1] = _narrow_bn(m.squeeze[1], hid)
    m.expand1x1[0] = _narrow_conv(m.expand1x1[0], cin=hid)
    m.expand3x3[0] = _narrow_conv(m.expand3x3[0], cin=hid)


def _narrow_edge_residual(m: nn.Module, hid: int) -> None:
    m.conv_exp = _narrow_conv(m.conv_exp, cout=hid)
    m.bn1 = _narrow_bn(m.bn1, hid)
    _narrow_se_and_projection(m, hid)


def _narrow_inverted_residual(m: nn.Module, hid: int) -> None:
    m.conv_pw = _narrow_conv(m.conv_pw, cout=hid)
    m.bn1 = _narrow_bn(m.bn1, hid)
    m.conv_dw = _narrow_conv(m.conv_dw, cin=hid, cout=hid)
    m.bn2 = _narrow_bn(m.bn2, hid)
    _narrow_se_and_projection(m, hid)


def _narrow_se_and_projection(m: nn.Module, hid: int) -> None:
    if isinstance(getattr(m.se, "conv_reduce", None), nn.Conv2d):
        m.se.conv_reduce = _narrow_conv(m.se.conv_reduce, cin=hid)
        m.se.conv_expand = _narrow_conv(m.se.conv_expand, cout=hid)
    m.conv_pwl = _narrow_conv(m.conv_pwl, cin=hid)


# Block kinds whose hidden channels a pruning ratio removes: for each, the conv that produces the
# hidden channels (the root a structured pruner cuts) and how to narrow a dense block to ``hid`` of
# them as deployed. A new prunable block kind adds its two entries here.
_PRUNE_ROOT: dict[str, Callable[[nn.Module], nn.Module]] = {
    "ir": lambda m: m.conv_pw,
    "er": lambda m: m.conv_exp,
    "fire": lambda m: m.squeeze[0],
}
_NARROW: dict[str, Callable[[nn.Module, int], None]] = {
    "ir": _narrow_inverted_residual,
    "er": _narrow_edge_residual,
    "fire": _narrow_fire,
}
PRUNABLE_KINDS = frozenset(_PRUNE_ROOT)


def prune_root(module: nn.Module, kind: str) -> nn.Module:
    """The conv of one built block of ``kind`` whose output channels are its hidden channels."""
    return _PRUNE_ROOT[kind](module)


def narrow_block(module: nn.Module, kind: str, hid: int) -> nn.Module:
    """A dense block of ``kind`` narrowed in place to its first ``hid`` hidden channels."""
    _NARROW[kind](module, hid)
    return module


# The 1x1 projection a low-rank key (``lr``) factorises, per block kind.
PROJECTION = {"ir": "conv_pwl", "er": "conv_pwl", "ds": "conv_pw"}


@torch.no_grad()
def factorised(conv: nn.Conv2d, fraction: float) -> nn.Sequential:
    """A 1x1 convolution (cin -> cout) as two, cin -> r -> cout, r = ``rank_of``, initialised by the
    truncated SVD of its weight (W ~ U_r S_r V_r^T, split as (U_r S_r^1/2)(S_r^1/2 V_r^T)): the best
    rank-r approximation of what it computed. No activation between them, bias on the second."""
    cout, cin = conv.out_channels, conv.in_channels
    r = rank_of(cin, cout, fraction)
    u, s, vh = torch.linalg.svd(
        conv.weight.detach().reshape(cout, cin).double(), full_matrices=False
    )
    root = s[:r].sqrt()
    first = nn.Conv2d(cin, r, 1, bias=False)
    second = nn.Conv2d(r, cout, 1, bias=conv.bias is not None)
    first.weight.copy_((root[:, None] * vh[:r]).reshape(r, cin, 1, 1).float())
    second.weight.copy_((u[:, :r] * root[None]).reshape(cout, r, 1, 1).float())
    if conv.bias is not None:
        second.bias.copy_(conv.bias.detach())
    return nn.Sequential(first, second).to(conv.weight.device)


def factorise_projections(model: nn.Module, spec: ArchSpec) -> nn.Module:
    """Replace (in place) the 1x1 projection of every block of a stage with ``lr`` by its low-rank
    pair (``factorised``); returns ``model``. Stages already factorised are left as they are."""
    for block, stage in zip(spec.stages, model.stages, strict=True):
        if block.lowrank > 0:
            name = PROJECTION[block.kind]
            for m in stage:
                if isinstance(getattr(m, name), nn.Conv2d):
                    setattr(m, name, factorised(getattr(m, name), block.lowrank))
    return model


class CompactNet(nn.Module):
    """stem -> stages -> optional 1x1 head conv -> global average pool -> dropout -> linear.

    Networks of NAS-Bench-201 cells follow its skeleton: a stem of conv and batch norm only (the cells'
    edges start with their own ReLU), and batch norm and ReLU after the last cell, whose output is a sum.
    """

    def __init__(self, spec: ArchSpec, *, num_classes: int, in_chans: int, drop_rate: float = 0.0):
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem = _conv_bn_act(in_chans, spec.stem.channels, spec.stem.kernel, spec.stem.stride)
        if spec.stages and spec.stages[0].kind == "cell":
            self.stem = self.stem[:2]
        stages, chs = [], spec.stem.channels
        for block in spec.stages:
            stages.append(build_stage(block, chs))
            chs = block.channels
        self.stages = nn.Sequential(*stages)
        # Early exits (``ex``): a linear classifier on the pooled output of each stage that has one,
        # keyed by the stage's index. ``forward`` is the full network; ``forward_exits`` adds them.
        self.exits = nn.ModuleDict(
            {
                str(i): nn.Linear(block.channels, num_classes)
                for i, block in enumerate(spec.stages)
                if block.exit > 0
            }
        )
        self.lastact = nn.Identity()
        if spec.stages and spec.stages[-1].kind == "cell":
            self.lastact = nn.Sequential(nn.BatchNorm2d(chs), nn.ReLU(inplace=True))
        if spec.head.channels > 0:
            self.head = _conv_bn_act(chs, spec.head.channels, 1)
            chs = spec.head.channels
        else:
            self.head = nn.Identity()
        self.num_features = chs
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = nn.Linear(chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lastact(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.drop(x))

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit in order of depth, the network's own output last."""
        out = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if str(i) in self.exits:
                out.append(self.exits[str(i)](self.pool(x).flatten(1)))
        x = self.pool(self.head(self.lastact(x))).flatten(1)
        out.append(self.classifier(self.drop(x)))
        return out


def create_model(
    spec_or_string: ArchSpec | str,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    drop_rate: float = 0.0,
) -> CompactNet:
    """Build a network from an ArchSpec or an architecture string (compression is applied separately)."""
    return CompactNet(
        as_spec(spec_or_string), num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
    )
