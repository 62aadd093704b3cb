"""The size of the file a runtime loads, estimated from an architecture string.

``size_bytes`` (spaces/layers.py) counts the weights a model carries at its own bit-widths: what the
``packed`` export stores. A runtime's own file stores more: batch norm folded into a bias per output
channel, the quantization parameters of every quantized tensor, and a table entry per tensor and per
operator. ``file_bytes`` counts those for the formats whose layout is known, so a search for a device
optimises the size of what that device will load:

- payload, exact by construction: every weight at the layer's bit-width (8 or 32: these formats store
  nothing narrower), one 32-bit bias per output channel (float in fp32 files, int32 in int8 ones);
- int8 quantization parameters, exact by the format: a 32-bit scale and a 64-bit zero point per output
  channel for the weight and again for its bias, and one pair per activation tensor;
- structure (tensor and operator tables, shapes, buffers, the signature): bytes per weighted layer,
  per other layer and per file, fitted by ``benchmarks/tflite_layout.py`` on 8 probe architectures it
  draws itself (results/tflite_layout.json); on 8 other probes the estimate is within 1.4% of the
  float file and 2.5% of the int8 one.
"""

from __future__ import annotations

from dataclasses import dataclass

from compactnas.spaces.arch import ArchSpec, as_spec
from compactnas.spaces.layers import arch_layers

WEIGHTED = ("conv", "dwconv", "linear")


@dataclass(frozen=True, kw_only=True)
class FileLayout:
    name: str  # the export format
    int8: bool  # weights and activations stored as int8 with their quantization parameters
    # structure bytes per conv/linear (its weight, bias and output tensors)
    per_weighted_layer: float
    per_other_layer: float  # structure bytes per other operator (its output tensor, any constants)
    per_file: float  # header, operator codes, signature, metadata
    source: str  # where the structure figures come from


# Zero points are int64 in TF Lite's schema, scales float32: 12 bytes per channel per tensor.
QPARAM_BYTES = 12

LAYOUTS: dict[str, FileLayout] = {
    layout.name: layout
    for layout in (
        FileLayout(
            name="tflite",
            int8=False,
            per_weighted_layer=-259.0,  # a least-squares figure: the payload's bias count runs high
            per_other_layer=676.0,
            per_file=5583.0,
            source="benchmarks/results/tflite_layout.json",
        ),
        FileLayout(
            name="tflite-int8",
            int8=True,
            per_weighted_layer=291.0,
            per_other_layer=207.0,
            per_file=2321.0,
            source="benchmarks/results/tflite_layout.json",
        ),
    )
}


def layer_counts(
    spec: ArchSpec | str, input_shape: tuple[int, int, int], num_classes: int
) -> dict[str, int]:
    """What the structure figures multiply: the live weighted and other layers and their channels."""
    layers = [layer for layer in arch_layers(as_spec(spec), input_shape, num_classes) if layer.live]
    weighted = [layer for layer in layers if layer.weights and layer.op in WEIGHTED]
    return {
        "weighted": len(weighted),
        "other": len(layers) - len(weighted),
        "weights": sum(layer.weights for layer in weighted),
        "channels": sum(layer.cout for layer in weighted),
    }


def payload_bytes(
    spec: ArchSpec | str, input_shape: tuple[int, int, int], num_classes: int, int8: bool
) -> int:
    """Weights at 8 bits (int8) or 32, a 32-bit bias per output channel, and, for int8, the scale and
    zero point of each quantized weight, bias and activation tensor."""
    c = layer_counts(spec, input_shape, num_classes)
    total = c["weights"] * (1 if int8 else 4) + c["channels"] * 4
    if int8:
        total += 2 * c["channels"] * QPARAM_BYTES + (c["weighted"] + c["other"]) * QPARAM_BYTES
    return total


def file_bytes(
    spec: ArchSpec | str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    fmt: str,
    layout: FileLayout | None = None,
) -> int:
    """Estimated size of ``spec`` exported as ``fmt`` (a key of LAYOUTS), or with ``layout``'s figures."""
    layout = layout or LAYOUTS[fmt]
    c = layer_counts(spec, input_shape, num_classes)
    structure = (
        layout.per_weighted_layer * c["weighted"]
        + layout.per_other_layer * c["other"]
        + layout.per_file
    )
    return int(round(payload_bytes(spec, input_shape, num_classes, layout.int8) + structure))


def precision_pairs(spec: ArchSpec | str) -> set[tuple[int, int]]:
    """The (weight bits, activation bits) pairs of the stem, every stage and the head."""
    spec = as_spec(spec)
    return {(seg.wbits, seg.abits) for seg in (spec.stem, *spec.stages, spec.head)}
