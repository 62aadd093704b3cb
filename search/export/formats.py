"""Export formats: writing a trained model as ONNX (fp32 or int8), TorchScript or a state dict, running
each export on held-out data, timing it on this host, and loading an export back.

Every export takes one input named ``input`` (N x C x H x W float32, normalised as ``load_data`` does)
and returns ``logits`` (N x classes).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import FakeQuantize

from compactnas.evaluators.clustering import bake, shared_of
from compactnas.evaluators.compression import build_compressed_model, is_compressed
from compactnas.evaluators.quantization import (
    StaticActQuant,
    fake_quantize_weight,
    freeze_activation_quant,
)
from compactnas.search.export.base import ExportError, first_line, silenced
from compactnas.spaces import create_model, parse_arch

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CALIBRATIONS = ("auto", "minmax", "entropy", "percentile")
STATE_DICT_FORMAT = "compactnas.state_dict/1"


def write_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    *,
    opset: int = 17,
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
    what: str = "this model",
) -> None:
    """fp32 ONNX with a dynamic batch axis on the input and on every output (``output_names``, in
    the order the model returns them).

    The TorchScript-based exporter (``dynamo=False``) is used: the torch.export-based one needs the
    separate onnxscript package and takes seconds per model where this one takes a fraction of one.
    Eval mode lets it fold batch norm into the preceding convolutions.
    """
    model.eval()
    x = torch.zeros(1, *input_shape)
    names = [INPUT_NAME, *output_names]
    try:
        with silenced(), torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                dynamic_axes={n: {0: "batch"} for n in names},
            )
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported as one line
        path.unlink(missing_ok=True)
        raise ExportError(f"the ONNX exporter cannot convert {what}: {first_line(e)}") from None


class _Batches:
    """onnxruntime CalibrationDataReader over equal-sized batches.

    The histogram calibrators (entropy, percentile) stack per-batch outputs, so a short last batch
    would break them: the remainder is dropped.
    """

    def __init__(self, x: np.ndarray, batch_size: int = 32):
        n = max(1, len(x) // batch_size) * batch_size if len(x) >= batch_size else len(x)
        self.batches = [x[i : i + batch_size] for i in range(0, n, batch_size)]
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return {INPUT_NAME: self.batches[self.pos - 1]}

    def rewind(self) -> None:
        self.pos = 0


def quantize_onnx_int8(
    fp32_path: Path, path: Path, calibration: np.ndarray, *, method: str
) -> None:
    """Static int8 quantization in QDQ form: per-channel symmetric int8 weights, int8 activations whose
    ranges come from running ``calibration`` (training images) through the model."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    try:
        with silenced():
            quantize_static(
                str(fp32_path),
                str(path),
                _Batches(np.ascontiguousarray(calibration, dtype=np.float32)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
            )
    except Exception as e:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise ExportError(
            f"int8 quantization failed ({method} calibration): {first_line(e)}"
        ) from None


def write_torchscript(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> None:
    """Traced TorchScript: the networks have no data-dependent control flow, so a trace is exact."""
    model.eval()
    try:
        with silenced(), torch.no_grad():
            traced = torch.jit.trace(model, torch.zeros(1, *input_shape))
            torch.jit.save(traced, str(path))
    except Exception as e:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise ExportError(f"TorchScript tracing failed: {first_line(e)}") from None


def write_state_dict(
    model: nn.Module, path: Path, *, arch: str, num_classes: int, input_shape: tuple[int, int, int]
) -> None:
    """The weights with the architecture string beside them, so ``load_exported`` can rebuild the model."""
    torch.save(
        {
            "format": STATE_DICT_FORMAT,
            "arch": arch,
            "num_classes": num_classes,
            "input_shape": list(input_shape),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        path,
    )


def build_model(arch: str, *, num_classes: int, in_chans: int) -> nn.Module:
    """The network an architecture string describes, compressed ones with their pruning and fake
    quantization in place."""
    spec = parse_arch(arch)
    if not is_compressed(spec):
        return create_model(spec, num_classes=num_classes, in_chans=in_chans)
    return build_compressed_model(spec, num_classes=num_classes, in_chans=in_chans)


def deployable(model: nn.Module) -> nn.Module:
    """The model itself, or for a fake-quantized or clustered one a copy whose weights are stored
    already on their quantization grid (a clustered layer's shared values written out as plain
    weights). The numbers are the same; the graph loses the per-call scale search and the 2- and 4-bit
    fake-quantize operators, which ONNX cannot express (it knows 8-bit ranges only). The activations'
    8-bit quantization stays, frozen into round-and-clamp operators (``StaticActQuant``) that every
    converter and runtime executes as the trained model does."""
    shared = any(shared_of(m) is not None for m in model.modules())
    quantized = any(
        isinstance(m, FakeQuantize) or getattr(m, "weight_bits", 32) < 32 for m in model.modules()
    )
    if not shared and not quantized:
        return model

    baked = copy.deepcopy(model)
    bake(baked)  # clustered layers: the shared values written out as plain weights
    freeze_activation_quant(baked)
    with torch.no_grad():
        for m in baked.modules():
            bits = getattr(m, "weight_bits", 32)
            if bits < 32 and isinstance(getattr(m, "weight", None), torch.Tensor):
                m.weight.copy_(fake_quantize_weight(m.weight, bits))
                m.weight_bits = 32  # already quantized: fake-quantizing again would be wasted work
    return baked.eval()


def without_activation_quant(model: nn.Module) -> nn.Module:
    """A copy of a deployable model whose frozen activation quantizers are gone: what a full-integer
    int8 converter takes, since it quantizes every activation itself (from calibration ranges) and
    would otherwise keep the round-and-clamp operators as extra work in the int8 graph."""
    if not any(isinstance(m, StaticActQuant) for m in model.modules()):
        return model
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, StaticActQuant):
            parent_name, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent_name) if parent_name else out, child, nn.Identity())
    return out.eval()


def reduced_bits(spec: Any, below: int = 32) -> list[str]:
    """Segments of ``spec`` with a weight or activation bit-width under ``below``, as text naming
    their reduced (under 32) bit-widths."""
    out = []
    parts = [
        ("stem", spec.stem),
        *((f"stage {i + 1}", b) for i, b in enumerate(spec.stages)),
        ("head", spec.head),
    ]
    for where, seg in parts:
        if min(seg.wbits, seg.abits) >= below:
            continue
        bits = [f"wb{seg.wbits}"] if seg.wbits < 32 else []
        bits += [f"ab{seg.abits}"] if seg.abits < 32 else []
        out.append(f"{where} ({' '.join(bits)})")
    return out
