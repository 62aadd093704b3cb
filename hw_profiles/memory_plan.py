"""Peak activation memory as a microcontroller runtime plans it, from a network's layer list.

Runtimes differ in how they lay activations out, and peak SRAM follows the planner, not the network:

- ``live``: the largest set of activations alive at once (``analysis.peak_activation_bytes``), an ideal
  planner with no fragmentation; what profiles without a named planner use.
- ``tflm``: TF-Lite Micro's greedy memory planner. Every activation tensor lives from the operator that
  writes it to the last one that reads it; tensors are placed largest first, each at the lowest
  16-byte-aligned offset that no tensor alive at the same time occupies. The arena also holds per-operator
  state that lives for the whole run: the per-channel requantization multiplier and shift of every
  convolution (two int32 per output channel) and the interpreter's node and tensor records.
- ``cmsisnn``: ``tflm`` plus the scratch buffers CMSIS-NN kernels request for the duration of one
  operator (im2col columns as int16 for a k x k convolution, one k x k window per channel for a depthwise).
- ``inplace``: TinyEngine's code generator. A depthwise convolution writes over its own input, tensors
  are placed first-fit largest first, and two shared scratch buffers sized for the most demanding layer
  sit beside the activations (im2col: 2 columns x k*k*cin int16; the in-place depthwise's padded channel
  as int16; a k x k convolution's weights widened to int16).
- ``overlap``: output written over the input as it is consumed (1x1 and depthwise convolutions and
  pooling read a pixel, or a few rows, ahead of what they write), so an operator needs the larger of its
  input and output plus a window of k input rows, beside whatever else is alive (a residual's input).
  STM32Cube.AI's activation buffers match this rule on the published measurements; its documentation
  does not state the rule, so it is a hypothesis fitted by its form, not a description of the tool.

Each planner counts bytes at each layer's activation width; the profile adds ``runtime_sram_kb`` (the
runtime's own fixed share: stack, I/O, kernel state) on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compactnas.core.errors import ConfigError
from compactnas.hw_profiles.analysis import peak_activation_bytes
from compactnas.hw_profiles.profile import PLANNERS
from compactnas.spaces.layers import Layer

TFLM_ALIGN = 16  # TF-Lite Micro aligns every arena buffer to 16 bytes
TFLM_CHANNEL_STATE = 8  # bytes per output channel of a convolution: int32 multiplier + int32 shift
TFLM_OP_STATE = 64  # bytes per operator: node and registration record, evaluation-tensor records


@dataclass(frozen=True)
class Buffer:
    size: int
    first: int  # index of the operator that writes it (0 for the network input)
    last: int  # index of the last operator that reads it


def _block_of(name: str) -> str | None:
    parts = name.split(".")
    return ".".join(parts[:3]) if parts[0] == "stages" and len(parts) > 3 else None


def _bytes(elems: int, layer: Layer, align: int) -> int:
    return int(math.ceil(elems * layer.abits / 8 / align) * align)


def lifetimes(
    layers: tuple[Layer, ...], *, inplace_dw: bool = False, align: int = 1
) -> list[Buffer]:
    """Activation buffers with the operators that write and last read them. Layers run in order, each
    reading the previous one's output; a block's ``add`` also reads the block input, squeeze-excite's
    ``mul`` the tensor it gates, and a fire block's two expand convolutions write one concatenated tensor.
    ``inplace_dw``: a depthwise convolution writes over its input unless that input is still needed."""
    if not layers:
        return []
    with_add = {_block_of(x.name) for x in layers if x.op == "add"} - {None}
    size, first, last = [], [], []

    def new(nbytes: int, at: int) -> int:
        size.append(nbytes)
        first.append(at)
        last.append(at)
        return len(size) - 1

    cur = new(_bytes(layers[0].input_elems, layers[0], align), 0)
    block_in: dict[str, int] = {}
    gated: dict[str, int] = {}
    concat: dict[str, int] = {}
    squeeze: dict[str, int] = {}
    for i, x in enumerate(layers):
        blk = _block_of(x.name)
        if blk is not None:
            block_in.setdefault(blk, cur)
        last[cur] = i
        if x.op == "add" and blk in block_in:
            last[block_in[blk]] = i
        if x.name.endswith(".se.pool") and blk is not None:
            gated[blk] = cur
        if x.op == "mul" and blk in gated:
            last[gated[blk]] = i
        if x.name.endswith((".expand1x1", ".expand3x3")) and blk is not None:
            if blk in concat:  # the second expand reads the same squeeze, writes the other half
                last[squeeze[blk]] = i
                cur = concat[blk]
                continue
            both = sum(
                y.output_elems
                for y in layers
                if _block_of(y.name) == blk and y.name.endswith((".expand1x1", ".expand3x3"))
            )
            squeeze[blk] = cur
            cur = concat[blk] = new(_bytes(both, x, align), i)
            continue
        if inplace_dw and x.op == "dwconv" and not (blk in with_add and block_in.get(blk) == cur):
            size[cur] = max(size[cur], _bytes(x.output_elems, x, align))
            continue
        cur = new(_bytes(x.output_elems, x, align), i)
    last[cur] = len(layers) - 1
    return [Buffer(s, f, la) for s, f, la in zip(size, first, last, strict=True)]


def live_peak(buffers: list[Buffer]) -> int:
    """Largest total of buffers alive at one operator (an ideal planner)."""
    if not buffers:
        return 0
    steps = max(b.last for b in buffers) + 1
    return max(sum(b.size for b in buffers if b.first <= t <= b.last) for t in range(steps))


def greedy_arena(buffers: list[Buffer], align: int = 1) -> int:
    """Arena size of a greedy-by-size placement: largest buffer first, each at the lowest offset free of
    every already placed buffer alive at the same time (TF-Lite Micro's GreedyMemoryPlanner, TinyEngine's
    first-fit allocator)."""
    placed: list[tuple[int, int, Buffer]] = []
    top = 0
    for b in sorted(buffers, key=lambda b: (-b.size, b.first)):
        size = int(math.ceil(b.size / align) * align)
        busy = sorted(
            (off, sz) for off, sz, o in placed if not (o.last < b.first or o.first > b.last)
        )
        offset = 0
        for off, sz in busy:
            if offset + size <= off:
                break
            offset = max(offset, off + sz)
        placed.append((offset, size, b))
        top = max(top, offset + size)
    return top


def _cmsis_scratch(x: Layer) -> int:
    if x.op == "conv" and x.kernel > 1:
        return 2 * 2 * x.kernel * x.kernel * (x.cin // x.groups)
    if x.op == "dwconv":
        return 2 * x.kernel * x.kernel * x.cin
    return 0


def _tflm(layers: tuple[Layer, ...], scratch: bool) -> float:
    buffers = lifetimes(layers, align=TFLM_ALIGN)
    if scratch:
        buffers += [Buffer(s, i, i) for i, x in enumerate(layers) if (s := _cmsis_scratch(x))]
    state = sum(
        TFLM_CHANNEL_STATE * x.cout for x in layers if x.op in ("conv", "dwconv", "linear")
    ) + TFLM_OP_STATE * len(layers)
    return greedy_arena(buffers, TFLM_ALIGN) + state


def _tinyengine(layers: tuple[Layer, ...]) -> float:
    im2col = kernel = 0
    for x in layers:
        pad = x.kernel // 2
        if x.abits > 8:  # TinyEngine's int16 scratch serves int8 kernels only
            continue
        if x.op == "dwconv":
            im2col = max(im2col, 2 * (x.hin + 2 * pad) * (x.win + 2 * pad))
        elif x.op == "conv":
            im2col = max(im2col, 2 * 2 * x.kernel * x.kernel * (x.cin // x.groups))
            if x.kernel > 1:
                kernel = max(kernel, 2 * x.weights)
    return greedy_arena(lifetimes(layers, inplace_dw=True)) + im2col + kernel


def _overlap(layers: tuple[Layer, ...]) -> float:
    buffers = lifetimes(layers)
    peak = 0.0
    for t, x in enumerate(layers):
        alive = sum(b.size for b in buffers if b.first <= t <= b.last)
        if x.op in ("conv", "dwconv", "pool"):
            act = x.abits / 8
            own = (x.input_elems + x.output_elems) * act
            rows = x.kernel * x.win * x.cin * act if x.kernel > 1 else 0.0
            alive += max(x.input_elems, x.output_elems) * act + rows - own
        peak = max(peak, alive)
    return peak


def arena_bytes(layers: tuple[Layer, ...], planner: str = "live") -> float:
    """Activation memory (bytes) the named planner needs for ``layers``, before the runtime's constant."""
    if planner == "live":
        return peak_activation_bytes(layers)
    if planner in ("tflm", "cmsisnn"):
        return _tflm(layers, scratch=planner == "cmsisnn")
    if planner == "inplace":
        return _tinyengine(layers)
    if planner == "overlap":
        return _overlap(layers)
    raise ConfigError(f"unknown memory planner '{planner}' (known: {', '.join(PLANNERS)})")
