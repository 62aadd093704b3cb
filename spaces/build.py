"""Building (ArchSpec -> nn.Module). The only module that touches timm's private block builder."""

from __future__ import annotations

import torch
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import EfficientNetBuilder, decode_arch_def
from torch import nn

from compactnas.spaces.arch import ArchSpec, BlockSpec, as_spec, format_stage
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
