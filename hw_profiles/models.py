"""Latency models over a device profile: the analytic roofline and the measured lookup table.

Both answer the same questions; energy and microcontroller memory come from the layer list whatever the
latency model is, and are None where the profile has no figures for them.
"""

from __future__ import annotations

import abc
from functools import lru_cache

from compactnas.core.errors import ConfigError, DataError
from compactnas.hw_profiles import analysis, transfer
from compactnas.hw_profiles.measure import time_round_robin
from compactnas.hw_profiles.memory_plan import arena_bytes
from compactnas.hw_profiles.profile import DeviceProfile
from compactnas.hw_profiles.registry import load_profile
from compactnas.hw_profiles.units import Unit, build_unit, network_units
from compactnas.spaces.arch import ArchSpec

ON_MISSING = ("error", "measure")


@lru_cache(maxsize=4096)
def _units(spec: ArchSpec, input_shape: tuple[int, int, int]) -> tuple[Unit, ...]:
    return tuple(network_units(spec, input_shape))


def clear_caches() -> None:
    """Forget cached layer lists and unit lists (what a first prediction for a new candidate computes)."""
    _units.cache_clear()
    analysis.clear_caches()


def _shape(input_shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"input_shape must be (channels, height, width), got {tuple(input_shape)}"
        )
    return tuple(int(d) for d in input_shape)  # type: ignore[return-value]


class LatencyModel(abc.ABC):
    """``predict_ms``; ``energy_mj``, ``peak_sram_kb``, ``flash_kb`` and ``fits`` where the profile knows them."""

    def __init__(self, profile: DeviceProfile, *, num_classes: int = 10):
        self.profile = profile
        self.num_classes = num_classes

    @property
    def name(self) -> str:
        return self.profile.name

    def _layers(self, spec: ArchSpec | str, input_shape, num_classes: int | None):
        return analysis.network_layers(spec, _shape(input_shape), num_classes or self.num_classes)

    @abc.abstractmethod
    def predict_ms(
        self, spec: ArchSpec | str, input_shape, *, num_classes: int | None = None
    ) -> float:
        """Predicted milliseconds for one input of ``input_shape`` (batch 1)."""

    def energy_mj(
        self, spec: ArchSpec | str, input_shape, *, num_classes: int | None = None
    ) -> float | None:
        if self.profile.energy is None:
            return None
        return analysis.energy_mj(self.profile, self._layers(spec, input_shape, num_classes))

    def peak_sram_kb(
        self, spec: ArchSpec | str, input_shape, *, num_classes: int | None = None
    ) -> float | None:
        mem = self.profile.memory
        if mem is None:
            return None
        layers = self._layers(spec, input_shape, num_classes)
        return arena_bytes(layers, mem.planner) / 1024 + mem.runtime_sram_kb

    def flash_kb(
        self, spec: ArchSpec | str, input_shape, *, num_classes: int | None = None
    ) -> float | None:
        mem = self.profile.memory
        if mem is None:
            return None
        return (
            analysis.weight_bytes(self._layers(spec, input_shape, num_classes)) / 1024
            + mem.code_flash_kb
        )

    def fits(self, spec: ArchSpec | str, input_shape, num_classes: int = 10) -> str | None:
        """None if the candidate fits the device's memory, else one line saying what overflows."""
        mem = self.profile.memory
        if mem is None:
            return None
        sram = self.peak_sram_kb(spec, input_shape, num_classes=num_classes)
        assert sram is not None
        if sram > mem.sram_kb:
            return f"peak SRAM {sram:.0f} KB > {mem.sram_kb:.0f} KB"
        flash = self.flash_kb(spec, input_shape, num_classes=num_classes)
        assert flash is not None
        if flash > mem.flash_kb:
            return f"flash {flash:.0f} KB > {mem.flash_kb:.0f} KB"
        return None


class RooflineModel(LatencyModel):
    """Per layer: max(MACs / (peak throughput at its precision x op-kind efficiency), bytes / bandwidth)
    plus a per-layer overhead; plus one network overhead."""

    def __init__(self, profile: DeviceProfile, *, num_classes: int = 10):
        super().__init__(profile, num_classes=num_classes)
        self._throughput, self._efficiency = analysis.profile_vectors(profile)
        # A search asks about the same candidate repeatedly; the layer terms depend on this profile.
        self._terms: dict[tuple, analysis.LayerTerms] = {}

    def predict_ms(
        self, spec: ArchSpec | str, input_shape, *, num_classes: int | None = None
    ) -> float:
        key = (spec, tuple(input_shape), num_classes or self.num_classes)
        terms = self._terms.get(key)
        if terms is None:
            if len(self._terms) > 4096:
                self._terms.clear()
            layers = self._layers(spec, input_shape, num_classes)
            terms = self._terms[key] = analysis.layer_terms(self.profile, layers)
        return analysis.roofline_ms_terms(
            terms,
            throughput=self._throughput,
            efficiency=self._efficiency,
            bandwidth=self.profile.bandwidth,
            layer_overhead_ms=self.profile.layer_overhead_ms,
            network_overhead_ms=self.profile.network_overhead_ms,
            combine=self.profile.combine,
            dead_code=self.profile.dead_code,
        )


