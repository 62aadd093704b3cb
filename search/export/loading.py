"""Loading an export back: a file of any format, or an export folder through its card."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compactnas.search.export.base import ExportError, first_line, silenced
from compactnas.search.export.edge import load_edge
from compactnas.search.export.formats import build_model
from compactnas.search.export.packed import load_packed
from compactnas.search.export.runners import OnnxModel


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
        raise ExportError(f"cannot read {path}: {first_line(e)}") from None
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
            f"{path}: weights do not match '{blob['arch']}': {first_line(e)}"
        ) from None
    return model.eval()


_PREFERENCE = ("onnx", "torchscript", "state-dict", "onnx-int8", "tflite", "executorch")


def load_exported(path: str | Path, *, format: str | None = None) -> Any:  # noqa: A002 - the CLI's word
    """Load an export made by ``compactnas export``.

    * ``.onnx`` -> an ``OnnxModel``: call it on an N x C x H x W array to get numpy logits (onnxruntime);
    * a TorchScript file -> a ``torch.jit.ScriptModule``;
    * ``.tflite`` / ``.pte`` -> a model run by LiteRT / ExecuTorch: call it on an array, get numpy logits;
    * a packed export (``.cnz``) -> the compressed ``nn.Module`` it decodes to;
    * a state-dict export -> the ``nn.Module`` rebuilt from the architecture string stored in the file;
    * an export folder (with card.json) -> the export named by ``format``, else the first present of
      onnx, torchscript, state-dict, onnx-int8.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return _load_from_folder(p, format)
    if not p.is_file():
        raise ExportError(f"no such export: {p}")
    if p.suffix == ".cnz":  # compactnas's packed compressed form
        return load_packed(p)
    if p.suffix in (".tflite", ".pte"):  # LiteRT and ExecuTorch (the edge extra)
        return load_edge(p)
    if p.suffix == ".onnx":
        try:
            return OnnxModel(p)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"onnxruntime cannot load {p}: {first_line(e)}") from None
    if _is_torchscript(p):
        with silenced():
            return torch.jit.load(str(p), map_location="cpu").eval()
    if zipfile.is_zipfile(p):
        return _load_state_dict_export(p)
    raise ExportError(f"{p} is not an ONNX, TorchScript or state-dict export")


def _load_from_folder(folder: Path, fmt: str | None) -> Any:
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
