"""The hand-designed networks the arena trains beside the found ones.

- timm's small mobile networks, each as timm builds it (stride 32, designed for 224x224) and in its
  small-input form (the stem convolution's stride set to 1, as practitioners adapt them to 32x32);
- ResNet-8, MLPerf Tiny's CIFAR-10 reference (``st:resnet_v1_8_r32_c10`` in the MCU file), built here: its
  residual pairs of plain 3x3 convolutions with 1x1 projection shortcuts are not blocks of our grammar;
- MCUNet, MobileNetV2-0.35 and ProxylessNAS-0.3 from ``mcu_reference.json``, written as architecture
  strings of our grammar (what the grammar cannot say exactly is listed with each).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

TIMM_BASELINES = (
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
    "mobilenetv2_035",
    "mobilenetv2_050",
    "mobilenetv2_100",
    "lcnet_050",
    "lcnet_075",
    "lcnet_100",
    "mnasnet_small",
    "resnet10t",
)
MCU_BASELINES = ("mcunet-in0", "mcunet-vww0", "mbv2-w0.35", "proxyless-w0.3")
OTHER_BASELINES = ("resnet8",)
SMALL_SUFFIX = "@s1"  # the small-input form of a timm network


def all_baselines() -> list[str]:
    out = []
    for name in TIMM_BASELINES:
        out += [name, name + SMALL_SUFFIX]
    return [*out, *OTHER_BASELINES, *MCU_BASELINES]


class ResNet8(nn.Module):
    """MLPerf Tiny's ResNet-8 (Keras reference, as in ST's model zoo): 3x3 conv 16, three residual stacks
    (16, 32, 64 channels; the last two stride 2 with a 1x1 projection shortcut), global pool, linear."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3):
        super().__init__()

        def cbr(cin: int, cout: int, stride: int, act: bool = True) -> nn.Sequential:
            layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
            return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if act else []))

        self.stem = cbr(in_chans, 16, 1)
        self.a = nn.ModuleList([cbr(16, 16, 1), cbr(16, 32, 2), cbr(32, 64, 2)])
        self.b = nn.ModuleList(
            [cbr(16, 16, 1, False), cbr(32, 32, 1, False), cbr(64, 64, 1, False)]
        )
        self.short = nn.ModuleList(
            [nn.Identity(), nn.Conv2d(16, 32, 1, 2), nn.Conv2d(32, 64, 1, 2)]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for a, b, s in zip(self.a, self.b, self.short, strict=True):
            x = torch.relu(b(a(x)) + s(x))
        return self.fc(self.pool(x).flatten(1))


def _first_stride_one(model: nn.Module) -> None:
    """Set the stride of the network's first convolution to 1 (timm's stems: conv_stem or stem.conv)."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.stride = (1, 1)


def mcu_arch_string(net: dict[str, Any]) -> tuple[str, list[str]]:
    """One network of mcu_reference.json in our grammar, and what the string cannot say exactly."""
    from compactnas.spaces import format_arch, parse_arch
    from compactnas.spaces.layers import make_divisible

    a = net["architecture"]
    fc = a["first_conv"]
    segs = [f"stem_k{fc['kernel']}_s{fc['stride']}_c{fc['out_channels']}"]
    notes = ["ReLU where the network uses ReLU6"]
    for i, b in enumerate(a["blocks"]):
        e = b["expand_ratio"]
        kind = "ds" if not b["has_expand_conv"] else "ir"
        e_text = "1" if kind == "ds" else format(float(e), "g")
        segs.append(f"{kind}_r1_k{b['kernel']}_s{b['stride']}_e{e_text}_c{b['out_channels']}")
        if kind == "ir" and make_divisible(b["in_channels"] * e) != b["mid_channels"]:
            notes.append(
                f"block {i}: {b['mid_channels']} hidden channels, ours "
                f"{make_divisible(b['in_channels'] * e)} (timm rounds to multiples of 8)"
            )
        ours_skip = b["in_channels"] == b["out_channels"] and b["stride"] == 1
        if ours_skip != bool(b["residual"]):
            notes.append(f"block {i}: residual {b['residual']}, ours {ours_skip}")
    head = a.get("final_1x1_conv")
    segs.append(f"head_c{head['out_channels'] if head else 0}")
    text = format_arch(parse_arch("-".join(segs)))
    return text, notes


def load_mcu(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())["networks"]


def build_baseline(
    name: str, *, num_classes: int, in_chans: int, mcu: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The untrained network and facts about it (family, form, architecture string for MCU ones)."""
    if name == "resnet8":
        return ResNet8(num_classes, in_chans), {"family": "mlperf-tiny", "form": "as published"}
    if name in MCU_BASELINES:
        if mcu is None or name not in mcu:
            raise KeyError(f"{name}: mcu_reference.json not available")
        from compactnas.spaces import create_model

        arch, notes = mcu_arch_string(mcu[name])
        model = create_model(arch, num_classes=num_classes, in_chans=in_chans)
        return model, {
            "family": "mcu",
            "form": "as published",
            "arch": arch,
            "grammar_notes": notes,
        }
    import timm

    base = name.removesuffix(SMALL_SUFFIX)
    model = timm.create_model(base, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    small = name.endswith(SMALL_SUFFIX)
    if small:
        _first_stride_one(model)
    return model, {
        "family": "timm",
        "form": "small-input (first stride 1)" if small else "as built",
    }
