"""A compressed candidate: proxy-trained dense, pruned gradually with fine-tuning, then QAT fine-tuning.

The stages share the candidate's epoch budget (``TrainConfig.epochs``), so a compressed trial costs about
what an uncompressed one does. Accuracy is measured on the compressed (pruned and fake-quantized)
model itself. ``build_compressed_model`` rebuilds that model's exact structure for loading a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compactnas.core.errors import ConfigError
from compactnas.evaluators.clustering import (
    attach_placeholders,
    cluster,
    coded_size_bytes,
    fix_zeros,
    is_coded,
    mask_again,
    sparsify,
    spec_coding,
    zero_masks,
)
from compactnas.evaluators.proxy import trained_metrics
from compactnas.evaluators.pruning import IMPORTANCE, check_pruned, prune_structured
from compactnas.evaluators.quantization import (
    attach_fake_quant,
    calibrate,
    calibration_batches,
    freeze_observers,
    spec_bits,
)
from compactnas.evaluators.rewinding import Snapshots, rewind, rewinds, spec_rewind
from compactnas.evaluators.train import LossFn, Report, TrainConfig, train
from compactnas.spaces.arch import ArchSpec, as_spec
from compactnas.spaces.build import create_model, factorise_projections


@dataclass(frozen=True, kw_only=True)
class CompressionConfig:
    """How a compressed candidate spends its epochs (shares of ``TrainConfig.epochs``).

    Fine-tuning runs at a fraction of the peak learning rate: the weights are already trained and a
    full-size step would undo what pruning and quantization try to preserve. Pruning gets the larger
    share: on digits, removing half of a block's hidden channels needs about four epochs per step to
    recover, while QAT at 8 or 4 bits settles in two or three.
    """

    prune_steps: int = 2
    prune_share: float = 0.4
    sparse_steps: int = 3
    sparse_share: float = 0.3
    qat_share: float = 0.2
    prune_lr_scale: float = 0.5
    qat_lr_scale: float = 0.2
    importance: str = "l2"
    calibration_batches: int = 4

    def __post_init__(self) -> None:
        for name in ("prune_steps", "sparse_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("prune_share", "sparse_share", "qat_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.prune_share + self.qat_share >= 1.0:
            raise ConfigError("prune_share + qat_share must leave epochs for dense training")
        if self.sparse_share + self.qat_share >= 1.0:
            raise ConfigError("sparse_share + qat_share must leave epochs for dense training")
        for name in ("prune_lr_scale", "qat_lr_scale"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        if self.importance not in IMPORTANCE:
            raise ConfigError(
                f"importance must be one of {', '.join(IMPORTANCE)}, got {self.importance!r}"
            )
        if self.calibration_batches < 1:
            raise ConfigError(f"calibration_batches must be >= 1, got {self.calibration_batches}")


def is_pruned(spec: ArchSpec) -> bool:
    return any(st.prune > 0 and st.kind not in ("ds", "cn") for st in spec.stages)


def is_quantized(spec: ArchSpec) -> bool:
    parts = [spec.stem, *spec.stages, spec.head]
    return any(p.wbits < 32 or p.abits < 32 for p in parts)


def is_sparse(spec: ArchSpec) -> bool:
    return any(p.sparsity > 0 for p in (spec.stem, *spec.stages, spec.head))


def is_clustered(spec: ArchSpec) -> bool:
    return any(p.clusters > 0 for p in (spec.stem, *spec.stages, spec.head))


def is_factorised(spec: ArchSpec) -> bool:
    return any(st.lowrank > 0 for st in spec.stages)


def is_compressed(spec: ArchSpec | str) -> bool:
    spec = as_spec(spec)
    return is_pruned(spec) or is_quantized(spec) or is_coded(spec) or is_factorised(spec)


MAX_COMPRESSION_SHARE = 0.7


@dataclass(frozen=True, kw_only=True)
class EpochPlan:
    dense: int
    prune: tuple[int, ...]  # fine-tuning epochs after each structured pruning step
    qat: int  # the last phase: QAT and the codebooks' fine-tuning
    sparse: tuple[int, ...] = ()  # fine-tuning epochs after each magnitude-sparsity step

    @property
    def total(self) -> int:
        return self.dense + sum(self.prune) + sum(self.sparse) + self.qat


def plan_epochs(spec: ArchSpec, epochs: int, cc: CompressionConfig) -> EpochPlan:
    """Split ``epochs`` between dense training, pruning steps and QAT; every phase present gets >= 1."""
    # Together the compression phases take at most MAX_COMPRESSION_SHARE of the epochs (each share
    # scaled down alike when a spec has them all), so dense training keeps the rest.
    # Low-rank projections are factorised at the first structural step and fine-tuned with it.
    structural = is_pruned(spec) or is_factorised(spec)
    shares = {
        "prune": cc.prune_share if structural else 0.0,
        "sparse": cc.sparse_share if is_sparse(spec) else 0.0,
        "qat": cc.qat_share if is_quantized(spec) or is_clustered(spec) else 0.0,
    }
    scale = min(1.0, MAX_COMPRESSION_SHARE / max(sum(shares.values()), 1e-9))
    steps = cc.prune_steps if is_pruned(spec) else 1
    prune = _steps(epochs * shares["prune"] * scale, steps) if structural else ()
    sparse = _steps(epochs * shares["sparse"] * scale, cc.sparse_steps) if is_sparse(spec) else ()
    qat = max(1, round(epochs * shares["qat"] * scale)) if shares["qat"] else 0
    dense = max(1, epochs - sum(prune) - sum(sparse) - qat)
    return EpochPlan(dense=dense, prune=prune, sparse=sparse, qat=qat)


def _steps(epochs: float, steps: int) -> tuple[int, ...]:
    """``epochs`` (rounded, at least 1) split over at most ``steps`` steps of at least one epoch each."""
    total = max(1, round(epochs))
    n = min(steps, total)
    return tuple(total // n + (1 if i < total % n else 0) for i in range(n))


def compress(
    model: nn.Module,
    spec: ArchSpec,
    data: Any,
    cfg: TrainConfig,
    cc: CompressionConfig | None = None,
    *,
    loss_fn: LossFn | None = None,
    report: Report | None = None,
) -> dict[str, float]:
    """Train ``model`` (dense, built from ``spec``) and compress it in place to what ``spec`` promises.

    ``report`` may stop dense training early; the model is then pruned in one step and calibrated
    without fine-tuning, so what is measured is still the compressed model.
    """
    cc = cc or CompressionConfig()
    plan = plan_epochs(spec, cfg.epochs, cc)
    x, y, val = data.train.x, data.train.y, (data.val.x, data.val.y)
    # Segments with ``rw`` keep their weights at an early epoch to rewind to (evaluators/rewinding.py).
    snaps = Snapshots(model, spec_rewind(spec), plan.dense) if rewinds(spec) else None
    stats = train(model, x, y, cfg, val=val, report=report, loss_fn=loss_fn, epochs=plan.dense,
                  on_epoch=snaps.after_epoch if snaps else None)  # fmt: skip
    stopped = bool(stats["stopped_early"])
    epochs = stats["epochs"]
    if plan.prune:
        steps = 1 if stopped else len(plan.prune)
        for k in range(1, steps + 1):
            if is_pruned(spec):
                prune_structured(model, spec, fraction=k / steps, importance=cc.importance)
            if k == 1:  # from the trained dense projections' SVD
                factorise_projections(model, spec)
            if not stopped:
                step_cfg = dataclasses.replace(cfg, seed=cfg.seed + k)
                s = train(
                    model,
                    x,
                    y,
                    step_cfg,
                    loss_fn=loss_fn,
                    epochs=plan.prune[k - 1],
                    lr_scale=cc.prune_lr_scale,
                )
                epochs += s["epochs"]
                stats["loss"] = s["loss"]
        check_pruned(model, spec, data.input_shape, data.num_classes)
    coding = spec_coding(spec)
    if plan.sparse:
        steps = 1 if stopped else len(plan.sparse)
        for k in range(1, steps + 1):
            sparsify(model, coding, fraction=k / steps)
            if not stopped:
                # Rewound weights train again at the full learning rate, as from their epoch; the
                # others are fine-tuned. Without retraining (stopped) nothing is rewound.
                rewound = rewind(model, snaps.state) if snaps is not None else 0
                step_cfg = dataclasses.replace(cfg, seed=cfg.seed + 100 + k)
                s = train(
                    model, x, y, step_cfg, loss_fn=loss_fn, epochs=plan.sparse[k - 1],
                    lr_scale=1.0 if rewound else cc.prune_lr_scale,
                )  # fmt: skip
                epochs += s["epochs"]
                stats["loss"] = s["loss"]
    if plan.qat:
        # The zeros are kept through the last phase: baked in for clustered layers (their index points
        # at the fixed zero), masked again for the others after the quantized modules replace them.
        zeros = zero_masks(model)
        if is_quantized(spec):
            attach_fake_quant(model, spec_bits(spec))
            # Ranges from data before QAT starts, so the first steps do not train against a default range.
            calibrate(
                model,
                calibration_batches(
                    x, batches=cc.calibration_batches, batch_size=cfg.batch_size, seed=cfg.seed
                ),
            )
        cluster(model, coding, seed=cfg.seed)
        mask_again(model, zeros)
        if not stopped:
            qat_cfg = dataclasses.replace(cfg, seed=cfg.seed + 1000)
            s = train(
                model, x, y, qat_cfg, loss_fn=loss_fn, epochs=plan.qat, lr_scale=cc.qat_lr_scale
            )
            epochs += s["epochs"]
            stats["loss"] = s["loss"]
        freeze_observers(model)
    fix_zeros(model)
    return {"epochs": float(epochs), "loss": stats["loss"], "stopped_early": float(stopped)}


@dataclass(frozen=True, kw_only=True)
class CompressEvaluator:
    """Like ProxyEvaluator, for a spec with pruning ratios or bit-widths below 32 (see ``compress``).

    The model passed in is compressed in place: afterwards its state_dict is the compressed model's,
    loadable into ``build_compressed_model(spec, ...)``.
    """

    name: str = "compress"
    trains: bool = True
    train_config: TrainConfig = field(default_factory=TrainConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    loss_fn: LossFn | None = None

    def evaluate(
        self, model: nn.Module, spec: Any, data: Any, *, report: Report | None = None
    ) -> dict[str, float]:
        spec = as_spec(spec)
        stats = compress(
            model,
            spec,
            data,
            self.train_config,
            self.compression,
            loss_fn=self.loss_fn,
            report=report,
        )
        metrics = trained_metrics(model, data, stats, self.train_config)
        if is_coded(spec):
            # Sparse and clustered layers' size depends on the trained weights (entropy coding):
            # what was measured replaces the string's fixed-length estimate.
            metrics["size_bytes"] = float(coded_size_bytes(model))
        return metrics


def build_pruned_model(spec: ArchSpec | str, *, num_classes: int, in_chans: int) -> nn.Module:
    """A float model with the pruned shapes ``spec`` promises (weights untrained): for latency, counting."""
    spec = as_spec(spec)
    model = create_model(spec, num_classes=num_classes, in_chans=in_chans)
    prune_structured(model, spec, fraction=1.0)
    return factorise_projections(model, spec)


def build_compressed_model(spec: ArchSpec | str, *, num_classes: int, in_chans: int) -> nn.Module:
    """The exact structure of a compressed candidate (pruned shapes, fake quantization attached).

    ``model.load_state_dict(checkpoint['state_dict'])`` then restores the trained compressed model,
    activation ranges included; observers stay frozen so evaluation does not move them. For a spec
    without compression this is ``create_model(spec)``.
    """
    spec = as_spec(spec)
    model = build_pruned_model(spec, num_classes=num_classes, in_chans=in_chans)
    if is_quantized(spec):
        attach_fake_quant(model, spec_bits(spec))
        freeze_observers(model)
    attach_placeholders(model, spec_coding(spec))
    model.eval()
    return model
