"""The early-exit export (``onnx-exits``): a network with exits (the grammar's ``ex``) as a chain of
ONNX segments a runtime runs one after the other, stopping at the first exit that is confident enough.

The file is a zip of ``segment_<i>.onnx`` and ``manifest.json``. Segment i takes the previous
segment's feature map (the first takes the image) and returns the next feature map and that exit's
logits; the last returns the network's own logits. The manifest names each exit's stage and threshold.
``ExitChain`` loads it with onnxruntime: ``chain(x)`` runs every segment and returns the network's
output (what the export check compares with PyTorch, to 1e-4), ``chain.answer(x)`` stops each input
at its first confident exit, as a device would, and says where each left.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.search.export.base import ExportError, first_line, latency_ms
from compactnas.search.export.formats import INPUT_NAME, write_onnx
from compactnas.search.export.registry import ExportFormat, WriteJob, register_format
from compactnas.spaces.exits import exit_stages

FORMAT_VERSION = 1


class _Segment(nn.Module):
    """Stages ``lo``..``hi`` of a built network, then either an exit (features and its logits) or,
    for the last segment, the network's head and classifier."""

    def __init__(self, model: nn.Module, lo: int, hi: int, exit_key: str | None) -> None:
        super().__init__()
        self.first = lo == 0
        self.stem = model.stem if self.first else nn.Identity()
        self.stages = nn.Sequential(*list(model.stages)[lo : hi + 1])
        self.pool = model.pool
        self.exit = model.exits[exit_key] if exit_key is not None else None
        if exit_key is None:
            self.lastact, self.head, self.classifier = model.lastact, model.head, model.classifier

    def forward(self, x: torch.Tensor) -> Any:
        h = self.stages(self.stem(x))
        if self.exit is not None:
            return h, self.exit(self.pool(h).flatten(1))
        return self.classifier(self.pool(self.head(self.lastact(h))).flatten(1))


def segments(model: nn.Module) -> list[tuple[nn.Module, int | None]]:
    """The chain of segments of a network with exits: (module, stage of its exit or None)."""
    stages = exit_stages(model.spec)
    if not stages:
        raise ExportError(
            "onnx-exits needs an architecture with early exits (an ex key on a stage)"
        )
    out, lo = [], 0
    for s in stages:
        out.append((_Segment(model, lo, s, str(s)), s))
        lo = s + 1
    out.append((_Segment(model, lo, len(model.stages) - 1, None), None))
    # Eval mode on the segments themselves: the exporter restores a module's mode after export, and
    # a segment left in training mode would put the network's shared layers back into it.
    return [(seg.eval(), s) for seg, s in out]


def write_exits(
    model: nn.Module, input_shape: tuple[int, ...], path: Path, check: torch.Tensor
) -> dict:
    """Write the chain; each segment's outputs are compared with PyTorch's on ``check`` first."""
    model = model.eval()
    parts = segments(model)
    thresholds = {i: b.exit for i, b in enumerate(model.spec.stages) if b.exit > 0}
    manifest: dict[str, Any] = {"format": "compactnas-exits", "version": FORMAT_VERSION,
                                "input_shape": list(input_shape), "segments": []}  # fmt: skip
    x = torch.zeros(1, *input_shape)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w") as zf:
        for i, (seg, stage) in enumerate(parts):
            name = f"segment_{i}.onnx"
            outputs = ["features", "logits"] if stage is not None else ["logits"]
            f = Path(tmp) / name
            # Each segment takes the previous one's feature map (``x``, advanced below).
            write_onnx(seg, tuple(x.shape[1:]), f, output_names=tuple(outputs), what=f"segment {i}")
            zf.write(f, name)
            entry: dict[str, Any] = {"file": name, "outputs": outputs}
            if stage is not None:
                entry.update(stage=stage, threshold=thresholds[stage])
            manifest["segments"].append(entry)
            with torch.no_grad():
                out = seg(x)
            x = out[0] if stage is not None else x
        zf.writestr("manifest.json", json.dumps(manifest, indent=2))
    chain = ExitChain(path)
    with torch.no_grad():
        want = [o.numpy() for o in model.forward_exits(check)]
    got = chain.all_logits(check.numpy())
    worst = max(float(np.abs(a - b).max()) for a, b in zip(want, got, strict=True))
    if worst > 1e-4:
        path.unlink(missing_ok=True)
        raise ExportError(f"the exit chain's logits differ from PyTorch's by {worst:.2e}")
    return {"segments": len(parts), "exits": [s for _, s in parts if s is not None],
            "exit_logits_max_abs_diff": worst,
            "loader": "compactnas.search.export.exits.ExitChain (answer(x): early exit)"}  # fmt: skip


class ExitChain:
    """An ``onnx-exits`` file run by onnxruntime (1 thread)."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                self.manifest = json.loads(zf.read("manifest.json"))
                blobs = [zf.read(s["file"]) for s in self.manifest["segments"]]
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise ExportError(f"{self.path} is not an onnx-exits file: {first_line(e)}") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        self.sessions = [
            ort.InferenceSession(b, opts, providers=["CPUExecutionProvider"]) for b in blobs
        ]
        self.thresholds = [s.get("threshold") for s in self.manifest["segments"]]
        self.stages = [s.get("stage", -1) for s in self.manifest["segments"]]

    @property
    def edge_runtime(self) -> str:
        import onnxruntime

        return (
            f"onnxruntime {onnxruntime.__version__} (CPU, 1 thread), {len(self.sessions)} segments"
        )

    def all_logits(self, x: Any) -> list[np.ndarray]:
        """Every exit's logits and the network's, for every input (no input leaves early)."""
        h = np.ascontiguousarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        out = []
        for sess, t in zip(self.sessions, self.thresholds, strict=True):
            res = sess.run(None, {INPUT_NAME: h})
            if t is not None:
                h, logits = res
                out.append(logits)
            else:
                out.append(res[0])
        return out

    def __call__(self, x: Any) -> np.ndarray:
        return self.all_logits(x)[-1]

    def answer(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per input, one at a time as a device runs it: the logits where it left and the stage of
        that exit (-1: the network's output)."""
        x = np.ascontiguousarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        logits, where = [], []
        for i in range(len(x)):
            h = x[i : i + 1]
            for sess, t, stage in zip(self.sessions, self.thresholds, self.stages, strict=True):
                res = sess.run(None, {INPUT_NAME: h})
                if t is None:
                    logits.append(res[0])
                    where.append(-1)
                    break
                h, z = res
                p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
                if p.max() >= t:
                    logits.append(z)
                    where.append(stage)
                    break
        return np.concatenate(logits), np.asarray(where)

    def latency_ms(self, input_shape: tuple[int, ...], min_run_time: float) -> float:
        """Every segment in turn (the worst case: no input leaves early)."""
        return latency_ms(lambda x: self.all_logits(x), input_shape, min_run_time)


def _write(job: WriteJob, path: Path) -> dict[str, Any]:
    check = job.data.val.x[:64]
    return write_exits(job.deploy, job.input_shape, path, check)


register_format(
    ExportFormat(
        name="onnx-exits",
        file_name="trial_{trial}.exits.zip",
        write=_write,
        load=ExitChain,
        summary="ONNX segments of a network with early exits (ex), run one after another until an "
        "exit is confident; compactnas.search.export.exits.ExitChain loads it",
    )
)
