"""The packed export: a trained compressed model stored at the size the search counted, with its loader.

No runtime stores 2- or 4-bit weights, Huffman-coded codebook indices or zero runs, so this file is
compactnas's own; ``load_packed`` (and ``compactnas.load_exported``) decodes it into the PyTorch model
the search evaluated. What is stored, module by module in the order of the model the architecture
string builds:

- a clustered layer: its codebook (32-bit) and its indices, Huffman-coded as one stream or as zero runs
  plus the non-zero weights' indices (evaluators/clustering.py);
- a layer with weight bits below 32: one 32-bit scale per output channel and the integer levels packed
  at that many bits (zero runs coded when the layer is sparse);
- a sparse float layer: its non-zero values and its zero runs;
- batch norm: folded to a per-channel scale and shift (2 x 32 bits per channel), as deployment folds it;
- an activation quantizer: its scale and zero point; every other tensor raw. Bookkeeping buffers
  (``num_batches_tracked``, observer ranges and flags) are not stored: evaluation does not read them.

Layout: ``CNZ1``, the header's length (4 bytes), the header (zlib-compressed JSON: the architecture,
the classes, the input shape and, per stored tensor, its coding and byte count), then the tensors.
The logits of the decoded model match the evaluated one's to float rounding (batch-norm folding).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.evaluators import entropy
from compactnas.evaluators.clustering import layer_coding, shared_of, zero_runs
from compactnas.evaluators.quantization import weight_levels, weight_qrange
from compactnas.search.export.base import ExportError
from compactnas.search.export.formats import build_model
from compactnas.search.export.registry import ExportFormat, WriteJob, register_format
from compactnas.spaces.layers import RUN_CAP

MAGIC = b"CNZ1"
_SKIP = (
    "num_batches_tracked",
    "min_val",
    "max_val",
    "eps",
    "fake_quant_enabled",
    "observer_enabled",
)


# --- bit packing -----------------------------------------------------------------------------------


def pack_levels(q: np.ndarray, bits: int) -> bytes:
    """Signed levels in ``weight_qrange(bits)`` as offset-binary ``bits``-bit fields, packed; at 1 bit
    the sign alone (a binary layer's zeros are coded as runs, never as levels)."""
    if bits == 1:
        return np.packbits((q > 0).astype(np.uint8)).tobytes()
    qmin, _ = weight_qrange(bits)
    u = (q.astype(np.int64) - qmin).astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((u[:, None] >> shifts) & 1).astype(np.uint8).ravel()).tobytes()


def unpack_levels(data: bytes, bits: int, count: int) -> np.ndarray:
    if bits == 1:
        return np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count].astype(np.int64) * 2 - 1
    qmin, _ = weight_qrange(bits)
    b = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
    u = (b.astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(axis=1)
    return u + qmin


def _positions(n_runs: int, data: bytes) -> np.ndarray:
    """Non-zero positions from the run symbols ``zero_runs`` wrote."""
    runs = entropy.decode(data, RUN_CAP + 1, n_runs)
    pos, out = 0, []
    for r in runs:
        if r == RUN_CAP:
            pos += RUN_CAP
        else:
            pos += int(r)
            out.append(pos)
            pos += 1
    return np.asarray(out, dtype=np.int64)


# --- writing -----------------------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.entries: list[list[Any]] = []
        self.blobs: list[bytes] = []

    def add(self, coding: str, blob: bytes, *counts: int) -> None:
        self.entries.append([coding, len(blob), *counts])
        self.blobs.append(blob)

    def raw(self, t: torch.Tensor) -> None:
        arr = t.detach().cpu().contiguous().numpy()
        self.add("raw", arr.tobytes())


def _write_weight(w: _Writer, m: nn.Module) -> None:
    shared = shared_of(m)
    weight = m.weight.detach().cpu()
    if shared is not None:
        k = shared.clusters
        idx = shared.index.cpu().numpy().ravel().astype(np.int64)
        zero = idx == k
        w.raw(m.parametrizations.weight.original)
        c = layer_coding("", weight, clusters=k, wbits=32, index=shared.index)
        if c.mode == "runs":
            runs = zero_runs(zero)
            w.add("runs", entropy.encode(runs, RUN_CAP + 1), len(runs))
            w.add("huffman", entropy.encode(idx[~zero], k), int((~zero).sum()))
        else:
            w.add("huffman", entropy.encode(idx, k + 1), len(idx))
        return
    bits = int(getattr(m, "weight_bits", 32))
    flat = weight.reshape(weight.shape[0], -1)
    if bits < 32:
        q, scale = weight_levels(weight, bits)
        w.raw(scale)
        values = q.numpy().ravel()
    else:
        values = flat.numpy().ravel()
    zero = values == 0
    c = layer_coding("", weight if bits == 32 else torch.from_numpy(values), clusters=0, wbits=bits)
    if c.mode == "runs":
        runs = zero_runs(zero)
        w.add("runs", entropy.encode(runs, RUN_CAP + 1), len(runs))
        values = values[~zero]
    blob = pack_levels(values, bits) if bits < 32 else values.astype(np.float32).tobytes()
    w.add("levels" if bits < 32 else "raw", blob, len(values))


def _modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module but a parametrization's internals (a clustered layer writes its codebook and
    indices itself)."""
    return [(n, m) for n, m in model.named_modules() if "parametrizations" not in n.split(".")]


def _owned(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A module's own parameters and buffers (not its children's), as the state dict names them."""
    out = [(n, p) for n, p in m.named_parameters(recurse=False)]
    out += [(n, b) for n, b in m.named_buffers(recurse=False) if b is not None]
    return out


