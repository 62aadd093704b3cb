"""Reading, checking and writing device profiles: every field checked, each error a one-line
ConfigError naming the field (the format itself is in profile.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from compactnas.core.errors import ConfigError
from compactnas.hw_profiles.profile import (
    BACKENDS,
    COMBINES,
    KINDS,
    MEMORY_KEYS,
    MEMORY_KINDS,
    MODELS,
    OP_KINDS,
    PLANNERS,
    PRECISIONS,
    TOP_KEYS,
    DeviceProfile,
    EnergyCost,
    Measurement,
    MemoryLimits,
)
from compactnas.hw_profiles.runtimes import RUNTIMES
from compactnas.hw_profiles.transfer import FEATURES


class _Checker:
    """Collects nothing: the first bad field raises, naming the field and the profile it came from."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, path: str, msg: str) -> NoReturn:
        raise ConfigError(f"profile '{self.label}': field '{path}' {msg}")

    def mapping(self, doc: Mapping, path: str) -> Mapping:
        if not isinstance(doc, Mapping):
            self.fail(path, "must be a JSON object")
        return doc

    def section(self, doc: Mapping, key: str, hint: str = "") -> Mapping:
        if key not in doc:
            self.fail(key, f"is missing{hint}")
        return self.mapping(doc[key], key)

    def text(
        self, doc: Mapping, key: str, path: str, *, required: bool = True, default: str = ""
    ) -> str:
        if key not in doc:
            if required:
                self.fail(path, "is missing")
            return default
        if not isinstance(doc[key], str) or (required and not doc[key].strip()):
            self.fail(path, "must be a non-empty string")
        return doc[key]

    def number(
        self, doc: Mapping, key: str, path: str, *, required: bool = True, default: float = 0.0,
        positive: bool = False, at_most: float | None = None,
    ) -> float:  # fmt: skip
        if key not in doc:
            if required:
                self.fail(path, "is missing")
            return default
        v = doc[key]
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > 0 if positive else v >= 0) and (at_most is None or v <= at_most)
        if not ok:
            limit = f" <= {at_most}" if at_most is not None else ""
            self.fail(path, f"must be a {'positive' if positive else 'non-negative'} number{limit}")
        return float(v)

    def signed(self, doc: Mapping, key: str, path: str) -> float:
        v = doc.get(key, 0.0)
        if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
            self.fail(path, "must be a finite number")
        return float(v)

    def integer(
        self, doc: Mapping, key: str, path: str, *, required: bool = True, minimum: int = 0
    ) -> int:
        if key not in doc and not required:
            return minimum
        v = doc.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            self.fail(path, f"must be a whole number >= {minimum}")
        return int(v)

    def choice(
        self,
        doc: Mapping,
        key: str,
        path: str,
        choices: tuple[str, ...],
        default: str | None = None,
    ) -> str:
        if key not in doc and default is not None:
            return default
        v = doc.get(key)
        if v not in choices:
            self.fail(path, f"must be one of {', '.join(choices)} (got {v!r})")
        return v

    def unknown(self, doc: Mapping, allowed: set[str] | tuple[str, ...], prefix: str) -> None:
        for k in doc:
            if k not in allowed:
                self.fail(
                    f"{prefix}{k}", f"is not a known field (known: {', '.join(sorted(allowed))})"
                )


def _numeric_paths(doc: Any, prefix: str = "") -> list[str]:
    if isinstance(doc, Mapping):
        return [
            p
            for k, v in doc.items()
            for p in _numeric_paths(v, f"{prefix}.{k}" if prefix else str(k))
        ]
    if isinstance(doc, int | float) and not isinstance(doc, bool):
        return [prefix]
    return []


