"""Where training runs: device resolution, mixed precision and the GPUs a worker may use.

``--train-device`` names where candidates train (``--device`` names the *target* device profile, where
the model deploys; latency is never measured on the training accelerator).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from compactnas.core.errors import ConfigError

TRAIN_DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "amp")

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def check_train_device(name: str) -> str:
    """``name`` if it is a well-formed train device (not whether it is present), else ConfigError."""
    if name in ("auto", "cpu", "cuda", "mps") or _CUDA_INDEX.fullmatch(name):
        return name
    raise ConfigError(f"unknown train device '{name}' (use one of: {', '.join(TRAIN_DEVICES)})")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_train_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device ``name`` means here: ``auto`` is CUDA when present, else MPS, else the CPU.

    An accelerator that is asked for by name and absent is a one-line ConfigError."""
    if isinstance(name, torch.device):
        return name
    check_train_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ConfigError(
                "train device 'mps' is not available here (no Apple GPU); use cpu or auto"
            )
        return torch.device("mps")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise ConfigError(
            f"train device '{name}' is not available here (torch sees no CUDA GPU); use cpu or auto"
        )
    m = _CUDA_INDEX.fullmatch(name)
    if m and int(m.group(1)) >= n:
        raise ConfigError(f"train device '{name}' does not exist: torch sees {n} CUDA GPU(s)")
    return torch.device(name)


@dataclass(frozen=True)
class Precision:
    """How a step runs: autocast on or off, its dtype, and whether a gradient scaler is needed."""

    enabled: bool
    dtype: torch.dtype
    scaled: bool

    @property
    def name(self) -> str:
        if not self.enabled:
            return "fp32"
        return "amp-bf16" if self.dtype == torch.bfloat16 else "amp-fp16"


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``amp``: bf16 autocast where the device supports it (CPU, recent CUDA GPUs), else fp16 with a
    gradient scaler (older CUDA GPUs, MPS). ``fp32``: autocast off. ``auto``: ``amp`` on an
    accelerator, ``fp32`` on the CPU (bf16 convolutions are slower than fp32 on most CPUs)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}' (use one of: {', '.join(PRECISIONS)})")
    if precision == "auto":
        precision = "fp32" if device.type == "cpu" else "amp"
    if precision == "fp32":
        return Precision(False, torch.float32, False)
    if device.type == "cpu":
        return Precision(True, torch.bfloat16, False)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision(True, torch.bfloat16, False)
    return Precision(True, torch.float16, True)


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if not precision.enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def gpu_count() -> int:
    """CUDA GPUs this process may use (0 without CUDA). Counting does not create a CUDA context."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_gpus(train_device: str, workers: int) -> list[str | None]:
    """For each of ``workers`` local worker processes, the CUDA_VISIBLE_DEVICES it gets (None: leave
    the environment as it is). With ``auto`` or ``cuda`` and G GPUs, worker i gets GPU i mod G of those
    this process sees; a pinned ``cuda:N`` or a CPU/MPS device leaves every worker's environment alone."""
    if train_device not in ("auto", "cuda"):
        return [None] * workers
    n = gpu_count()
    if n == 0:
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = (
        [s.strip() for s in visible.split(",") if s.strip()]
        if visible
        else [str(i) for i in range(n)]
    )
    ids = ids[:n] or [str(i) for i in range(n)]
    return [ids[i % len(ids)] for i in range(workers)]


@contextlib.contextmanager
def on_device(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """``model`` moved to ``device`` for the block, and back to where it was after it."""
    home = next((p.device for p in model.parameters()), torch.device("cpu"))
    if home == device:
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)
