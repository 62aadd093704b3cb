"""The device-profile format: one JSON document per device, checked field by field.

A profile is either analytic (``"model": "roofline"``: peak throughput per precision, bandwidth, per-layer
overhead, op-kind efficiencies) or measured (``"model": "table"``: milliseconds per network unit, timed on
one host). Both may carry memory limits and energy figures. Every number needs a citation in ``sources``
(the field's own path or one of its parents), so a reader can tell a datasheet figure from an estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("cpu", "gpu", "mcu", "npu")
MODELS = ("roofline", "table", "features")
PRECISIONS = ("int4", "int8", "fp16", "fp32")  # lowest first: the fallback order
OP_KINDS = ("conv", "pwconv", "dwconv", "linear")  # compute-bound: efficiency = share of peak MAC/s
# Memory-bound operators: efficiency = achieved share of ``bandwidth`` (may exceed 1 where caches help).
MEMORY_KINDS = ("pool", "add", "zero", "bn", "gap", "mul")
COMBINES = ("max", "sum")
PLANNERS = ("live", "tflm", "cmsisnn", "inplace", "overlap")  # memory_plan.py implements each
BACKENDS = ("torch", "onnxruntime")
MEMORY_KEYS = ("sram_kb", "flash_kb", "runtime_sram_kb", "code_flash_kb", "planner")
TOP_KEYS = {
    "name", "kind", "model", "version", "description", "throughput", "bandwidth", "layer_overhead_ms",
    "network_overhead_ms", "efficiency", "memory", "energy", "sources", "table", "measurement",
    "calibrated_from", "combine", "dead_code", "runtime", "coefficients",
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class MemoryLimits:
    """Microcontroller memory: limits and the fixed share the runtime itself takes."""

    sram_kb: float
    flash_kb: float
    runtime_sram_kb: float = 0.0  # interpreter arena bookkeeping, stack, I/O buffers
    code_flash_kb: float = 0.0  # inference runtime and kernels
    # How the runtime lays activations out (hw_profiles/memory_plan.py): live, tflm, cmsisnn, inplace, overlap
    planner: str = "live"


@dataclass(frozen=True, kw_only=True)
class EnergyCost:
    mac_pj: float
    byte_pj: float


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """How a lookup table was measured, so a reader can judge whether it applies to their host."""

    backend: str
    threads: int
    host: str
    torch: str
    space: str
    image_size: int
    in_chans: int
    num_classes: int
    enumeration: str
    onnxruntime: str = ""
    rounds: int = 5  # round-robin visits per unit
    samples: int = 10  # short timed samples per visit
    quantile: float = 0.1  # of all samples: the unit's time
    unit_overhead_ms: float = (
        0.0  # added once per unit: per-call cost the unit timings miss or double count
    )
    fit_seed: int = 0
    fit_archs: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    name: str
    kind: str
    model: str = "roofline"
    version: int = 1
    description: str = ""
    # The inference runtime the device runs (a key of hw_profiles/runtimes.py): it fixes the export
    # format a model for this device is written in. Empty: none named (exports default to ONNX).
    runtime: str = ""
    throughput: Mapping[str, float] = field(default_factory=dict)  # MAC/s per supported precision
    bandwidth: float = 0.0  # bytes/s
    layer_overhead_ms: float = 0.0
    network_overhead_ms: float = 0.0
    efficiency: Mapping[str, float] = field(default_factory=dict)  # fraction of peak per op kind
    memory: MemoryLimits | None = None
    energy: Mapping[str, EnergyCost] | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    table: Mapping[str, float] | None = None
    measurement: Measurement | None = None
    calibrated_from: str | None = None
    # How a layer's compute and memory times combine: the roofline's max, or their sum (what a fit from
    # few measurements uses: linear in its coefficients).
    combine: str = "max"
    # The runtime drops operators whose results never reach the output (graph dead-code elimination).
    dead_code: bool = False
    # model "features": milliseconds per unit of each network feature (hw_profiles/transfer.py)
    coefficients: Mapping[str, float] | None = None

    def supported(self, precision: str) -> str:
        """The precision a layer actually runs at: the requested one or the next higher supported one."""
        for p in PRECISIONS[PRECISIONS.index(precision) :]:
            if p in self.throughput:
                return p
        return "fp32"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
        }
        if self.description:
            out["description"] = self.description
        if self.runtime:
            out["runtime"] = self.runtime
        if self.throughput:
            out["throughput"] = dict(self.throughput)
        if self.bandwidth:
            out["bandwidth"] = self.bandwidth
        if self.model == "roofline" or self.layer_overhead_ms:
            out["layer_overhead_ms"] = self.layer_overhead_ms
        out["network_overhead_ms"] = self.network_overhead_ms
        if self.efficiency:
            out["efficiency"] = dict(self.efficiency)
        if self.combine != "max":
            out["combine"] = self.combine
        if self.dead_code:
            out["dead_code"] = True
        if self.memory is not None:
            out["memory"] = {k: getattr(self.memory, k) for k in MEMORY_KEYS if k != "planner"}
            if self.memory.planner != "live":
                out["memory"]["planner"] = self.memory.planner
        if self.energy is not None:
            out["energy"] = {
                p: {"mac_pj": e.mac_pj, "byte_pj": e.byte_pj} for p, e in self.energy.items()
            }
        if self.measurement is not None:
            m = self.measurement
            out["measurement"] = {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(m).items()
            }
        if self.calibrated_from:
            out["calibrated_from"] = self.calibrated_from
        out["sources"] = dict(self.sources)
        if self.table is not None:
            out["table"] = dict(sorted(self.table.items()))
        if self.coefficients is not None:
            out["coefficients"] = dict(self.coefficients)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"