def profile_from_dict(doc: Any, *, label: str) -> DeviceProfile:
    """Check a parsed profile document and build the DeviceProfile; the first bad field raises ConfigError."""
    c = _Checker(label)
    c.mapping(doc, "<root>")
    c.unknown(doc, TOP_KEYS, "")
    name = c.text(doc, "name", "name")
    kind = c.choice(doc, "kind", "kind", KINDS)
    model = c.choice(doc, "model", "model", MODELS, default="roofline")
    version = c.integer(doc, "version", "version", required=False, minimum=1)

    throughput: dict[str, float] = {}
    if model == "roofline" or "throughput" in doc:
        tp = c.section(doc, "throughput")
        c.unknown(tp, PRECISIONS, "throughput.")
        for p in PRECISIONS:
            if p in tp:
                throughput[p] = c.number(tp, p, f"throughput.{p}", positive=True)
        if model == "roofline" and "fp32" not in throughput:
            # Every layer must have somewhere to fall back to; a device without an FPU states its emulated rate.
            c.fail(
                "throughput.fp32", "is missing (give the emulated rate if the device has no FPU)"
            )
    bandwidth = 0.0
    if model == "roofline" or "bandwidth" in doc:
        bandwidth = c.number(doc, "bandwidth", "bandwidth", positive=True)

    efficiency: dict[str, float] = {}
    if "efficiency" in doc:
        eff = c.mapping(doc["efficiency"], "efficiency")
        c.unknown(eff, OP_KINDS + MEMORY_KINDS, "efficiency.")
        for k in OP_KINDS:
            if k in eff:
                efficiency[k] = c.number(eff, k, f"efficiency.{k}", positive=True, at_most=1.0)
        for k in MEMORY_KINDS:
            if k in eff:
                efficiency[k] = c.number(eff, k, f"efficiency.{k}", positive=True)
    dead_code = doc.get("dead_code", False)
    if not isinstance(dead_code, bool):
        c.fail("dead_code", "must be true or false")

    memory = None
    if "memory" in doc:
        mem = c.mapping(doc["memory"], "memory")
        c.unknown(mem, MEMORY_KEYS, "memory.")
        memory = MemoryLimits(
            sram_kb=c.number(mem, "sram_kb", "memory.sram_kb", positive=True),
            flash_kb=c.number(mem, "flash_kb", "memory.flash_kb", positive=True),
            runtime_sram_kb=c.number(
                mem, "runtime_sram_kb", "memory.runtime_sram_kb", required=False
            ),
            code_flash_kb=c.number(mem, "code_flash_kb", "memory.code_flash_kb", required=False),
            planner=c.text(mem, "planner", "memory.planner", required=False, default="live"),
        )
        if memory.planner not in PLANNERS:
            c.fail(
                "memory.planner", f"must be one of {', '.join(PLANNERS)}, got '{memory.planner}'"
            )

    energy = None
    if "energy" in doc:
        en = c.mapping(doc["energy"], "energy")
        c.unknown(en, PRECISIONS, "energy.")
        energy = {}
        for p, v in en.items():
            c.mapping(v, f"energy.{p}")
            c.unknown(v, ("mac_pj", "byte_pj"), f"energy.{p}.")
            energy[p] = EnergyCost(
                mac_pj=c.number(v, "mac_pj", f"energy.{p}.mac_pj", positive=True),
                byte_pj=c.number(v, "byte_pj", f"energy.{p}.byte_pj"),
            )
        if "fp32" not in energy:
            c.fail(
                "energy.fp32",
                "is missing (energy figures need at least the fp32 costs to fall back to)",
            )

    table = None
    measurement = None
    if model == "table":
        tb = c.section(doc, "table")
        table = {}
        for k in tb:
            if not isinstance(k, str) or "@" not in k:
                c.fail(f"table.{k}", "must be keyed 'SEGMENT@CxHxW'")
            table[k] = c.number(tb, k, f"table.{k}", positive=True)
        ms = c.section(doc, "measurement", hint=" (a table needs to say how it was measured)")
        allowed = set(Measurement.__dataclass_fields__)
        c.unknown(ms, allowed, "measurement.")
        fit_archs = ms.get("fit_archs", [])
        if not isinstance(fit_archs, list) or not all(isinstance(a, str) for a in fit_archs):
            c.fail("measurement.fit_archs", "must be a list of architecture strings")
        measurement = Measurement(
            backend=c.choice(ms, "backend", "measurement.backend", BACKENDS),
            threads=c.integer(ms, "threads", "measurement.threads", minimum=1),
            host=c.text(ms, "host", "measurement.host"),
            torch=c.text(ms, "torch", "measurement.torch"),
            onnxruntime=c.text(ms, "onnxruntime", "measurement.onnxruntime", required=False),
            space=c.text(ms, "space", "measurement.space"),
            image_size=c.integer(ms, "image_size", "measurement.image_size", minimum=1),
            in_chans=c.integer(ms, "in_chans", "measurement.in_chans", minimum=1),
            num_classes=c.integer(ms, "num_classes", "measurement.num_classes", minimum=1),
            enumeration=c.text(ms, "enumeration", "measurement.enumeration"),
            rounds=c.integer(ms, "rounds", "measurement.rounds", required=False, minimum=1),
            samples=c.integer(ms, "samples", "measurement.samples", required=False, minimum=1),
            quantile=c.number(
                ms, "quantile", "measurement.quantile", required=False, default=0.1, at_most=1.0
            ),
            unit_overhead_ms=c.signed(ms, "unit_overhead_ms", "measurement.unit_overhead_ms"),
            fit_seed=c.integer(ms, "fit_seed", "measurement.fit_seed", required=False, minimum=0),
            fit_archs=tuple(fit_archs),
        )

    sources = c.section(doc, "sources")
    for k, v in sources.items():
        if not isinstance(v, str) or not v.strip():
            c.fail(f"sources.{k}", "must be a non-empty citation string")
    # Every number needs a citation, its own or a parent's; the table's entries are covered by 'table'.
    cited = {k for k in doc if k not in ("sources", "table", "measurement", "version")}
    for path in _numeric_paths({k: doc[k] for k in cited}):
        parts = path.split(".")
        if not any(".".join(parts[:i]) in sources for i in range(1, len(parts) + 1)):
            c.fail(path, f"has no citation in 'sources' (add sources['{path}'])")
    if model == "table" and "table" not in sources:
        c.fail("table", "has no citation in 'sources' (say what was measured and how)")
    coefficients = None
    if model == "features":
        co = c.section(doc, "coefficients", hint=" (a features model needs its coefficients)")
        coefficients = {}
        for k in co:
            if k not in FEATURES:
                c.fail(f"coefficients.{k}", f"unknown feature (known: {', '.join(FEATURES)})")
            coefficients[k] = c.signed(co, k, f"coefficients.{k}")

    runtime = c.text(doc, "runtime", "runtime", required=False) or ""
    if runtime and runtime not in RUNTIMES:
        c.fail("runtime", f"unknown runtime '{runtime}' (known: {', '.join(RUNTIMES)})")
    return DeviceProfile(
        name=name,
        kind=kind,
        model=model,
        version=version,
        description=c.text(doc, "description", "description", required=False),
        runtime=runtime,
        throughput=throughput,
        bandwidth=bandwidth,
        layer_overhead_ms=c.number(
            doc, "layer_overhead_ms", "layer_overhead_ms", required=model == "roofline"
        ),
        network_overhead_ms=c.signed(doc, "network_overhead_ms", "network_overhead_ms"),
        efficiency=efficiency,
        memory=memory,
        energy=energy,
        sources=dict(sources),
        table=table,
        measurement=measurement,
        calibrated_from=c.text(doc, "calibrated_from", "calibrated_from", required=False) or None,
        combine=c.choice(doc, "combine", "combine", COMBINES, default="max"),
        dead_code=dead_code,
        coefficients=coefficients,
    )


def profile_from_json(text: str, *, label: str) -> DeviceProfile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"profile '{label}': not valid JSON ({e.msg} at line {e.lineno})"
        ) from None
    return profile_from_dict(doc, label=label)


def read_profile(path: str | Path) -> DeviceProfile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read profile '{p}': {e.strerror or e}") from None
    return profile_from_json(text, label=p.name)


def write_profile(profile: DeviceProfile, path: str | Path) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(profile.to_json(), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write profile '{p}': {e.strerror or e}") from None
    return p
