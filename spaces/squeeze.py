"""The ``squeeze`` space: SqueezeNet fire modules (1x1 squeeze, 1x1 + 3x3 expand)."""

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

SQUEEZE_RATIOS = (0.125, 0.25, 0.5)


@dataclass(frozen=True, kw_only=True)
class SqueezeSpace:
    name: str = "squeeze"
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
            c = trial.suggest_categorical(f"s{i}_c", tuple(w for w in choices if w % 2 == 0))
            ratio = trial.suggest_categorical(f"s{i}_q", SQUEEZE_RATIOS)
            stages.append(
                BlockSpec(
                    kind="fire",
                    repeats=trial.suggest_categorical(f"s{i}_r", (1, 2)),
                    stride=stride,
                    channels=c,
                    squeeze=max(4, round(c * ratio)),
                    kernel=3,
                    **(
                        sample_compression(trial, i, sharing=self.share_weights, precision=fixed)
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


@register_space("squeeze")
def squeeze(**kwargs: Any) -> SqueezeSpace:
    return SqueezeSpace(**kwargs)