class TableModel(LatencyModel):
    """Sum of measured unit times + a per-unit and a per-network overhead fitted against whole networks.

    ``on_missing='measure'`` times a unit the table lacks on this host, with the table's backend and thread
    count, and keeps it for the model's lifetime (``measured`` lists them); ``'error'`` raises DataError.
    """

    def __init__(self, profile: DeviceProfile, *, num_classes: int = 10, on_missing: str = "error"):
        if profile.table is None or profile.measurement is None:
            raise ConfigError(f"profile '{profile.name}' has no measured table")
        if on_missing not in ON_MISSING:
            raise ConfigError(
                f"on_missing must be one of {', '.join(ON_MISSING)}, got '{on_missing}'"
            )
        super().__init__(profile, num_classes=num_classes)
        self.on_missing = on_missing
        self.table = dict(profile.table)
        self.measured: dict[str, float] = {}

    def units(self, spec: ArchSpec | str, input_shape) -> tuple[Unit, ...]:
        return _units(analysis.spec_of(spec), _shape(input_shape))

    def missing(self, spec: ArchSpec | str, input_shape) -> list[Unit]:
        return [u for u in self.units(spec, input_shape) if u.key not in self.table]

    def measure_missing(self, units: list[Unit]) -> None:
        m = self.profile.measurement
        assert m is not None
        todo = list({u.key: u for u in units if u.key not in self.table}.values())
        if not todo:
            return
        times = time_round_robin(
            [lambda u=u: (build_unit(u, num_classes=m.num_classes), u.shape) for u in todo],
            backend=m.backend,
            threads=m.threads,
            rounds=m.rounds,
            samples=m.samples,
            quantile=m.quantile,
        )
        for u, t in zip(todo, times, strict=True):
            self.table[u.key] = self.measured[u.key] = t

    def predict_ms(
        self, spec: ArchSpec | str, input_shape, *, num_classes: int | None = None
    ) -> float:
        units = self.units(spec, input_shape)
        total = 0.0
        for u in units:
            t = self.table.get(u.key)
            if t is None:
                if self.on_missing == "error":
                    raise DataError(
                        f"profile '{self.profile.name}' has no table entry for '{u.key}' (rebuild the table "
                        f"over this space and input shape, or use on_missing='measure')"
                    )
                self.measure_missing(list(units))
                t = self.table[u.key]
            total += t
        m = self.profile.measurement
        assert m is not None
        return total + len(units) * m.unit_overhead_ms + self.profile.network_overhead_ms


def create_latency_model(
    profile_or_name: DeviceProfile | str | LatencyModel,
    *,
    num_classes: int = 10,
    on_missing: str = "error",
) -> LatencyModel:
    """The latency model a profile asks for, by device name, profile path or DeviceProfile."""
    if isinstance(profile_or_name, LatencyModel):
        return profile_or_name
    profile = load_profile(profile_or_name)
    if profile.model == "table":
        return TableModel(profile, num_classes=num_classes, on_missing=on_missing)
    if profile.model == "features":
        return FeatureModel(profile, num_classes=num_classes)
    return RooflineModel(profile, num_classes=num_classes)


class FeatureModel(LatencyModel):
    """Milliseconds as a weighted sum of the network's features (hw_profiles/transfer.py): what
    ``profile calibrate --method transfer`` fits from a few measurements and other devices' tables."""

    def __init__(self, profile: DeviceProfile, *, num_classes: int = 10):
        super().__init__(profile, num_classes=num_classes)
        self._c = transfer.coefficient_vector(profile.coefficients or {})

    def predict_ms(
        self, spec: ArchSpec | str, input_shape, *, num_classes: int | None = None
    ) -> float:
        x = transfer.features(spec, _shape(input_shape), num_classes or self.num_classes)
        # A fitted constant may be negative: no network takes less than a microsecond.
        return max(float(x @ self._c), 1e-3)
