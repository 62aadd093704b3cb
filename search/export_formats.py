"""Export formats: writing a trained model as ONNX (fp32 or int8), TorchScript or a state dict, running
each export on held-out data, timing it on this host, and loading an export back.

Every export takes one input named ``input`` (N x C x H x W float32, normalised as ``load_data`` does)
and returns ``logits`` (N x classes).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.core.errors import CompactnasError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CALIBRATIONS = ("auto", "minmax", "entropy", "percentile")
STATE_DICT_FORMAT = "compactnas.state_dict/1"


class ExportError(CompactnasError):
    """An export that cannot be made or loaded; the message says which and why."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation chatter, onnxruntime's calibration prints and the IR dump the
    TorchScript exporter writes straight to file descriptor 1 when it fails."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization logs through the root logger
    try:
        with warnings.catch_warnings(), _fd_to_devnull(1):
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _fd_to_devnull(fd: int) -> Iterator[None]:
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (an embedded interpreter): nothing to silence
        yield
        return
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(devnull)
        os.close(saved)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def write_onnx(
    model: nn.Module, input_shape: tuple[int, int, int], path: Path, *, opset: int = 17
) -> None:
    """fp32 ONNX with a dynamic batch axis.

    The TorchScript-based exporter (``dynamo=False``) is used: the torch.export-based one needs the
    separate onnxscript package and takes seconds per model where this one takes a fraction of one.
    Eval mode lets it fold batch norm into the preceding convolutions.
    """
    model.eval()
    x = torch.zeros(1, *input_shape)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported as one line
        path.unlink(missing_ok=True)
        raise ExportError(
            f"the ONNX exporter cannot convert this model: {_first_line(e)}"
        ) from None


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
        with _quiet():
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
            f"int8 quantization failed ({method} calibration): {_first_line(e)}"
        ) from None


def write_torchscript(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> None:
    """Traced TorchScript: the networks have no data-dependent control flow, so a trace is exact."""
    model.eval()
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, torch.zeros(1, *input_shape))
            torch.jit.save(traced, str(path))
    except Exception as e:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise ExportError(f"TorchScript tracing failed: {_first_line(e)}") from None


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
    """The network an architecture string describes; compressed strings need the compression module."""
    from compactnas.spaces import create_model, parse_arch

    spec = parse_arch(arch)
    if not is_compressed(spec):
        return create_model(spec, num_classes=num_classes, in_chans=in_chans)
    try:
        from compactnas.evaluators.compression import build_compressed_model
    except ImportError:
        raise ExportError(
            f"'{arch}' is compressed (pr/wb/ab keys) but this installation cannot build compressed models "
            "(compactnas.evaluators.compression.build_compressed_model is missing)"
        ) from None
    return build_compressed_model(spec, num_classes=num_classes, in_chans=in_chans)


def deployable(model: nn.Module) -> nn.Module:
    """The model itself, or for a fake-quantized one a copy whose weights are stored already on their
    quantization grid. The numbers are the same; the graph loses the per-call scale search and the
    2- and 4-bit fake-quantize operators, which ONNX cannot express (it knows 8-bit ranges only).
    The activations' 8-bit fake quantization stays and becomes ONNX QuantizeLinear/DequantizeLinear."""
    if not any(getattr(m, "weight_bits", 32) < 32 for m in model.modules()):
        return model
    from compactnas.evaluators.quantization import fake_quantize_weight

    baked = copy.deepcopy(model)
    with torch.no_grad():
        for m in baked.modules():
            bits = getattr(m, "weight_bits", 32)
            if bits < 32 and isinstance(getattr(m, "weight", None), torch.Tensor):
                m.weight.copy_(fake_quantize_weight(m.weight, bits))
                m.weight_bits = 32  # already quantized: fake-quantizing again would be wasted work
    return baked.eval()


def is_compressed(spec: Any) -> bool:
    return (
        any(b.compressed for b in spec.stages)
        or min(spec.stem.wbits, spec.head.wbits) < 32
        or min(spec.stem.abits, spec.head.abits) < 32
    )


def reduced_bits(spec: Any) -> list[str]:
    """Segments of ``spec`` that carry weight or activation bit-widths below 32, as text."""
    out = []
    parts = [
        ("stem", spec.stem),
        *((f"stage {i + 1}", b) for i, b in enumerate(spec.stages)),
        ("head", spec.head),
    ]
    for where, seg in parts:
        bits = [f"wb{seg.wbits}"] if seg.wbits < 32 else []
        bits += [f"ab{seg.abits}"] if seg.abits < 32 else []
        if bits:
            out.append(f"{where} ({' '.join(bits)})")
    return out


# --- running exports -------------------------------------------------------------------------------


