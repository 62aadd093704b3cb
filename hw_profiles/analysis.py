"""Per-layer cost terms read from spaces/layers.py: precision, bytes moved, roofline time, energy, memory.

Precision rule. A layer computes at the wider of its weight and activation bit-widths: ``wb4_ab8`` runs
int8 kernels on unpacked 4-bit weights, and ``wb8`` with 32-bit activations is weight-only quantization
(weights dequantized on the fly, fp32 arithmetic) whose only gain is fewer weight bytes to move. A
precision the device cannot run falls back to the next higher one it can (int4 -> int8 -> fp16 -> fp32);
fp32 is always present in a profile, at the emulated rate on a device without an FPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from compactnas.hw_profiles.profile import MEMORY_KINDS, OP_KINDS, PRECISIONS, DeviceProfile
from compactnas.spaces.arch import ArchSpec, as_spec
from compactnas.spaces.layers import Layer, arch_layers


def layer_precision(layer: Layer) -> str:
    bits = max(layer.wbits, layer.abits)
    if bits <= 4:
        return "int4"
    if bits <= 8:
        return "int8"
    if bits <= 16:
        return "fp16"
    return "fp32"


def layer_bytes(layer: Layer) -> float:
    """Bytes one call moves: activations read and written at the activation width, weights at theirs."""
    act = layer.abits / 8
    reads = layer.input_elems
    if layer.op == "add":
        reads *= 2  # both operands
    elif layer.op == "mul":
        reads += layer.cin  # the SE gate
    return (reads + layer.output_elems) * act + layer.weight_bytes


@lru_cache(maxsize=1024)
def _parsed(text: str) -> ArchSpec:
    return as_spec(text)


@lru_cache(maxsize=4096)
def _layers(
    spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int
) -> tuple[Layer, ...]:
    return tuple(arch_layers(spec, input_shape, num_classes))


def clear_caches() -> None:
    _parsed.cache_clear()
    _layers.cache_clear()


def spec_of(spec: ArchSpec | str) -> ArchSpec:
    return _parsed(spec) if isinstance(spec, str) else as_spec(spec)


def network_layers(
    spec: ArchSpec | str, input_shape: tuple[int, int, int], num_classes: int
) -> tuple[Layer, ...]:
    """The layer list, cached: a search asks about the same candidate several times."""
    return _layers(spec_of(spec), tuple(int(d) for d in input_shape), int(num_classes))


KINDS = OP_KINDS + MEMORY_KINDS


def layer_kind(layer: Layer) -> str:
    """The cost kind: pointwise (1x1, ungrouped) convolutions apart from other convolutions."""
    if layer.op == "conv" and layer.kernel == 1 and layer.groups == 1:
        return "pwconv"
    return layer.op if layer.op in KINDS else "mul"


@dataclass(frozen=True, kw_only=True)
class LayerTerms:
    """Arrays over a network's layers, the inputs of the roofline model (also what calibration fits)."""

    macs: np.ndarray
    bytes: np.ndarray
    kind: np.ndarray  # index into KINDS (compute kinds first)
    precision: np.ndarray  # index into PRECISIONS after the device's fallback
    live: np.ndarray  # bool: survives dead-code elimination

    @property
    def compute(self) -> np.ndarray:
        return self.kind < len(OP_KINDS)


def layer_terms(profile: DeviceProfile, layers: tuple[Layer, ...]) -> LayerTerms:
    return LayerTerms(
        macs=np.array([layer.macs for layer in layers], dtype=float),
        bytes=np.array([layer_bytes(layer) for layer in layers], dtype=float),
        kind=np.array([KINDS.index(layer_kind(layer)) for layer in layers], dtype=int),
        precision=np.array(
            [PRECISIONS.index(profile.supported(layer_precision(layer))) for layer in layers]
        ),
        live=np.array([layer.live for layer in layers], dtype=bool),
    )


