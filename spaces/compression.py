"""Per-stage compression choices sampled alongside the architecture."""

from __future__ import annotations

from typing import Any

PRUNE_RATIOS = (0.0, 0.25, 0.5, 0.75)
WEIGHT_BITS = (2, 4, 8, 32)
ACT_BITS = (8, 32)


def sample_compression(trial: Any, stage: int, *, prunable: bool = True) -> dict[str, Any]:
    """Pruning ratio (only for stages with hidden channels) and weight/activation bit-widths."""
    return {
        "prune": trial.suggest_categorical(f"s{stage}_pr", PRUNE_RATIOS) if prunable else 0.0,
        "wbits": trial.suggest_categorical(f"s{stage}_wb", WEIGHT_BITS),
        "abits": trial.suggest_categorical(f"s{stage}_ab", ACT_BITS),
    }