def ort_session(path: Path | str, *, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread, in sequence: comparable with the single-threaded PyTorch timing of the search.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An ONNX export run by onnxruntime: ``model(x)`` takes an N x C x H x W array (numpy or torch)
    and returns numpy logits."""

    def __init__(self, path: Path | str, *, threads: int = 1):
        self.path = Path(path)
        self.session = ort_session(self.path, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: Any, *, batch_size: int = 256) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = [
            self.session.run([self.output_name], {self.input_name: x[i : i + batch_size]})[0]
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r})"


@torch.no_grad()
def torch_logits(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    if isinstance(model, nn.Module):
        model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def logits_of(loaded: Any, x: torch.Tensor) -> np.ndarray:
    """Logits from anything ``load_exported`` returns."""
    if isinstance(loaded, OnnxModel) or hasattr(loaded, "edge_runtime"):
        return loaded(x)
    return torch_logits(loaded, x)


@dataclass(frozen=True, kw_only=True)
class Agreement:
    max_abs_diff: float
    top1_agreement: float
    accuracy: float


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray) -> Agreement:
    return Agreement(
        max_abs_diff=float(np.abs(reference - exported).max()) if reference.size else 0.0,
        top1_agreement=float((reference.argmax(1) == exported.argmax(1)).mean()),
        accuracy=float((exported.argmax(1) == labels).mean()),
    )


def onnx_latency_ms(
    session: Any, input_shape: tuple[int, int, int], *, min_run_time: float = 0.2
) -> float:
    """Median milliseconds per batch-1 run, timed like evaluators.measure_latency_ms (blocked autorange)."""
    from torch.utils import benchmark

    feed = {
        session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
            (1, *input_shape), dtype=np.float32
        )
    }
    session.run(None, feed)
    timer = benchmark.Timer(
        stmt="run(None, feed)", globals={"run": session.run, "feed": feed}, num_threads=1
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


# --- loading exports back --------------------------------------------------------------------------


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        # TorchScript archives hold their code; torch.save archives only data.pkl and tensors.
        return any(n.split("/")[1:2] == ["code"] for n in z.namelist())


def _load_state_dict_export(path: Path) -> nn.Module:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot read {path}: {_first_line(e)}") from None
    if not isinstance(blob, dict) or "arch" not in blob or "state_dict" not in blob:
        raise ExportError(
            f"{path} is not a compactnas state-dict export (no 'arch' and 'state_dict')"
        )
    shape = blob.get("input_shape") or [1]
    model = build_model(blob["arch"], num_classes=int(blob["num_classes"]), in_chans=int(shape[0]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise ExportError(
            f"{path}: weights do not match '{blob['arch']}': {_first_line(e)}"
        ) from None
    return model.eval()


_PREFERENCE = ("onnx", "torchscript", "state-dict", "onnx-int8", "tflite", "executorch")


def load_exported(path: str | Path, *, format: str | None = None) -> Any:  # noqa: A002 - the CLI's word
    """Load an export made by ``compactnas export``.

    * ``.onnx`` -> an ``OnnxModel``: call it on an N x C x H x W array to get numpy logits (onnxruntime);
    * a TorchScript file -> a ``torch.jit.ScriptModule``;
    * ``.tflite`` / ``.pte`` -> a model run by LiteRT / ExecuTorch: call it on an array, get numpy logits;
    * a state-dict export -> the ``nn.Module`` rebuilt from the architecture string stored in the file;
    * an export folder (with card.json) -> the export named by ``format``, else the first present of
      onnx, torchscript, state-dict, onnx-int8.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return _load_from_folder(p, format)
    if not p.is_file():
        raise ExportError(f"no such export: {p}")
    if p.suffix in (".tflite", ".pte"):  # LiteRT and ExecuTorch (the edge extra)
        from compactnas.search.export_edge import load_edge

        return load_edge(p)
    if p.suffix == ".onnx":
        try:
            return OnnxModel(p)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"onnxruntime cannot load {p}: {_first_line(e)}") from None
    if _is_torchscript(p):
        with _quiet():
            return torch.jit.load(str(p), map_location="cpu").eval()
    if zipfile.is_zipfile(p):
        return _load_state_dict_export(p)
    raise ExportError(f"{p} is not an ONNX, TorchScript or state-dict export")


def _load_from_folder(folder: Path, fmt: str | None) -> Any:
    import json

    card_path = folder / "card.json"
    if not card_path.is_file():
        raise ExportError(f"{folder} holds no export (no card.json)")
    exports = json.loads(card_path.read_text()).get("exports", {})
    if fmt is not None:
        if fmt not in exports or "file" not in exports[fmt]:
            raise ExportError(
                f"{folder} holds no '{fmt}' export (it has: {', '.join(exports) or 'none'})"
            )
        return load_exported(folder / exports[fmt]["file"])
    for name in _PREFERENCE:
        if name in exports:
            return load_exported(folder / exports[name]["file"])
    raise ExportError(f"{folder} holds no loadable model (exports: {', '.join(exports) or 'none'})")
