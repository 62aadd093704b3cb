"""Per-stage compression choices sampled alongside the architecture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PRUNE_RATIOS = (0.0, 0.25, 0.5, 0.75)
# Low-rank projections (``lr``), for an unpruned ds/ir/er stage: full rank or these fractions.
LOWRANK_FRACTIONS = (0.0, 0.25, 0.5)
WEIGHT_BITS = (1, 2, 4, 8, 32)
ACT_BITS = (8, 32)
# Weight sharing (``share_weights``): magnitude sparsity and k-means clusters per stage.
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
CLUSTERS = (0, 16, 32)
# How a sparse stage's weights are found: fine-tuned after each pruning round (0), or rewound to the
# end of the first tenth of dense training (lottery-ticket rewinding, evaluators/rewinding.py).
REWIND_POINTS = (0.0, 0.1)

# Early exits (``exits``): no exit, or one at this confidence threshold.
EXIT_THRESHOLDS = (0.0, 0.9, 0.95, 0.99)

Precision = tuple[int, int]  # (weight bits, activation bits)


def sample_exit(trial: Any, stage: int, last: bool) -> dict[str, float]:
    """An exit after ``stage`` and its threshold; the last stage has the network's own output."""
    return {} if last else {"exit": trial.suggest_categorical(f"s{stage}_ex", EXIT_THRESHOLDS)}


def sample_precision(trial: Any, precisions: Sequence[Precision]) -> Precision:
    """One (weight, activation) bit-width pair for the whole network, among what the target runtime
    executes (hw_profiles/runtimes.py); a single choice is not a search dimension."""
    if len(precisions) == 1:
        return tuple(precisions[0])  # type: ignore[return-value]
    names = {f"w{w}a{a}": (w, a) for w, a in precisions}
    return names[trial.suggest_categorical("precision", tuple(names))]


def precision_keys(precision: Precision | None) -> dict[str, int]:
    """The stem's or head's bit-width fields for a whole-network precision (none without one)."""
    return {} if precision is None else {"wbits": precision[0], "abits": precision[1]}


def sample_compression(
    trial: Any,
    stage: int,
    *,
    prunable: bool = True,
    sharing: bool = False,
    precision: Precision | None = None,
    factorable: bool = False,
) -> dict[str, Any]:
    """Pruning ratio (only for stages with hidden channels) and weight/activation bit-widths; with
    ``sharing``, also a sparsity and a cluster count (a clustered stage keeps 32-bit weights: its
    codebook is its quantizer), and for a sparse stage neither pruned nor factorised, whether its
    sparsity is found by rewinding (``rw``). A ``precision`` fixes the bit-widths (the whole network shares it).
    A ``factorable`` stage (a 1x1 projection: ds, ir, er) left unpruned also gets a low-rank fraction."""
    out: dict[str, Any] = {
        "prune": trial.suggest_categorical(f"s{stage}_pr", PRUNE_RATIOS) if prunable else 0.0
    }
    if factorable and not out["prune"]:
        out["lowrank"] = trial.suggest_categorical(f"s{stage}_lr", LOWRANK_FRACTIONS)
    if precision is not None:
        return {**out, **precision_keys(precision)}
    if sharing:
        out["sparsity"] = trial.suggest_categorical(f"s{stage}_sp", SPARSITIES)
        if out["sparsity"] and not out["prune"] and not out.get("lowrank"):
            out["rewind"] = trial.suggest_categorical(f"s{stage}_rw", REWIND_POINTS)
        out["clusters"] = trial.suggest_categorical(f"s{stage}_cl", CLUSTERS)
    if not out.get("clusters"):
        out["wbits"] = trial.suggest_categorical(f"s{stage}_wb", WEIGHT_BITS)
    out["abits"] = trial.suggest_categorical(f"s{stage}_ab", ACT_BITS)
    return out
