"""Objectives by name: which metric each reads and which way is better."""

from __future__ import annotations

from dataclasses import dataclass

from compactnas.core.errors import RegistryError


@dataclass(frozen=True)
class Objective:
    name: str
    metric: str
    direction: str  # "maximize" or "minimize"
    label: str
    needs: str | None = None  # a device-profile capability the objective needs
    # (worst, best) where the metric has natural bounds (accuracy: 0 and 1). A maximised objective's
    # distance from its best is what is minimised (accuracy becomes error); one without bounds is negated.
    bounds: tuple[float, float] | None = None

    @property
    def maximized(self) -> bool:
        return self.direction == "maximize"

    def to_min(self, value: float) -> float:
        """The value as a quantity to minimise, by the objective's declared direction."""
        if not self.maximized:
            return value
        return self.bounds[1] - value if self.bounds is not None else -value


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("accuracy", "accuracy", "maximize", "validation accuracy", bounds=(0.0, 1.0)),
        Objective("latency", "latency_ms", "minimize", "latency (ms)"),
        Objective("size", "size_bytes", "minimize", "size (bytes)"),
        Objective("params", "params", "minimize", "parameters"),
        Objective("macs", "macs", "minimize", "MACs"),
        Objective("energy", "energy_mj", "minimize", "energy (mJ)", needs="energy"),
        Objective("sram", "peak_sram_kb", "minimize", "peak SRAM (KB)", needs="sram"),
    )
}


def register_objective(objective: Objective) -> Objective:
    """Adds an objective by name: its metric is what an evaluator returns, its direction how it ranks."""
    if objective.direction not in ("maximize", "minimize"):
        raise RegistryError(f"objective '{objective.name}': direction must be maximize or minimize")
    if objective.name in OBJECTIVES:
        raise RegistryError(f"objective '{objective.name}' is already registered")
    OBJECTIVES[objective.name] = objective
    return objective


def resolve_objectives(names: tuple[str, ...] | list[str]) -> list[Objective]:
    out = []
    for n in names:
        if n not in OBJECTIVES:
            raise RegistryError(f"unknown objective '{n}' (known: {', '.join(OBJECTIVES)})")
        out.append(OBJECTIVES[n])
    return out
