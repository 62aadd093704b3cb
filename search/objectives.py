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

    def to_min(self, value: float) -> float:
        """The value as a quantity to minimise (accuracy becomes error)."""
        return 1.0 - value if self.name == "accuracy" else value


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("accuracy", "accuracy", "maximize", "validation accuracy"),
        Objective("latency", "latency_ms", "minimize", "latency (ms)"),
        Objective("size", "size_bytes", "minimize", "size (bytes)"),
        Objective("params", "params", "minimize", "parameters"),
        Objective("macs", "macs", "minimize", "MACs"),
        Objective("energy", "energy_mj", "minimize", "energy (mJ)", needs="energy"),
        Objective("sram", "peak_sram_kb", "minimize", "peak SRAM (KB)", needs="sram"),
    )
}


def resolve_objectives(names: tuple[str, ...] | list[str]) -> list[Objective]:
    out = []
    for n in names:
        if n not in OBJECTIVES:
            raise RegistryError(f"unknown objective '{n}' (known: {', '.join(OBJECTIVES)})")
        out.append(OBJECTIVES[n])
    return out
