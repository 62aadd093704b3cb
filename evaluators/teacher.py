"""A large teacher for distillation: a timm model trained from scratch, cached per data set.

Nothing is downloaded (``pretrained=False``). For small inputs (32 pixels or less) a ResNet's stem
convolution gets stride 1, as ResNets for CIFAR do: its usual stride-2 stem and max pool would shrink
an 8x8 digit to 2x2 before the first residual stage, and the teacher would lose accuracy it needs.

A teacher checkpoint is a dict (loaded with ``torch.load(weights_only=True)``)::

    {"format": "compactnas-teacher", "model": timm name, "num_classes": int, "in_chans": int,
     "image_size": int, "data": source, "seed": int, "resize": int | None, "epochs": int,
     "metrics": {...}, "state_dict": {...}}

A plain state_dict of a timm model (e.g. one a user trained elsewhere) is accepted too; its model name
is then given by the caller.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compactnas.core.errors import CheckpointError, ConfigError
from compactnas.evaluators.counting import count_parameters
from compactnas.evaluators.train import TrainConfig, accuracy, train

FORMAT = "compactnas-teacher"
DEFAULT_MODEL = (
    "resnet10t"  # ~4.9M parameters: 100x a typical 50k-parameter candidate, trains in a minute
)


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    model: str = DEFAULT_MODEL
    epochs: int = 20
    lr: float = 0.002
    batch_size: int = 64
    weight_decay: float = 5e-4
    drop_rate: float = 0.2
    seed: int = 0
    # where it trains (not part of the cache key: the same teacher, wherever it was trained)
    train_device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"teacher epochs must be >= 1, got {self.epochs}")
        check_model_name(self.model)
        TrainConfig(train_device=self.train_device, precision=self.precision)


def check_model_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        raise ConfigError(
            f"unknown teacher model '{name}' (a timm model name, e.g. resnet10t or resnet18)"
        )


def create_teacher(
    name: str, *, num_classes: int, in_chans: int, image_size: int, drop_rate: float = 0.0
) -> nn.Module:
    import timm
    from timm.models.resnet import ResNet

    check_model_name(name)
    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
    )
    if image_size <= 32 and isinstance(model, ResNet):
        first = model.conv1[0] if isinstance(model.conv1, nn.Sequential) else model.conv1
        first.stride = (1, 1)
    return model


def teacher_path(
    cache_dir: str | Path, *, source: str, seed: int, resize: int | None, model: str
) -> Path:
    """Where the teacher for (data source, seed, resize, model) is cached."""
    key = json.dumps(
        {"data": source, "seed": seed, "resize": resize, "model": model}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.rsplit("/", 1)[-1])[:40]
    return Path(cache_dir).expanduser() / f"teacher-{readable}-{model}-{digest}.pt"


def train_teacher(data: Any, tc: TeacherConfig) -> tuple[nn.Module, dict[str, float]]:
    torch.manual_seed(tc.seed)
    model = create_teacher(
        tc.model, num_classes=data.num_classes, in_chans=data.input_shape[0], image_size=data.image_size,
        drop_rate=tc.drop_rate,
    )  # fmt: skip
    cfg = TrainConfig(
        epochs=tc.epochs,
        lr=tc.lr,
        batch_size=tc.batch_size,
        weight_decay=tc.weight_decay,
        seed=tc.seed,
        train_device=tc.train_device,
        precision=tc.precision,
    )
    train(model, data.train.x, data.train.y, cfg)
    model.eval()
    metrics = {
        "accuracy": accuracy(model, data.val.x, data.val.y, cfg),
        "test_accuracy": accuracy(model, data.test.x, data.test.y, cfg),
        "params": float(count_parameters(model)),
    }
    return model, metrics


def save_teacher(
    path: Path, model: nn.Module, *, name: str, data: Any, meta: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "format": FORMAT,
        "model": name,
        "num_classes": data.num_classes,
        "in_chans": data.input_shape[0],
        "image_size": data.image_size,
        **meta,
        "state_dict": model.state_dict(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # a killed run never leaves a half-written teacher in the cache


def load_teacher(
    path: str | Path,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    model: str = DEFAULT_MODEL,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a teacher checkpoint safely and check it fits the data; any mismatch is a CheckpointError.

    ``model`` names the architecture of a plain state_dict; a compactnas checkpoint names its own.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every unreadable file is the same user error
        raise CheckpointError(
            f"{p} is not a PyTorch checkpoint that loads with weights_only=True ({type(e).__name__})"
        ) from None
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
        state = ckpt.get("state_dict")
        name = ckpt.get("model")
        if not isinstance(name, str) or not isinstance(state, dict):
            raise CheckpointError(
                f"{p} is a damaged teacher checkpoint (no model name or state_dict)"
            )
        if ckpt.get("num_classes") != num_classes:
            raise CheckpointError(
                f"teacher {p} was trained for {ckpt.get('num_classes')} classes; the data has {num_classes}"
            )
        if ckpt.get("in_chans") != in_chans:
            raise CheckpointError(
                f"teacher {p} takes {ckpt.get('in_chans')} input channel(s); the data has {in_chans}"
            )
    elif (
        isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
    ):
        meta, state, name = {"model": model}, ckpt, model
    else:
        raise CheckpointError(
            f"{p} is not a teacher checkpoint (make one with 'compactnas teacher')"
        )
    try:
        net = create_teacher(
            name, num_classes=num_classes, in_chans=in_chans, image_size=image_size
        )
    except ConfigError as e:
        raise CheckpointError(f"teacher {p}: {e}") from None
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        mismatch = lines[0].split(":")[0] if lines else "tensor shapes differ"
        raise CheckpointError(
            f"teacher {p} does not fit {name} with {num_classes} classes: {mismatch}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        first = (result.missing_keys or result.unexpected_keys)[0]
        raise CheckpointError(
            f"teacher {p} does not fit {name}: {len(result.missing_keys)} missing and "
            f"{len(result.unexpected_keys)} unexpected tensor(s), e.g. '{first}'"
        )
    net.eval()
    return net, meta


def get_teacher(
    data: Any,
    *,
    cache_dir: str | Path,
    source: str,
    resize: int | None,
    config: TeacherConfig,
    force: bool = False,
) -> tuple[nn.Module, Path, dict[str, Any], bool]:
    """The cached teacher for this data set, trained first if there is none: (model, path, meta, cached)."""
    path = teacher_path(
        cache_dir, source=source, seed=config.seed, resize=resize, model=config.model
    )
    shape = {
        "num_classes": data.num_classes,
        "in_chans": data.input_shape[0],
        "image_size": data.image_size,
    }
    if path.is_file() and not force:
        model, meta = load_teacher(path, **shape)
        return model, path, meta, True
    model, metrics = train_teacher(data, config)
    meta = {
        "data": source,
        "seed": config.seed,
        "resize": resize,
        "epochs": config.epochs,
        "metrics": metrics,
    }
    save_teacher(path, model, name=config.model, data=data, meta=meta)
    return model, path, {"model": config.model, **shape, **meta}, False
