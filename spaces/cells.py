"""NAS-Bench-201's building blocks: the cell and the residual reduction block, as modules and as layers.

Built as NAS-Bench-201 builds them (Dong & Yang, ICLR 2020), so parameter counts match its networks:
every edge of a cell is an operator, a ``none`` edge included (it multiplies by zero); a convolution edge
is ReLU -> conv -> batch norm; ``avg_pool_3x3`` has stride 1 and leaves padding out of the average;
node j is the sum of its incoming edges; node 3 is the output. The reduction block is a ResNet basic
block: two ReLU-conv-BN 3x3 (the first strided) plus a shortcut of a 2x2 average pool and a 1x1 conv.
"""

from __future__ import annotations

from dataclasses import replace

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


def cell_layers(block: BlockSpec, prefix: str, chs: int, h: int, w: int, stage: int) -> list:
    """One cell's operators: every edge (``zero`` for none; skip has none) and the node sums.

    ``live`` marks what survives a graph compiler's dead-code elimination: a ``none`` edge adds nothing,
    an edge into a node whose value never reaches the output is dropped, and a node sums only its
    other edges. An edge reading a node that is constant (zero) still runs: constants are not propagated.
    """
    from compactnas.spaces.layers import Layer, conv_layer

    reach = reaches_output(block.ops)
    out = []
    for e, (to, i) in enumerate(EDGES):
        op = OPS[int(block.ops[e])]
        name = f"{prefix}.edge{to}{i}"
        live = to in reach
        if op.startswith("nor_conv"):
            k = 3 if op == "nor_conv_3x3" else 1
            out.append(replace(conv_layer(name, chs, chs, k, 1, h, w, stage=stage), live=live))
        elif op != "skip_connect":
            kind, k = ("pool", 3) if op == "avg_pool_3x3" else ("zero", 1)
            out.append(Layer(name=name, op=kind, cin=chs, cout=chs, kernel=k, hin=h, win=w, hout=h, wout=w, stage=stage, live=live and kind != "zero"))  # fmt: skip
        if to > 1 and i == to - 1:
            # node ``to`` sums its ``to`` inputs: to - 1 additions (fewer once none edges are dropped)
            terms = sum(block.ops[x] != "0" for x, (t, _) in enumerate(EDGES) if t == to)
            for a in range(to - 1):
                out.append(Layer(name=f"{prefix}.add{to}{a}", op="add", cin=chs, cout=chs, hin=h, win=w, hout=h, wout=w, stage=stage, live=to in reach and a < terms - 1))  # fmt: skip
    return out


def res_layers(cin: int, cout: int, stride: int, prefix: str, h: int, w: int, stage: int) -> list:
    from compactnas.spaces.layers import Layer, conv_layer

    a = conv_layer(f"{prefix}.conv_a", cin, cout, 3, stride, h, w, stage=stage)
    b = conv_layer(f"{prefix}.conv_b", cout, cout, 3, 1, a.hout, a.wout, stage=stage)
    out = [a, b]
    if stride == 2:
        out.append(Layer(name=f"{prefix}.downsample.pool", op="pool", cin=cin, cout=cin, kernel=2, stride=2, hin=h, win=w, hout=h // 2, wout=w // 2, stage=stage))  # fmt: skip
        out.append(conv_layer(f"{prefix}.downsample.conv", cin, cout, 1, 1, h // 2, w // 2, bn=False, stage=stage))  # fmt: skip
    elif cin != cout:
        out.append(conv_layer(f"{prefix}.downsample", cin, cout, 1, 1, h, w, stage=stage))
    ho, wo = a.hout, a.wout
    out.append(Layer(name=f"{prefix}.add", op="add", cin=cout, cout=cout, hin=ho, win=wo, hout=ho, wout=wo, stage=stage))  # fmt: skip
    return out