def write_packed(
    model: nn.Module, arch: str, num_classes: int, input_shape: Any, path: Path
) -> None:
    w = _Writer()
    for _, m in _modules(model):
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            a = m.weight.detach() / torch.sqrt(m.running_var + m.eps)
            w.raw(a)
            w.raw(m.bias.detach() - m.running_mean * a)
            continue
        if isinstance(m, nn.Conv2d | nn.Linear):
            _write_weight(w, m)
            if m.bias is not None:
                w.raw(m.bias)
            continue
        for name, t in _owned(m):
            if name not in _SKIP:
                w.raw(t)
    header = zlib.compress(
        json.dumps(
            {"version": 1, "arch": arch, "num_classes": num_classes,
             "input_shape": list(input_shape), "tensors": w.entries},
            separators=(",", ":"),
        ).encode(),
        9,
    )  # fmt: skip
    path.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + b"".join(w.blobs))


# --- reading -----------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, entries: list[list[Any]], body: bytes) -> None:
        self.entries, self.body, self.i, self.pos = entries, body, 0, 0

    def next(self) -> tuple[str, bytes, list[int]]:
        if self.i >= len(self.entries):
            raise ExportError("packed file holds fewer tensors than its architecture needs")
        coding, size, *counts = self.entries[self.i]
        blob = self.body[self.pos : self.pos + size]
        if len(blob) != size:
            raise ExportError("packed file is truncated (its last tensors are missing)")
        self.i += 1
        self.pos += size
        return coding, blob, counts

    def raw_into(self, t: torch.Tensor) -> None:
        _, blob, _ = self.next()
        arr = np.frombuffer(blob, dtype=t.detach().cpu().numpy().dtype)
        t.copy_(torch.from_numpy(arr.copy()).reshape(t.shape))


@torch.no_grad()
def _read_weight(r: _Reader, m: nn.Module) -> None:
    shared = shared_of(m)
    if shared is not None:
        k = shared.clusters
        r.raw_into(m.parametrizations.weight.original)
        n = shared.index.numel()
        coding, blob, counts = r.next()
        if coding == "runs":
            pos = _positions(counts[0], blob)
            _, vblob, vcounts = r.next()
            idx = np.full(n, k, dtype=np.int64)
            idx[pos] = entropy.decode(vblob, k, vcounts[0])
        else:
            idx = entropy.decode(blob, k + 1, counts[0])
        shared.index.copy_(torch.from_numpy(idx).reshape(shared.index.shape))
        return
    weight = m.weight
    bits = int(getattr(m, "weight_bits", 32))
    rows = weight.shape[0]
    n = weight.numel()
    scale = None
    if bits < 32:
        scale = torch.empty(rows)
        r.raw_into(scale)
    coding, blob, counts = r.next()
    pos = None
    if coding == "runs":
        pos = _positions(counts[0], blob)
        coding, blob, counts = r.next()
    if coding == "levels":
        vals = unpack_levels(blob, bits, counts[0]).astype(np.float32)
    else:
        vals = np.frombuffer(blob, dtype=np.float32)
    flat = np.zeros(n, dtype=np.float32)
    if pos is not None:
        flat[pos] = vals
    else:
        flat[:] = vals
    out = torch.from_numpy(flat).reshape(rows, -1)
    if scale is not None:
        out = out * scale[:, None]
    weight.copy_(out.reshape(weight.shape))


def load_packed(path: str | Path) -> nn.Module:
    """The model a packed file stores, in eval mode."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ExportError(f"{path} is not a compactnas packed export")
    (size,) = struct.unpack("<I", data[4:8])
    try:
        header = json.loads(zlib.decompress(data[8 : 8 + size]))
    except (zlib.error, ValueError) as e:
        raise ExportError(f"{path}: damaged header ({e})") from None
    model = build_model(
        header["arch"], num_classes=header["num_classes"], in_chans=header["input_shape"][0]
    )
    r = _Reader(header["tensors"], data[8 + size :])
    with torch.no_grad():
        _read_model(r, model)
    if r.i != len(r.entries) or r.pos != len(r.body):
        raise ExportError(f"{path}: {len(r.entries) - r.i} tensors left over after decoding")
    return model.eval()


def _read_model(r: _Reader, model: nn.Module) -> None:
    for _, m in _modules(model):
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            r.raw_into(m.weight)
            r.raw_into(m.bias)
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)
            continue
        if isinstance(m, nn.Conv2d | nn.Linear):
            _read_weight(r, m)
            if m.bias is not None:
                r.raw_into(m.bias)
            continue
        for name, t in _owned(m):
            if name not in _SKIP:
                r.raw_into(t)


def _write(job: WriteJob, path: Path) -> dict[str, Any]:
    write_packed(job.model, job.arch, job.data.num_classes, job.input_shape, path)
    return {"loader": "compactnas.load_exported (or compactnas.search.export.packed.load_packed)"}


register_format(
    ExportFormat(
        name="packed",
        file_name="trial_{trial}.cnz",
        write=_write,
        load=load_packed,
        summary="compactnas packed: the compressed model at its searched size (bit-packed low-bit "
        "weights, Huffman-coded codebook indices and zero runs); compactnas loads it back",
    )
)
