"""The units a lookup table is keyed on: the stem, every single block at its input shape, the tail.

Key: the unit's segment string + ``@CxHxW`` of its input, e.g. ``ir_r1_k5_s2_e6_c24_se0.25@16x8x8``.
The host runs every layer in fp32, so bit-widths (``wb``/``ab``) leave its latency unchanged and are not
part of the key; pruning (``pr``) removes channels and is. The tail is the optional 1x1 head convolution,
global pooling and the classifier (``head_c128@24x2x2``). A network of NAS-Bench-201 cells has its own
skeleton around them: a stem without ReLU (``stem_k3_s1_c16_noact@3x32x32``) and a batch norm and ReLU
before the tail (``lastact-head_c0@64x8x8``), timed as such, under keys of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from compactnas.spaces.arch import (
    ArchSpec,
    BlockSpec,
    HeadSpec,
    StemSpec,
    as_spec,
    format_arch,
    format_stage,
)
from compactnas.spaces.build import PRUNABLE_KINDS, build_stage, create_model, narrow_block
from compactnas.spaces.layers import arch_layers, block_inputs, hidden_channels


@dataclass(frozen=True, kw_only=True)
class Unit:
    kind: str  # stem, block or head
    key: str
    shape: tuple[int, int, int]  # input (channels, height, width)
    part: StemSpec | BlockSpec | HeadSpec
    cells: bool = False  # stem or tail of a NAS-Bench-201 skeleton (spaces/build.py's CompactNet)


def _shape_key(shape: tuple[int, int, int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _stem_segment(stem: StemSpec) -> str:
    return format_arch(
        ArchSpec(stem=replace(stem, wbits=32, abits=32), stages=(BlockSpec(kind="ds"),))
    ).split("-")[0]


def _head_segment(head: HeadSpec) -> str:
    return format_arch(
        ArchSpec(stages=(BlockSpec(kind="ds"),), head=replace(head, wbits=32, abits=32))
    ).split("-")[-1]


def network_units(spec: ArchSpec | str, input_shape: tuple[int, int, int]) -> list[Unit]:
    """The units of a network, in execution order."""
    spec = as_spec(spec)
    shape = tuple(int(d) for d in input_shape)
    # CompactNet drops the stem's ReLU before a first cell and adds BN + ReLU after a last one.
    bare = bool(spec.stages) and spec.stages[0].kind == "cell"
    lastact = bool(spec.stages) and spec.stages[-1].kind == "cell"
    units = [
        Unit(
            kind="stem",
            key=f"{_stem_segment(spec.stem)}{'_noact' if bare else ''}@{_shape_key(shape)}",
            shape=shape,
            part=spec.stem,
            cells=bare,
        )
    ]
    for c, h, w, block, _ in block_inputs(spec, shape):
        seg = format_stage(replace(block, wbits=32, abits=32))
        units.append(Unit(kind="block", key=f"{seg}@{c}x{h}x{w}", shape=(c, h, w), part=block))
    # The tail's input is whatever the last stage leaves; the layer list states it.
    first_tail = next(layer for layer in arch_layers(spec, shape, 1) if layer.stage == -2)
    tail_shape = (first_tail.cin, first_tail.hin, first_tail.win)
    units.append(
        Unit(
            kind="head",
            key=f"{'lastact-' if lastact else ''}{_head_segment(spec.head)}@{_shape_key(tail_shape)}",
            shape=tail_shape,
            part=spec.head,
            cells=lastact,
        )
    )
    return units


class Tail(nn.Module):
    """Head convolution, pooling and classifier: the same modules and calls as CompactNet's forward."""

    def __init__(self, head: nn.Module, pool: nn.Module, drop: nn.Module, classifier: nn.Module):
        super().__init__()
        self.head, self.pool, self.drop, self.classifier = head, pool, drop, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(self.pool(self.head(x)).flatten(1)))


def build_block(block: BlockSpec, in_chs: int) -> nn.Module:
    """One block (r1) as deployed: pruning applied structurally, keeping the first channels.

    Which channels survive does not change the time; how many does. Shapes follow spaces/layers.py.
    """
    block = replace(block, repeats=1)
    module = build_stage(replace(block, prune=0.0), in_chs)[0]
    if not block.prune or block.kind not in PRUNABLE_KINDS:
        return module
    _, hid = hidden_channels(block, in_chs)
    return narrow_block(module, block.kind, hid)


def build_unit(unit: Unit, *, num_classes: int) -> nn.Module:
    """The module a unit times, taken from the same builders the full network uses."""
    c = unit.shape[0]
    if unit.kind == "block":
        assert isinstance(unit.part, BlockSpec)
        return build_block(unit.part, c)
    if unit.kind == "stem":
        assert isinstance(unit.part, StemSpec)
        stem = create_model(
            ArchSpec(stem=unit.part, stages=(BlockSpec(kind="ds"),)), in_chans=c
        ).stem
        return stem[:2] if unit.cells else stem  # conv and batch norm only, as before a cell
    assert isinstance(unit.part, HeadSpec)
    net = create_model(
        ArchSpec(
            stem=StemSpec(channels=c), stages=(BlockSpec(kind="ds", channels=c),), head=unit.part
        ),
        num_classes=num_classes,
        in_chans=1,
    )
    head = net.head
    if unit.cells:  # the batch norm and ReLU after the last cell, then the head
        head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), net.head)
    return Tail(head, net.pool, net.drop, net.classifier)


def build_network(
    spec: ArchSpec | str, input_shape: tuple[int, int, int], *, num_classes: int
) -> nn.Module:
    """The whole network as create_model builds it, with pruned blocks narrowed as deployed."""
    spec = as_spec(spec)
    model = create_model(spec, num_classes=num_classes, in_chans=input_shape[0])
    seen: dict[int, int] = {}
    for c, _, _, block, i in block_inputs(spec, input_shape):
        j = seen[i] = seen.get(i, -1) + 1
        if block.prune and block.kind in PRUNABLE_KINDS:
            model.stages[i][j] = build_block(block, c)
    return model
