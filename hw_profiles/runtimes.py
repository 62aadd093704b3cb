"""Inference runtimes a device profile can name (its ``runtime`` field), the export format each loads
and the bit-widths its files can hold: the one place that says which file a device's runtime takes and
which compression a search for that device may offer. ``register_runtime`` adds one.

A runtime's ``precisions`` are the (weight bits, activation bits) its kernels execute, one pair for the
whole network: LiteRT and ExecuTorch run a model either in float or through their full-integer int8
path, which quantizes every layer; microcontroller runtimes run int8 only. A search with ``--device``
and ``--compress`` samples one of those pairs for the whole model (pruning stays per stage), so every
front model exports to the device's format at the size the search counted. ``None`` (ONNX Runtime,
TensorRT) allows any per-layer bit-widths: the ONNX file keeps the model's own fake quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

from compactnas.core.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    key: str  # what a profile's "runtime" field says
    label: str  # how a person names it
    export_format: str  # the compactnas export format this runtime loads
    # The format of its int8 path, for a model whose every layer is w8/a8 (None: export_format serves).
    int8_format: str | None = None
    precisions: tuple[tuple[int, int], ...] | None = None  # (weight, activation) bits; None: any

    def format_for(self, bits: set[tuple[int, int]]) -> str:
        """The format for a model whose layers carry the (weight, activation) bit-width pairs ``bits``."""
        if self.int8_format and bits == {(8, 8)}:
            return self.int8_format
        return self.export_format


RUNTIMES: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime) -> Runtime:
    if runtime.key in RUNTIMES:
        raise ConfigError(f"runtime '{runtime.key}' is already registered")
    RUNTIMES[runtime.key] = runtime
    return runtime


FLOAT_OR_INT8 = ((8, 8), (32, 32))
INT8_ONLY = ((8, 8),)

for _r in (
    Runtime("litert", "LiteRT (TF Lite with XNNPACK)", "tflite", "tflite-int8", FLOAT_OR_INT8),
    Runtime("tflm", "TF Lite Micro", "tflite-int8", precisions=INT8_ONLY),
    Runtime("cmsisnn", "CMSIS-NN (TF Lite Micro kernels)", "tflite-int8", precisions=INT8_ONLY),
    Runtime("cubeai", "STM32Cube.AI", "tflite-int8", precisions=INT8_ONLY),
    Runtime("tinyengine", "TinyEngine", "tflite-int8", precisions=INT8_ONLY),
    Runtime("executorch", "ExecuTorch (XNNPACK)", "executorch", "executorch-int8", FLOAT_OR_INT8),
    Runtime("onnxruntime", "ONNX Runtime", "onnx"),
    Runtime("tensorrt", "TensorRT (builds its engine from ONNX)", "onnx"),
):
    register_runtime(_r)


def resolve_runtime(key: str, *, where: str = "runtime") -> Runtime:
    if key not in RUNTIMES:
        raise ConfigError(f"{where}: unknown runtime '{key}' (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[key]
