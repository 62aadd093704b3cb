"""The layers an ArchSpec builds, with shapes, parameters and MACs, computed without building it.

This is the single statement of what a string promises: device latency models, energy, memory and size
read it, and pruned models are checked against it. Pruning (``pr``) removes ``round(pr * hidden)`` of a
block's hidden channels: an ir block's expanded channels (timm's ``make_divisible(in * e)``), a fire
block's squeeze channels. Batch-norm layers are listed with the convolution they follow (deployment
folds them into it) and counted in ``params`` as their affine weight and bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from compactnas.spaces.arch import ArchSpec, BlockSpec, as_spec, rank_of
from compactnas.spaces.cells import EDGES, OPS, cut_off, reaches_output


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One operator. ``op`` is conv, dwconv, linear, pool, gap, add, mul (SE gating), zero (a cell's
    ``none`` edge) or bn (a batch norm and ReLU of its own: NAS-Bench-201's last activation)."""

    name: str
    op: str
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    hin: int = 1
    win: int = 1
    hout: int = 1
    wout: int = 1
    weights: int = 0  # weight elements (quantized to wbits)
    extra_params: int = 0  # biases and batch-norm affine parameters (kept in 32 bits)
    wbits: int = 32
    abits: int = 32
    stage: int = -1  # -1 stem, -2 head/classifier
    live: bool = True  # its result reaches the output (what survives graph dead-code elimination)

    @property
    def params(self) -> int:
        return self.weights + self.extra_params

    @property
    def macs(self) -> int:
        if self.op in ("conv", "dwconv"):
            return (
                self.cout
                * (self.cin // self.groups)
                * self.kernel
                * self.kernel
                * self.hout
                * self.wout
            )
        if self.op == "linear":
            return self.cin * self.cout
        return 0

    @property
    def input_elems(self) -> int:
        return self.cin * self.hin * self.win

    @property
    def output_elems(self) -> int:
        return self.cout * self.hout * self.wout

    @property
    def weight_bytes(self) -> float:
        return self.weights * self.wbits / 8 + self.scale_bytes + self.extra_params * 4

    @property
    def scale_bytes(self) -> int:
        """Weights below 32 bits carry one 32-bit scale per output channel."""
        return self.cout * 4 if self.weights and self.wbits < 32 else 0


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's channel rounding for an inverted residual's expanded channels (timm.layers.make_divisible)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def _out(h: int, k: int, s: int) -> int:
    pad = ((s - 1) + (k - 1)) // 2
    return (h + 2 * pad - k) // s + 1


def pruned(hidden: int, ratio: float) -> int:
    return max(1, hidden - int(round(ratio * hidden)))


def hidden_channels(block: BlockSpec, in_chs: int) -> tuple[int, int]:
    """(dense, after pruning) hidden channels of one block of a stage with input ``in_chs``."""
    if block.kind in ("ir", "er"):
        dense = make_divisible(in_chs * block.expansion)
    elif block.kind == "fire":
        dense = block.squeeze
    else:
        dense = in_chs
    return dense, (pruned(dense, block.prune) if block.kind not in ("ds", "cn") else dense)


def conv_layer(
    name, cin, cout, k, s, h, w, *, groups=1, bn=True, bias=False, wb=32, ab=32, stage=-1
) -> Layer:
    ho, wo = _out(h, k, s), _out(w, k, s)
    extra = (2 * cout if bn else 0) + (cout if bias else 0)
    return Layer(
        name=name, op="dwconv" if groups > 1 and groups == cin else "conv", cin=cin, cout=cout, kernel=k,
        stride=s, groups=groups, hin=h, win=w, hout=ho, wout=wo, weights=cout * (cin // groups) * k * k,
        extra_params=extra, wbits=wb, abits=ab, stage=stage,
    )  # fmt: skip


_conv = conv_layer


def cell_layers(block: BlockSpec, prefix: str, chs: int, h: int, w: int, stage: int) -> list:
    """One cell's operators: every edge (``zero`` for none; skip has none) and the node sums.

    ``live`` marks what survives a graph compiler's dead-code elimination: a ``none`` edge adds nothing,
    an edge into a node whose value never reaches the output is dropped, and a node sums only its
    other edges. An edge reading a node that is constant (zero) still runs: constants are not propagated.
    """
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


def _block_layers(
    b: BlockSpec, i: int, j: int, cin: int, stride: int, h: int, w: int
) -> list[Layer]:
    wb, ab, st = b.wbits, b.abits, i
    p = f"stages.{i}.{j}"
    out: list[Layer] = []
    _, hid = hidden_channels(b, cin)
    if b.kind == "cell":
        return cell_layers(b, p, cin, h, w, st)
    if b.kind == "res":
        return res_layers(cin, b.channels, stride, p, h, w, st)
    if b.kind == "fire":
        if stride > 1:
            out.append(Layer(name=f"{p}.pool", op="pool", cin=cin, cout=cin, kernel=3, stride=stride,
                             hin=h, win=w, hout=_out(h, 3, stride), wout=_out(w, 3, stride), wbits=wb, abits=ab, stage=st))  # fmt: skip
            h, w = _out(h, 3, stride), _out(w, 3, stride)
        out.append(_conv(f"{p}.squeeze", cin, hid, 1, 1, h, w, wb=wb, ab=ab, stage=st))
        e1 = b.channels // 2
        out.append(_conv(f"{p}.expand1x1", hid, e1, 1, 1, h, w, wb=wb, ab=ab, stage=st))
        out.append(
            _conv(f"{p}.expand3x3", hid, b.channels - e1, 3, 1, h, w, wb=wb, ab=ab, stage=st)
        )
        if cin == b.channels and stride == 1:
            out.append(Layer(name=f"{p}.add", op="add", cin=cin, cout=cin, hin=h, win=w, hout=h, wout=w, wbits=wb, abits=ab, stage=st))  # fmt: skip
        return out
    if b.kind in ("cn", "er"):
        return _fused_layers(b, p, cin, hid, stride, h, w)
    dw_ch = hid if b.kind == "ir" else cin
    if b.kind == "ir":
        out.append(_conv(f"{p}.conv_pw", cin, hid, 1, 1, h, w, wb=wb, ab=ab, stage=st))
    dw = _conv(
        f"{p}.conv_dw", dw_ch, dw_ch, b.kernel, stride, h, w, groups=dw_ch, wb=wb, ab=ab, stage=st
    )
    out.append(dw)
    h, w = dw.hout, dw.wout
    if b.se:
        rd = (
            round(make_divisible(cin * b.expansion) * (b.se / b.expansion))
            if b.kind == "ir"
            else round(cin * b.se)
        )
        out.append(Layer(name=f"{p}.se.pool", op="gap", cin=dw_ch, cout=dw_ch, hin=h, win=w, wbits=wb, abits=ab, stage=st))  # fmt: skip
        out.append(
            _conv(
                f"{p}.se.conv_reduce",
                dw_ch,
                rd,
                1,
                1,
                1,
                1,
                bn=False,
                bias=True,
                wb=wb,
                ab=ab,
                stage=st,
            )
        )
        out.append(
            _conv(
                f"{p}.se.conv_expand",
                rd,
                dw_ch,
                1,
                1,
                1,
                1,
                bn=False,
                bias=True,
                wb=wb,
                ab=ab,
                stage=st,
            )
        )
        out.append(Layer(name=f"{p}.se.mul", op="mul", cin=dw_ch, cout=dw_ch, hin=h, win=w, hout=h, wout=w, wbits=wb, abits=ab, stage=st))  # fmt: skip
    name = "conv_pwl" if b.kind == "ir" else "conv_pw"
    out += _projection(f"{p}.{name}", dw_ch, b.channels, h, w, b, wb, ab, st)
    if cin == b.channels and stride == 1:
        out.append(Layer(name=f"{p}.add", op="add", cin=cin, cout=cin, hin=h, win=w, hout=h, wout=w, wbits=wb, abits=ab, stage=st))  # fmt: skip
    return out


def _projection(
    name: str, cin: int, cout: int, h: int, w: int, b: BlockSpec, wb: int, ab: int, st: int
) -> list[Layer]:
    """A block's 1x1 projection with its batch norm; factorised in two at low rank (``lr``)."""
    if not b.lowrank:
        return [_conv(name, cin, cout, 1, 1, h, w, wb=wb, ab=ab, stage=st)]
    r = rank_of(cin, cout, b.lowrank)
    return [
        _conv(f"{name}.0", cin, r, 1, 1, h, w, bn=False, wb=wb, ab=ab, stage=st),
        _conv(f"{name}.1", r, cout, 1, 1, h, w, wb=wb, ab=ab, stage=st),
    ]


def _se_layers(b: BlockSpec, p: str, cin: int, ch: int, h: int, w: int) -> list[Layer]:
    """Squeeze-excite on ``ch`` channels; timm sizes its reduction from the block input (se / e)."""
    wb, ab, st = b.wbits, b.abits, int(p.split(".")[1])
    rd = round(make_divisible(cin * b.expansion) * (b.se / b.expansion))
    return [
        Layer(name=f"{p}.se.pool", op="gap", cin=ch, cout=ch, hin=h, win=w, wbits=wb, abits=ab, stage=st),
        _conv(f"{p}.se.conv_reduce", ch, rd, 1, 1, 1, 1, bn=False, bias=True, wb=wb, ab=ab, stage=st),
        _conv(f"{p}.se.conv_expand", rd, ch, 1, 1, 1, 1, bn=False, bias=True, wb=wb, ab=ab, stage=st),
        Layer(name=f"{p}.se.mul", op="mul", cin=ch, cout=ch, hin=h, win=w, hout=h, wout=w, wbits=wb, abits=ab, stage=st),
    ]  # fmt: skip


def _fused_layers(
    b: BlockSpec, p: str, cin: int, hid: int, stride: int, h: int, w: int
) -> list[Layer]:
    """timm's ConvBnAct (``cn``: one k x k conv, no skip) and EdgeResidual (``er``: k x k expansion
    conv, optional SE, 1x1 linear projection, skip when shapes allow)."""
    wb, ab, st = b.wbits, b.abits, int(p.split(".")[1])
    if b.kind == "cn":
        return [_conv(f"{p}.conv", cin, b.channels, b.kernel, stride, h, w, wb=wb, ab=ab, stage=st)]
    exp = _conv(f"{p}.conv_exp", cin, hid, b.kernel, stride, h, w, wb=wb, ab=ab, stage=st)
    out = [exp]
    h, w = exp.hout, exp.wout
    if b.se:
        out += _se_layers(b, p, cin, hid, h, w)
    out += _projection(f"{p}.conv_pwl", hid, b.channels, h, w, b, wb, ab, st)
    if cin == b.channels and stride == 1:
        out.append(Layer(name=f"{p}.add", op="add", cin=cin, cout=cin, hin=h, win=w, hout=h, wout=w, wbits=wb, abits=ab, stage=st))  # fmt: skip
    return out


def block_inputs(
    spec: ArchSpec, input_shape: tuple[int, int, int]
) -> list[tuple[int, int, int, BlockSpec, int]]:
    """For each single block of each stage: (in_chs, h, w, block with r1 and its own stride, stage index).

    These are the units a per-block latency table is keyed on.
    """
    from dataclasses import replace

    spec = as_spec(spec)
    c, h, w = input_shape
    h, w = _out(h, spec.stem.kernel, spec.stem.stride), _out(w, spec.stem.kernel, spec.stem.stride)
    c = spec.stem.channels
    units = []
    for i, b in enumerate(spec.stages):
        for j in range(b.repeats):
            s = b.stride if j == 0 else 1
            units.append((c, h, w, replace(b, repeats=1, stride=s), i))
            h, w = (
                _out(h, b.kernel if b.kind != "fire" else 3, s),
                _out(w, b.kernel if b.kind != "fire" else 3, s),
            )
            c = b.channels
    return units


def arch_layers(
    spec: ArchSpec | str, input_shape: tuple[int, int, int], num_classes: int
) -> list[Layer]:
    """Every operator of the network for one input of shape (channels, height, width)."""
    spec = as_spec(spec)
    cin, h, w = input_shape
    s = spec.stem
    layers = [
        _conv("stem", cin, s.channels, s.kernel, s.stride, h, w, wb=s.wbits, ab=s.abits, stage=-1)
    ]
    h, w, c = layers[0].hout, layers[0].wout, s.channels
    constant_until = 0  # layers before a cell cut off from its input never reach the output
    exits: list[Layer] = []
    for i, b in enumerate(spec.stages):
        for j in range(b.repeats):
            stride = b.stride if j == 0 else 1
            bl = _block_layers(b, i, j, c, stride, h, w)
            if b.kind == "cell" and cut_off(b.ops):
                constant_until = len(layers)
            layers += bl
            last = bl[-1]
            h, w, c = last.hout, last.wout, b.channels
        if b.exit:  # an early exit on the stage's output: pool and a linear classifier, which
            # takes the head's bit-widths as the network's own classifier does (quantization.spec_bits)
            hb, ha = spec.head.wbits, spec.head.abits
            exits += [
                Layer(name=f"exits.{i}.pool", op="gap", cin=c, cout=c, hin=h, win=w, wbits=hb,
                      abits=ha, stage=i),
                Layer(name=f"exits.{i}", op="linear", cin=c, cout=num_classes,
                      weights=c * num_classes, extra_params=num_classes, wbits=hb, abits=ha,
                      stage=i),
            ]  # fmt: skip
    hd = spec.head
    if spec.stages and spec.stages[-1].kind == "cell":
        # A cell's output is a sum without activation: NAS-Bench-201 ends with batch norm and ReLU.
        layers.append(Layer(name="lastact", op="bn", cin=c, cout=c, hin=h, win=w, hout=h, wout=w, extra_params=2 * c, stage=-2))  # fmt: skip
    if hd.channels:
        layers.append(_conv("head", c, hd.channels, 1, 1, h, w, wb=hd.wbits, ab=hd.abits, stage=-2))
        c = hd.channels
    layers.append(Layer(name="pool", op="gap", cin=c, cout=c, hin=h, win=w, wbits=hd.wbits, abits=hd.abits, stage=-2))  # fmt: skip
    layers.append(
        Layer(name="classifier", op="linear", cin=c, cout=num_classes, weights=c * num_classes,
              extra_params=num_classes, wbits=hd.wbits, abits=hd.abits, stage=-2)
    )  # fmt: skip
    if constant_until:
        layers[:constant_until] = [replace(x, live=False) for x in layers[:constant_until]]
    # Exits come last, after the chain of layers each feeding the next (what memory planners walk);
    # a network with exits is then counted whole, every exit included: its size and worst case.
    return layers + exits


def count_params(spec: ArchSpec | str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    return sum(layer.params for layer in arch_layers(spec, input_shape, num_classes))


# Weight sharing (``sp``/``cl``; evaluators/clustering.py codes it): a zero run of RUN_CAP is one escape
# symbol, and a coded stream's table holds one 4-bit code length per symbol.
RUN_CAP = 16


def _table_bytes(alphabet: int) -> int:
    return (alphabet + 1) // 2


def coded_weight_bytes(weights: int, wbits: int, sparsity: float, clusters: int) -> float:
    """What a layer's weights take before training, under ``sp``/``cl``: each stream at fixed-length
    codes, the larger of what Huffman coding yields once the weights are known (the compress
    evaluator reports that measured size). Without either key: weights at their bits."""
    if not sparsity and not clusters:
        return weights * wbits / 8
    nonzero = round(weights * (1 - sparsity))
    run_bits = math.ceil(math.log2(RUN_CAP + 1))
    runs = (nonzero * run_bits + 7) // 8 + _table_bytes(RUN_CAP + 1) if sparsity else 0
    if not clusters:
        sparse = math.ceil(nonzero * wbits / 8) + runs
        # binary levels have no zero: a sparse binary layer always codes its zeros' positions
        return sparse if wbits == 1 else min(weights * wbits / 8, sparse)
    index_bits = max(1, math.ceil(math.log2(clusters + (1 if sparsity else 0))))
    one = (weights * index_bits + 7) // 8 + _table_bytes(clusters + 1)
    value_bits = max(1, math.ceil(math.log2(clusters)))
    two = runs + (nonzero * value_bits + 7) // 8 + _table_bytes(clusters)
    return clusters * 4 + (min(one, two) if sparsity else one)


def size_bytes(spec: ArchSpec | str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Deployed weight size: conv/linear weights at their bit-width (or coded, under ``sp``/``cl``) with
    a 32-bit scale per output channel below 32 bits, biases and BN in 32 bits."""
    spec = as_spec(spec)

    def part(stage: int) -> Any:
        return spec.stem if stage == -1 else spec.head if stage == -2 else spec.stages[stage]

    total = 0.0
    for layer in arch_layers(spec, input_shape, num_classes):
        p = part(layer.stage)
        if layer.weights and (p.sparsity or p.clusters):
            total += coded_weight_bytes(layer.weights, layer.wbits, p.sparsity, p.clusters)
            total += layer.scale_bytes + layer.extra_params * 4
        else:
            total += layer.weight_bytes
    return int(round(total))


def count_macs(spec: ArchSpec | str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    return sum(layer.macs for layer in arch_layers(spec, input_shape, num_classes))
