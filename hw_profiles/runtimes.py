"""Inference runtimes a device profile can name (its ``runtime`` field), and the export format each
loads: the one place that says which file a device's runtime takes. ``register_runtime`` adds one."""

from __future__ import annotations

from dataclasses import dataclass

from compactnas.core.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    key: str  # what a profile's "runtime" field says
    label: str  # how a person names it
    export_format: str  # the compactnas export format this runtime loads


RUNTIMES: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime) -> Runtime:
    if runtime.key in RUNTIMES:
        raise ConfigError(f"runtime '{runtime.key}' is already registered")
    RUNTIMES[runtime.key] = runtime
    return runtime


for _r in (
    Runtime("litert", "LiteRT (TF Lite with XNNPACK)", "tflite"),
    Runtime("tflm", "TF Lite Micro", "tflite-int8"),
    Runtime("cmsisnn", "CMSIS-NN (TF Lite Micro kernels)", "tflite-int8"),
    Runtime("cubeai", "STM32Cube.AI", "tflite-int8"),
    Runtime("tinyengine", "TinyEngine", "tflite-int8"),
    Runtime("executorch", "ExecuTorch (XNNPACK)", "executorch"),
    Runtime("onnxruntime", "ONNX Runtime", "onnx"),
    Runtime("tensorrt", "TensorRT (builds its engine from ONNX)", "onnx"),
):
    register_runtime(_r)


def resolve_runtime(key: str, *, where: str = "runtime") -> Runtime:
    if key not in RUNTIMES:
        raise ConfigError(f"{where}: unknown runtime '{key}' (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[key]
