"""Validation: a profile's predictions against end-to-end latency measured on this host.

Held-out architectures come from Optuna's RandomSampler with ``seed + 1000`` (table building draws with
``seed`` and fits its overheads on ``seed + 1``), and any network the table's overhead fit used is skipped.
MACs are the baseline predictor, turned into milliseconds by one scale factor fitted by least squares on
the same measurements (which flatters MACs: their fit sees the answers).

End-to-end latency is measured like the table's units (hw_profiles/measure.py: short samples,
round-robin over the networks, 10th percentile), not with evaluators/latency.py's block median, which a
neighbour's jobs on this 2-core host moved by up to 2x; the same estimator on both sides keeps the
comparison fair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from compactnas.core.errors import ConfigError
from compactnas.core.host import host_description
from compactnas.hw_profiles.calibrate import read_measurements
from compactnas.hw_profiles.measure import Progress
from compactnas.hw_profiles.models import LatencyModel, TableModel, create_latency_model
from compactnas.hw_profiles.profile import DeviceProfile
from compactnas.hw_profiles.registry import load_profile
from compactnas.hw_profiles.tables import measure_networks
from compactnas.spaces.arch import as_spec, format_arch
from compactnas.spaces.layers import count_macs
from compactnas.spaces.registry import create_space
from compactnas.spaces.sampling import sample_archs

VALIDATION_SEED_OFFSET = 1000


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    rel = (predicted - measured) / measured
    return {
        "spearman": float(stats.spearmanr(predicted, measured).statistic),
        "kendall": float(stats.kendalltau(predicted, measured).statistic),
        "mape": float(np.mean(np.abs(rel)) * 100),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
    }


def validate(
    profile_or_name: DeviceProfile | str | LatencyModel,
    *,
    space: str = "mobile",
    archs: int = 50,
    seed: int = 0,
    image_size: int = 8,
    in_chans: int = 1,
    num_classes: int = 10,
    compress: bool = False,
    rounds: int = 7,
    on_missing: str = "measure",
    progress: Progress | None = None,
    measure: Callable[..., list[float]] = measure_networks,
) -> dict[str, Any]:
    """Spearman, Kendall, MAPE (%) and the share within +/-10%, for the profile and for scaled MACs."""
    if archs < 3:
        raise ConfigError("validation needs at least 3 architectures (--archs)")
    if isinstance(profile_or_name, LatencyModel):
        model = profile_or_name
    else:
        model = create_latency_model(
            load_profile(profile_or_name), num_classes=num_classes, on_missing=on_missing
        )
    profile = model.profile
    m = profile.measurement
    backend, threads = (m.backend, m.threads) if m is not None else ("torch", 1)
    shape = (in_chans, image_size, image_size)
    space_obj = create_space(space, image_size=image_size, compress=compress)
    skip = set(m.fit_archs) if m is not None else set()
    specs = [s for s in sample_archs(space_obj, archs + len(skip), seed=seed + VALIDATION_SEED_OFFSET)
             if format_arch(s) not in skip][:archs]  # fmt: skip

    if isinstance(model, TableModel) and model.on_missing == "measure":
        # Measured up front, together, rather than one by one inside predict_ms.
        model.measure_missing([u for s in specs for u in model.missing(s, shape)])
    predicted = np.array([model.predict_ms(s, shape, num_classes=num_classes) for s in specs])
    measured = np.array(
        measure(specs, shape, num_classes=num_classes, backend=backend, threads=threads, rounds=rounds,
                progress=progress)
    )  # fmt: skip
    macs = np.array([count_macs(s, shape, num_classes) for s in specs], dtype=float)
    scale = float(macs @ measured / (macs @ macs))
    out: dict[str, Any] = {
        "profile": profile.name,
        "n": len(specs),
        "space": space + (" (compressed)" if compress else ""),
        "input_shape": list(shape),
        "seed": seed + VALIDATION_SEED_OFFSET,
        "host": host_description(),
        "backend": backend,
        "threads": threads,
        "model": scores(predicted, measured),
        "macs": {
            **scores(macs * scale, measured),
            "scale_ms_per_mmac": scale * 1e6,
            "note": "MACs x one scale factor fitted by least squares on these same measurements",
        },
        "measured_on_demand": len(model.measured) if isinstance(model, TableModel) else 0,
        "rows": [
            {
                "arch": format_arch(s),
                "measured_ms": float(y),
                "predicted_ms": float(p),
                "macs": int(c),
            }
            for s, y, p, c in zip(specs, measured, predicted, macs, strict=True)
        ],
    }
    if m is None:
        out["note"] = (
            f"'{profile.name}' models another device; measurements here are of this host, so only the "
            "ranking is meaningful"
        )
    return out


def validate_measurements(
    profile_or_name: DeviceProfile | str | LatencyModel,
    measurements: Any,
    *,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    num_classes: int = 10,
) -> dict[str, Any]:
    """Scores of a profile's predictions against measurements a user brings (CSV ``arch,ms``), beside
    MACs turned into milliseconds by one least-squares scale fitted on the same rows."""
    model = (
        profile_or_name
        if isinstance(profile_or_name, LatencyModel)
        else create_latency_model(load_profile(profile_or_name), num_classes=num_classes)
    )
    specs, measured, label = read_measurements(measurements)
    if len(specs) < 3:
        raise ConfigError(f"validation needs at least 3 measurements, '{label}' has {len(specs)}")
    shape = tuple(int(d) for d in input_shape)
    predicted = np.array([model.predict_ms(s, shape, num_classes=num_classes) for s in specs])
    macs = np.array([count_macs(s, shape, num_classes) for s in specs], dtype=float)
    scale = float(macs @ measured / (macs @ macs))
    return {
        "profile": model.profile.name,
        "measurements": label,
        "n": len(specs),
        "input_shape": list(shape),
        "num_classes": num_classes,
        "model": scores(predicted, measured),
        "macs": {
            **scores(macs * scale, measured),
            "scale_ms_per_mmac": scale * 1e6,
            "note": "MACs x one scale factor fitted by least squares on these same measurements",
        },
        "rows": [
            {
                "arch": format_arch(s),
                "measured_ms": float(y),
                "predicted_ms": float(p),
                "macs": int(c),
            }
            for s, y, p, c in zip(specs, measured, predicted, macs, strict=True)
        ],
    }


def predict(
    profile_or_name: DeviceProfile | str | LatencyModel,
    arch: Any,
    *,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    num_classes: int = 10,
) -> dict[str, Any]:
    """One architecture's predicted latency, and energy, peak SRAM and flash where the profile knows them."""
    model = (
        profile_or_name
        if isinstance(profile_or_name, LatencyModel)
        else create_latency_model(load_profile(profile_or_name), num_classes=num_classes)
    )
    spec = as_spec(arch)
    shape = tuple(int(d) for d in input_shape)
    out: dict[str, Any] = {
        "profile": model.profile.name,
        "arch": format_arch(spec),
        "input_shape": list(shape),
        "latency_ms": model.predict_ms(spec, shape, num_classes=num_classes),
    }
    for key in ("energy_mj", "peak_sram_kb", "flash_kb"):
        value = getattr(model, key)(spec, shape, num_classes=num_classes)
        if value is not None:
            out[key] = float(value)
    return out
