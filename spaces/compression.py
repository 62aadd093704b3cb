"""Per-stage compression choices sampled alongside the architecture."""

from __future__ import annotations

from typing import Any

PRUNE_RATIOS = (0.0, 0.25, 0.5, 0.75)
WEIGHT_BITS = (2, 4, 8, 32)
ACT_BITS = (8, 32)
# Weight sharing (``share_weights``): magnitude sparsity and k-means clusters per stage.
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
CLUSTERS = (0, 16, 32)


def sample_compression(
    trial: Any, stage: int, *, prunable: bool = True, sharing: bool = False
) -> dict[str, Any]:
    """Pruning ratio (only for stages with hidden channels) and weight/activation bit-widths; with
    ``sharing``, also a sparsity and a cluster count (a clustered stage keeps 32-bit weights: its
    codebook is its quantizer)."""
    out: dict[str, Any] = {
        "prune": trial.suggest_categorical(f"s{stage}_pr", PRUNE_RATIOS) if prunable else 0.0
    }
    if sharing:
        out["sparsity"] = trial.suggest_categorical(f"s{stage}_sp", SPARSITIES)
        out["clusters"] = trial.suggest_categorical(f"s{stage}_cl", CLUSTERS)
    if not out.get("clusters"):
        out["wbits"] = trial.suggest_categorical(f"s{stage}_wb", WEIGHT_BITS)
    out["abits"] = trial.suggest_categorical(f"s{stage}_ab", ACT_BITS)
    return out
