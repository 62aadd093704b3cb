"""The ``mobile`` space: depthwise-separable, inverted-residual, plain-convolution and fused
inverted-residual stages (MobileNetV2/V3, EfficientNetV2 and MobileDets families).

Plain (``cn``) and fused (``er``) convolutions run as one dense k x k convolution, which CPUs and
accelerators execute far better than a depthwise one at small inputs; depthwise blocks stay cheaper in
MACs and parameters. The search decides per stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compactnas.spaces.arch import ArchSpec, BlockSpec, HeadSpec, StemSpec
from compactnas.spaces.compression import (
    Precision,
    precision_keys,
    sample_compression,
    sample_exit,
    sample_precision,
)
from compactnas.spaces.layout import stage_layout
from compactnas.spaces.registry import register_space

KINDS = ("ds", "ir", "cn", "er")
KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 4, 6)
SE_RATIOS = (0.0, 0.25)
DEPTHS = (1, 2, 3)


@dataclass(frozen=True, kw_only=True)
class MobileSpace:
    name: str = "mobile"
    image_size: int = 8
    compress: bool = False
    share_weights: bool = False
    # With ``compress``: the (weight, activation) bit-widths the target runtime executes, one pair for
    # the whole network (hw_profiles/runtimes.py); None samples them per stage.
    precisions: tuple[Precision, ...] | None = None
    exits: bool = False  # early exits after stages (ex keys)

    def sample(self, trial: Any) -> ArchSpec:
        stem_stride, strides, widths = stage_layout(self.image_size)
        fixed = (
            sample_precision(trial, self.precisions) if self.compress and self.precisions else None
        )
        stem = StemSpec(
            kernel=3,
            stride=stem_stride,
            channels=trial.suggest_categorical("stem_c", (8, 16, 24)),
            **precision_keys(fixed),
        )
        stages = []
        for i, (stride, choices) in enumerate(zip(strides, widths, strict=True)):
            kind = trial.suggest_categorical(f"s{i}_kind", KINDS)
            exp = 1 if kind in ("ds", "cn") else trial.suggest_categorical(f"s{i}_e", EXPANSIONS)
            stages.append(
                BlockSpec(
                    kind=kind,
                    repeats=trial.suggest_categorical(f"s{i}_r", DEPTHS),
                    kernel=trial.suggest_categorical(f"s{i}_k", KERNELS),
                    stride=stride,
                    expansion=float(exp),
                    channels=trial.suggest_categorical(f"s{i}_c", choices),
                    se=0.0 if kind == "cn" else trial.suggest_categorical(f"s{i}_se", SE_RATIOS),
                    **(
                        sample_compression(
                            trial,
                            i,
                            prunable=kind in ("ir", "er"),
                            sharing=self.share_weights,
                            precision=fixed,
                            factorable=self.compress and kind in ("ds", "ir", "er"),
                        )
                        if self.compress or self.share_weights
                        else {}
                    ),
                    **(sample_exit(trial, i, i == len(strides) - 1) if self.exits else {}),
                )
            )
        head = HeadSpec(
            channels=trial.suggest_categorical("head_c", (0, 64, 128)), **precision_keys(fixed)
        )
        return ArchSpec(stem=stem, stages=tuple(stages), head=head)


@register_space("mobile")
def mobile(**kwargs: Any) -> MobileSpace:
    return MobileSpace(**kwargs)
