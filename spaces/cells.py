"""NAS-Bench-201's building blocks: the cell and the residual reduction block, as modules (their
layer lists, for counting and device models, are spaces/layers.py's cell_layers and res_layers).

Built as NAS-Bench-201 builds them (Dong & Yang, ICLR 2020), so parameter counts match its networks:
every edge of a cell is an operator, a ``none`` edge included (it multiplies by zero); a convolution edge
is ReLU -> conv -> batch norm; ``avg_pool_3x3`` has stride 1 and leaves padding out of the average;
node j is the sum of its incoming edges; node 3 is the output. The reduction block is a ResNet basic
block: two ReLU-conv-BN 3x3 (the first strided) plus a shortcut of a 2x2 average pool and a 1x1 conv.
"""

from __future__ import annotations

import torch
from torch import nn

from compactnas.spaces.arch import BlockSpec

# NAS-Bench-201's edge order: (to node, from node).
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
        )


class Zero(nn.Module):
    """A ``none`` edge: zeros of the input's shape (computed, as NAS-Bench-201 does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _edge(op: str, chs: int) -> nn.Module:
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(chs, chs, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(chs, chs, 3)
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class Cell(nn.Module):
    def __init__(self, ops: str, chs: int):
        super().__init__()
        self.ops = ops
        self.edges = nn.ModuleList(_edge(OPS[int(d)], chs) for d in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            terms = [self.edges[e](nodes[i]) for e, (to, i) in enumerate(EDGES) if to == j]
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            nodes.append(total)
        return nodes[3]


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1)
        if stride == 2:
            self.downsample: nn.Module = nn.Sequential(
                nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False)
            )
        elif cin != cout:
            self.downsample = ReLUConvBN(cin, cout, 1)
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def build_cell_stage(block: BlockSpec, in_chs: int) -> nn.Sequential:
    if block.kind == "res":
        return nn.Sequential(
            *(
                ResBlock(
                    in_chs if i == 0 else block.channels,
                    block.channels,
                    block.stride if i == 0 else 1,
                )
                for i in range(block.repeats)
            )
        )
    if in_chs != block.channels:
        raise ValueError(f"a cell keeps its channels: input {in_chs} != c{block.channels}")
    return nn.Sequential(*(Cell(block.ops, block.channels) for _ in range(block.repeats)))


def reaches_output(ops: str) -> set[int]:
    """Nodes whose value reaches the cell's output (node 3) through edges other than ``none``."""
    live = {3}
    for e in reversed(range(len(EDGES))):
        to, i = EDGES[e]
        if ops[e] != "0" and to in live:
            live.add(i)
    return live


def cut_off(ops: str) -> bool:
    """The cell's output does not depend on its input: only ``none`` paths join them."""
    return 0 not in reaches_output(ops)