def roofline_ms_terms(
    terms: LayerTerms,
    *,
    throughput: np.ndarray,  # MAC/s per PRECISIONS index (0 where unsupported)
    efficiency: np.ndarray,  # per KINDS index
    bandwidth: float,
    layer_overhead_ms: float,
    network_overhead_ms: float,
    combine: str = "max",
    dead_code: bool = False,
) -> float:
    comp = terms.compute
    eff = efficiency[terms.kind]
    rate = np.where(comp, throughput[terms.precision] * eff, 1.0)
    compute = np.where(comp, terms.macs / rate, 0.0)
    memory = terms.bytes / (bandwidth * np.where(comp, 1.0, eff))
    both = compute + memory if combine == "sum" else np.maximum(compute, memory)
    per_layer = both * 1e3 + layer_overhead_ms
    if dead_code:
        per_layer = per_layer[terms.live]
    return float(per_layer.sum() + network_overhead_ms)


def profile_vectors(profile: DeviceProfile) -> tuple[np.ndarray, np.ndarray]:
    throughput = np.array([profile.throughput.get(p, 0.0) for p in PRECISIONS], dtype=float)
    eff = profile.efficiency
    # A profile without a pointwise figure runs 1x1 convolutions at its convolution efficiency.
    efficiency = np.array(
        [eff.get(k, eff.get("conv", 1.0) if k == "pwconv" else 1.0) for k in KINDS], dtype=float
    )
    return throughput, efficiency


def roofline_ms(profile: DeviceProfile, layers: tuple[Layer, ...]) -> float:
    """Sum over layers of max(compute time, memory time) + per-layer overhead, plus the network overhead."""
    throughput, efficiency = profile_vectors(profile)
    return roofline_ms_terms(
        layer_terms(profile, layers),
        throughput=throughput,
        efficiency=efficiency,
        bandwidth=profile.bandwidth,
        layer_overhead_ms=profile.layer_overhead_ms,
        network_overhead_ms=profile.network_overhead_ms,
        combine=profile.combine,
        dead_code=profile.dead_code,
    )


def _energy_precision(profile: DeviceProfile, precision: str) -> str:
    assert profile.energy is not None
    for p in PRECISIONS[PRECISIONS.index(profile.supported(precision)) :]:
        if p in profile.energy:
            return p
    return "fp32"


def energy_mj(profile: DeviceProfile, layers: tuple[Layer, ...]) -> float | None:
    """MACs and bytes at the precision each layer runs at, times the profile's per-MAC and per-byte energy."""
    if profile.energy is None:
        return None
    total_pj = 0.0
    for layer in layers:
        cost = profile.energy[_energy_precision(profile, layer_precision(layer))]
        total_pj += layer.macs * cost.mac_pj + layer_bytes(layer) * cost.byte_pj
    return total_pj * 1e-9


def _block_of(name: str) -> str | None:
    parts = name.split(".")
    return ".".join(parts[:3]) if parts[0] == "stages" and len(parts) > 3 else None


def peak_activation_bytes(layers: tuple[Layer, ...]) -> float:
    """Largest set of activations alive at once, at each layer's activation width.

    Per layer: its input and output; inside a block with a skip, the block input kept for the add; inside
    squeeze-excite, the gated tensor kept while the gate is computed; in a fire block, the whole
    concatenated output while either expand branch writes its half.
    """
    first: dict[str, Layer] = {}
    has_add: set[str] = set()
    gated: dict[str, Layer] = {}
    concat: dict[str, int] = {}
    for layer in layers:
        blk = _block_of(layer.name)
        if blk is None:
            continue
        first.setdefault(blk, layer)
        if layer.op == "add":
            has_add.add(blk)
        if layer.name.endswith(".se.pool"):
            gated[blk] = layer
        if layer.name.endswith((".expand1x1", ".expand3x3")):
            concat[blk] = concat.get(blk, 0) + layer.output_elems
    peak = 0.0
    for layer in layers:
        act = layer.abits / 8
        live = layer.input_elems + layer.output_elems
        blk = _block_of(layer.name)
        if blk is not None:
            if blk in has_add and layer is not first[blk]:
                live += first[blk].input_elems
            if ".se.conv_" in layer.name:
                live += gated[blk].input_elems
            if layer.op == "mul":
                live += layer.cin
            if layer.name.endswith((".expand1x1", ".expand3x3")):
                live += concat[blk] - layer.output_elems
        peak = max(peak, live * act)
    return peak


def weight_bytes(layers: tuple[Layer, ...]) -> float:
    return float(sum(layer.weight_bytes for layer in layers))
