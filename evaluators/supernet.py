"""The ``supernet`` evaluator: a candidate's accuracy with weights inherited from a trained supernet.

No training: the sub-network is extracted from the supernet (spaces/supernet.py), its batch-norm
statistics are recomputed on a few training batches (the supernet's running statistics mix every
sub-network that trained through them), and it is scored on the validation split. Results are cached by
architecture string, so a search over several devices evaluates each sub-network once. The test split
is not scored per candidate (on CIFAR-sized test sets that pass costs several times the validation one,
and the search never reads it): it is measured where a chosen sub-network is retrained or exported.

The supernet's checkpoint (``DIR/supernet.pt``) records the data it was trained on (name and a
fingerprint of the training split), its space, input shape and classes; using it with other data or
another space is refused with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compactnas.core.errors import CheckpointError
from compactnas.evaluators.train import Report, accuracy
from compactnas.spaces.arch import ArchSpec, as_spec
from compactnas.spaces.elastic import ElasticSpace
from compactnas.spaces.supernet import Supernet

CHECKPOINT = "supernet.pt"
FORMAT = "compactnas-supernet-1"


class SupernetMismatch(CheckpointError):
    """A supernet used with data, a space or an input shape other than its own."""


def data_fingerprint(data: Any) -> str:
    """A short hash of the training split (images and labels): the data's identity, whatever its name."""
    h = hashlib.sha256()
    h.update(data.train.x.contiguous().numpy().tobytes())
    h.update(data.train.y.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_checkpoint(folder: str | Path) -> dict[str, Any]:
    path = Path(folder).expanduser() / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(
            f"no supernet in {path.parent} (expected {CHECKPOINT}; train one first)"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a damaged file is the user's to fix, in one line
        raise CheckpointError(
            f"{path} is not a readable supernet checkpoint ({type(e).__name__})"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a compactnas supernet checkpoint")
    return blob


def check_matches(
    blob: dict[str, Any], data: Any, space: str | None = None, *, identity: bool = True
) -> None:
    """SupernetMismatch unless the supernet was trained on this data (and space, when given)."""
    if space is not None and blob["space"] != space:
        raise SupernetMismatch(
            f"the supernet was trained on space '{blob['space']}', not '{space}'"
        )
    if identity and (blob["data"] != data.name or blob["fingerprint"] != data_fingerprint(data)):
        raise SupernetMismatch(
            f"the supernet was trained on other data ('{blob['data']}', training split "
            f"{blob['fingerprint']}), not '{data.name}' ({data_fingerprint(data)})"
        )
    if (
        list(blob["input_shape"]) != list(data.input_shape)
        or blob["num_classes"] != data.num_classes
    ):
        raise SupernetMismatch(
            f"the supernet takes {tuple(blob['input_shape'])} inputs and {blob['num_classes']} classes, "
            f"the data {tuple(data.input_shape)} and {data.num_classes}"
        )


def supernet_from(blob: dict[str, Any]) -> Supernet:
    net = Supernet(
        ElasticSpace.from_dict(blob["elastic"]),
        num_classes=blob["num_classes"],
        in_chans=blob["input_shape"][0],
    )
    net.load_state_dict(blob["state_dict"])
    return net.eval()


@torch.no_grad()
def recalibrate(
    model: nn.Module, x: torch.Tensor, *, batches: int, batch_size: int, seed: int = 0
) -> None:
    """Batch-norm running statistics recomputed as plain averages over ``batches`` training batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=gen)
    model.train()
    for i in range(batches):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        if len(idx) < 2:
            break
        model(x[idx])
    for m in bns:
        m.momentum = 0.1
    model.eval()


def inherited_model(
    net: Supernet, spec: ArchSpec | str, data: Any, *, batches: int = 8, batch_size: int = 64
) -> nn.Module:
    """``create_model(spec)`` with the supernet's weights and recalibrated batch-norm statistics."""
    model = net.extract(spec)
    recalibrate(model, data.train.x, batches=batches, batch_size=batch_size)
    return model


# Per process: the supernets loaded, by checkpoint path and modification time.
_NETS: dict[tuple[str, int], Supernet] = {}
CACHE = "inherited.db"


def _key(folder: str) -> tuple[str, int]:
    path = (Path(folder).expanduser() / CHECKPOINT).resolve()
    return str(path), path.stat().st_mtime_ns if path.is_file() else 0


class AccuracyCache:
    """Sub-network accuracies measured with one supernet, in ``DIR/inherited.db`` (SQLite, so that
    worker processes and searches for several devices share it): each architecture is evaluated once
    per supernet state, data split and calibration setting."""

    def __init__(self, folder: str, context: str):
        self.path = Path(folder).expanduser() / CACHE
        self.context = context

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("CREATE TABLE IF NOT EXISTS acc (key TEXT PRIMARY KEY, metrics TEXT NOT NULL)")
        return db

    def get(self, arch: str) -> dict[str, float] | None:
        with contextlib.closing(self._db()) as db:
            row = db.execute(
                "SELECT metrics FROM acc WHERE key = ?", (f"{self.context}|{arch}",)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, arch: str, metrics: dict[str, float]) -> None:
        with contextlib.closing(self._db()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO acc VALUES (?, ?)",
                (f"{self.context}|{arch}", json.dumps(metrics)),
            )


def _split_digest(data: Any) -> str:
    h = hashlib.sha256(data.val.y.numpy().tobytes())
    h.update(data.test.y.numpy().tobytes())
    h.update(str((len(data.train), tuple(data.train.y[:64].tolist()))).encode())
    return h.hexdigest()[:12]


@dataclass(kw_only=True)
class SupernetEvaluator:
    """Accuracy of a sub-network with inherited weights; ``model`` receives them when it is measured."""

    folder: str
    calib_batches: int = 8
    calib_batch_size: int = 64
    space: str | None = None
    name: str = "supernet"
    trains: bool = False

    def network(self, data: Any) -> tuple[Supernet, AccuracyCache]:
        key = _key(self.folder)
        if key not in _NETS:
            blob = read_checkpoint(self.folder)
            # The search checked the data's identity on the whole data set; a worker may hold a subset.
            check_matches(blob, data, self.space, identity=False)
            _NETS[key] = supernet_from(blob)
        context = f"{key[1]}|{_split_digest(data)}|{self.calib_batches}x{self.calib_batch_size}"
        return _NETS[key], AccuracyCache(self.folder, context)

    def evaluate(
        self, model: nn.Module | None, spec: Any, data: Any, *, report: Report | None = None
    ) -> dict[str, float]:
        net, cache = self.network(data)
        # A compressed candidate is scored as the sub-network its pruning ratios map to.
        key = str(net.space.subnetwork(spec))
        own_weights = key == str(as_spec(spec))
        hit = cache.get(key)
        if hit is not None:  # trains=False: the search keeps no weights, only the metrics
            return {**hit, "cached": 1.0}
        sub = inherited_model(
            net, key, data, batches=self.calib_batches, batch_size=self.calib_batch_size
        )
        if model is not None and own_weights:
            model.load_state_dict(sub.state_dict())
            model.eval()
        metrics = {
            "accuracy": accuracy(sub, data.val.x, data.val.y),
            "epochs": 0.0,
        }
        cache.put(key, metrics)
        return {**metrics, "cached": 0.0}
