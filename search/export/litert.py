"""LiteRT (TF Lite) exports: fp32 converted by litert-torch, full-integer int8 quantized from it by
ai-edge-quantizer, both run back with the LiteRT interpreter (ai-edge-litert).

The int8 model takes int8 input and returns int8 output, as microcontroller runtimes (TF Lite Micro,
STM32Cube.AI, TinyEngine) want them; ``TfliteModel`` quantizes float input with the model's own input
scale and zero point and dequantizes its output, so it is compared with PyTorch like any other export.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.evaluators.quantization import StaticActQuant
from compactnas.search.export.base import ExportError, latency_ms, quiet_env, run_batch1, silenced

# Calibration examples per call: the converted model takes batch 1.
_CALIBRATION_LIMIT = 512


def converter_version() -> str:
    from importlib.metadata import version

    return f"litert-torch {version('litert-torch')}"


def write_tflite(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    _convert(model, input_shape, path)
    drop_tensor_names(path)


def _convert(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    quiet_env()
    import litert_torch

    model.eval()
    with silenced(), torch.no_grad():
        edge = litert_torch.convert(model, (torch.zeros(1, *input_shape),))
        edge.export(str(path))


def drop_tensor_names(path: Path) -> None:
    """Rename every tensor of a .tflite file to ``t<index>``. The converter names each tensor after the
    traced PyTorch code that made it (several hundred bytes each: 13% of a 130 KB model, 28% of an int8
    one); the interpreter finds tensors by index and signatures by their own names, so none is needed."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    for graph in model.subgraphs or ():
        for i, tensor in enumerate(graph.tensors or ()):
            tensor.name = f"t{i}"
    for buffer in model.buffers or ():  # data stored after the flatbuffer moves inline
        if buffer.offset > 1:
            buffer.data = np.frombuffer(buf, np.uint8, buffer.size, buffer.offset).copy()
            buffer.offset = buffer.size = 0
    builder = flatbuffers.Builder(len(buf))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def write_tflite_int8(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    calibration: np.ndarray,
    trained: nn.Module | None = None,
) -> dict[str, Any]:
    """Full-integer int8: int8 weights (per channel) and activations, min/max ranges from running the
    training images in ``calibration`` through the fp32 model, int8 input and output tensors.

    ``trained`` is the same network with its frozen activation quantizers (``StaticActQuant``) in place:
    each tensor they quantize keeps the range it was trained with instead of a calibrated one, so the
    int8 file rounds those activations onto the grid the evaluated model used.

    ai-edge-quantizer works on the converted flatbuffer in seconds; quantizing in PyTorch first (PT2E)
    and converting that took minutes for the same network.
    """
    from importlib.metadata import version

    from ai_edge_quantizer import quantizer, recipe

    calib = np.ascontiguousarray(calibration[:_CALIBRATION_LIMIT], dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        _convert(model, input_shape, fp32)  # the quantizer reads the converter's tensor names
        signature, input_name = _signature(fp32)
        # the quantizer's calibration progress bar writes to stderr: not for the terminal
        with silenced(), contextlib.redirect_stderr(io.StringIO()):
            qt = quantizer.Quantizer(str(fp32))
            qt.load_quantization_recipe(recipe.static_wi8_ai8())
            samples = [{input_name: calib[i : i + 1]} for i in range(len(calib))]
            ranges = widen_degenerate_ranges(qt.calibrate({signature: samples}, num_threads=1))
            pinned = pin_trained_ranges(ranges, fp32, trained, model, calib[:1]) if trained else 0
            result = qt.quantize(ranges, enable_progress_report=False)
            result.export_model(str(path), overwrite=True)
    drop_tensor_names(path)
    m = TfliteModel(path)
    if m.input["dtype"] != np.int8 or m.output["dtype"] != np.int8:
        path.unlink(missing_ok=True)
        raise ExportError(
            "the int8 LiteRT model does not take and return int8 tensors "
            f"(input {np.dtype(m.input['dtype']).name}, output {np.dtype(m.output['dtype']).name})"
        )
    return {
        "converter": f"{converter_version()}, ai-edge-quantizer {version('ai-edge-quantizer')}",
        "quantization": {
            "scheme": "static, int8 weights per channel, int8 activations, min/max ranges",
            "samples": len(calib),
            "split": "train",
            "trained_ranges": pinned,
            "input": m.quant_params(m.input),
            "output": m.quant_params(m.output),
        },
    }


def widen_degenerate_ranges(ranges: dict[str, Any]) -> dict[str, Any]:
    """Give every tensor that calibration saw at one value (all zero: a ReLU that never fires, as in a
    squeeze-excite whose reduction died in training) a range of width 1 from that value.

    The quantizer would otherwise derive a near-zero scale from an empty range; the bias of the layer
    reading that tensor is stored at input scale x weight scale, so it overflows int32 and saturates,
    and the error propagates to the logits (measured: 86% top-1 agreement instead of 98% on a model
    with one such tensor). Any scale represents a constant zero exactly, so widening costs nothing.
    """
    out = {}
    for name, r in ranges.items():
        lo = np.minimum(np.asarray(r["min"], dtype=np.float32), 0.0)
        hi = np.maximum(np.asarray(r["max"], dtype=np.float32), 0.0)
        flat = (hi - lo) < 1e-6
        out[name] = (
            {**r, "max": np.where(flat, lo + 1.0, r["max"]).astype(np.float32)} if flat.any() else r
        )
    return out


def trained_ranges(
    trained: nn.Module, plain: nn.Module, x: np.ndarray
) -> list[tuple[np.ndarray, float, float]]:
    """For each frozen activation quantizer of ``trained``: the tensor that reaches its place in
    ``plain`` (the same network without them, as converted) on input ``x``, and the float range its
    integer grid spans."""
    quantizers = [(n, m) for n, m in trained.named_modules() if isinstance(m, StaticActQuant)]
    seen: dict[str, np.ndarray] = {}

    def keep(name: str) -> Any:
        def hook(_mod: nn.Module, inp: tuple[torch.Tensor, ...], _out: Any) -> None:
            seen.setdefault(name, inp[0].numpy().copy())

        return hook

    hooks = [plain.get_submodule(n).register_forward_hook(keep(n)) for n, _ in quantizers]
    try:
        with torch.no_grad():
            plain.eval()(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    return [
        (seen[n], (q.quant_min - q.zero_point) * q.scale, (q.quant_max - q.zero_point) * q.scale)
        for n, q in quantizers
        if n in seen
    ]


def pin_trained_ranges(
    ranges: dict[str, Any], fp32: Path, trained: nn.Module, plain: nn.Module, x: np.ndarray
) -> int:
    """Replace (in place) the calibrated range of every tensor of the fp32 file that carries what a
    trained activation quantizer of ``trained`` receives; returns how many tensors were pinned.

    Tensors are matched by value on one input, not by name: the converter fuses and renames
    operators, but the tensor a quantizer reads is computed the same in both graphs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_path=str(fp32), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )  # fmt: skip
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    values: dict[str, np.ndarray] = {}
    for t in it.get_tensor_details():
        if t["name"] in ranges and t["dtype"] == np.float32:
            try:
                values[t["name"]] = it.get_tensor(t["index"])
            except ValueError:  # a tensor the interpreter did not keep
                continue
    pinned = 0
    for v, lo, hi in trained_ranges(trained, plain, x):
        want = v.transpose(0, 2, 3, 1) if v.ndim == 4 else v  # LiteRT keeps images NHWC
        if np.ptp(want) == 0:  # a constant tensor: several may match, and any range holds it
            continue
        for name, got in values.items():
            if got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5):
                r = ranges[name]
                ranges[name] = {
                    **r,
                    "min": np.full_like(np.asarray(r["min"], dtype=np.float32), lo),
                    "max": np.full_like(np.asarray(r["max"], dtype=np.float32), hi),
                }
                pinned += 1
    return pinned


def _signature(path: Path) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_path=str(path)).get_signature_list()
    name = next(iter(sigs))
    return name, sigs[name]["inputs"][0]


class TfliteModel:
    """A .tflite file run by the LiteRT interpreter (1 thread): ``model(x)`` takes N x C x H x W floats
    and returns float logits, quantizing and dequantizing at an int8 model's edges."""

    def __init__(self, path: Path | str, *, threads: int = 1):
        quiet_env()
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.kernels = "XNNPACK kernels"
        with silenced():
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            try:
                self.interpreter.allocate_tensors()
            except RuntimeError as e:
                # XNNPACK declines some int8 graphs at prepare time (seen: squeeze-excite gates on 2x2
                # maps); LiteRT's built-in kernels run every operator, as a device would without it.
                if "XNNPACK" not in str(e):
                    raise
                from ai_edge_litert.interpreter import OpResolverType

                self.kernels = "built-in kernels: XNNPACK declined the graph"
                self.interpreter = Interpreter(
                    model_path=str(self.path),
                    num_threads=threads,
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                )
                self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def edge_runtime(self) -> str:
        from importlib.metadata import version

        return (
            f"ai-edge-litert {version('ai-edge-litert')} (LiteRT interpreter, CPU, 1 thread, "
            f"{self.kernels})"
        )

    @staticmethod
    def quant_params(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        return {
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }

    def step(self, x: np.ndarray) -> np.ndarray:
        if self.input["dtype"] == np.int8:
            scale, zp = self.input["quantization"]
            x = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] == np.int8:
            scale, zp = self.output["quantization"]
            return (y.astype(np.float32) - zp) * np.float32(scale)
        return y.copy()

    def __call__(self, x: Any) -> np.ndarray:
        return run_batch1(self.step, x)

    def latency_ms(self, input_shape: tuple[int, ...], min_run_time: float) -> float:
        return latency_ms(self.step, input_shape, min_run_time)

    def __repr__(self) -> str:
        return f"TfliteModel({str(self.path)!r})"
