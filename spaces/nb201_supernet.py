"""A one-shot supernet over the ``nb201`` space: every edge holds all five operators, one path at a time.

NAS-Bench-201's networks repeat one cell in a fixed skeleton (spaces/nb201.py), so a sub-network is
six operator choices. In this supernet each edge of each of the 15 cells owns its own 1x1 and 3x3
ReLU-conv-BN (the parameter-free operators need no weights); the stem, the two reduction blocks and the
classifier are shared by all. Training samples one cell uniformly per batch (single-path one-shot,
Guo et al., ECCV 2020; ``sample_paths(seed)``, so the project's ``train()`` trains it as it trains any
network) and trains that path only, so each operator is trained on the batches whose
path chose it. ``set_cell(ops)`` fixes a path; ``subnetwork(ops)`` copies its weights into the
stand-alone ``nb201`` network (``create_model(nb201_spec(ops))``), whose output then equals the
supernet's for that path.

Batch-norm statistics are shared across paths during training and do not describe any one of them:
``recalibrate`` resets them and re-estimates them on a few training batches with the path fixed, as
one-shot methods do before they rank a sub-network.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from compactnas.spaces.build import create_model
from compactnas.spaces.cells import EDGES, OPS, ReLUConvBN, ResBlock
from compactnas.spaces.nb201 import CELLS_PER_STAGE, CHANNELS, nb201_spec


class _MixedEdge(nn.Module):
    """One edge: both convolutions as weights; the path chooses which operator runs."""

    def __init__(self, chs: int):
        super().__init__()
        self.conv1 = ReLUConvBN(chs, chs, 1)
        self.conv3 = ReLUConvBN(chs, chs, 3)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor, op: int) -> torch.Tensor:
        name = OPS[op]
        if name == "none":
            return x.mul(0.0)
        if name == "skip_connect":
            return x
        if name == "nor_conv_1x1":
            return self.conv1(x)
        if name == "nor_conv_3x3":
            return self.conv3(x)
        return self.pool(x)


class _MixedCell(nn.Module):
    def __init__(self, chs: int):
        super().__init__()
        self.edges = nn.ModuleList(_MixedEdge(chs) for _ in EDGES)

    def forward(self, x: torch.Tensor, ops: tuple[int, ...]) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            total: torch.Tensor | None = None
            for e, (to, i) in enumerate(EDGES):
                if to == j:
                    term = self.edges[e](nodes[i], ops[e])
                    total = term if total is None else total + term
            assert total is not None
            nodes.append(total)
        return nodes[3]


class NB201Supernet(nn.Module):
    """The nb201 skeleton with mixed cells; ``cell`` is the path that ``forward`` runs.

    Modules are named as in the stand-alone network (``stem``, ``stages.S.I``, ``lastact``,
    ``classifier``), so a sub-network's weights are found by name: only an edge's convolution gains a
    level (``edges.E.conv1`` / ``edges.E.conv3``).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, channels: int = CHANNELS):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        stages: list[nn.ModuleList] = []
        for s, c in enumerate((channels, 2 * channels, 4 * channels)):
            if s:
                stages.append(nn.ModuleList([ResBlock(c // 2, c, 2)]))
            stages.append(nn.ModuleList(_MixedCell(c) for _ in range(CELLS_PER_STAGE)))
        self.stages = nn.ModuleList(stages)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * channels), nn.ReLU())
        self.classifier = nn.Linear(4 * channels, num_classes)
        self.num_classes, self.in_chans, self.channels = num_classes, in_chans, channels
        self.cell: tuple[int, ...] = (3,) * len(EDGES)
        self.sampling: torch.Generator | None = None

    def sample_paths(self, seed: int | None) -> None:
        """With a seed: every forward pass in training mode draws its cell uniformly (single-path
        training through any training loop); None: the fixed ``cell`` runs, as in evaluation."""
        self.sampling = None if seed is None else torch.Generator().manual_seed(seed)

    def set_cell(self, ops: str | Iterable[int]) -> None:
        """Fix the path: six digits (index in OPS, as in the grammar's ``o`` code) or six indices."""
        cell = tuple(int(d) for d in ops)
        if len(cell) != len(EDGES) or not all(0 <= d < len(OPS) for d in cell):
            raise ValueError(f"a cell is six operator indices in 0..{len(OPS) - 1}, got {ops!r}")
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sampling is not None:
            draw = torch.randint(0, len(OPS), (len(EDGES),), generator=self.sampling)
            self.cell = tuple(int(d) for d in draw)
        x = self.stem(x)
        for stage in self.stages:
            for m in stage:
                x = m(x, self.cell) if isinstance(m, _MixedCell) else m(x)
        x = self.lastact(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def subnetwork(self, ops: str) -> nn.Module:
        """The stand-alone nb201 network of cell ``ops`` with this supernet's weights for it
        (batch-norm statistics included: recalibrate the supernet on the path first)."""
        self.set_cell(ops)
        model = create_model(
            nb201_spec(ops, channels=self.channels),
            num_classes=self.num_classes,
            in_chans=self.in_chans,
        )
        own = self.state_dict()
        conv = {OPS.index("nor_conv_1x1"): "conv1", OPS.index("nor_conv_3x3"): "conv3"}
        weights = {}
        for key in model.state_dict():
            parts = key.split(".")
            if parts[0] == "stages" and parts[3:4] == ["edges"]:
                edge = int(parts[4])
                parts.insert(5, conv[self.cell[edge]])
            weights[key] = own[".".join(parts)]
        model.load_state_dict(weights)
        return model


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Batch-norm running statistics re-estimated (cumulative average) on ``batches``, path fixed."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was = model.training
    model.train()
    for x in batches:
        model(x)
    model.train(was)
    for m in norms:
        m.momentum = 0.1
