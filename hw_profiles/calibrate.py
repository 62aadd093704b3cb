"""Calibration: fit a profile's coefficients to measured latencies (CSV with columns ``arch,ms``).

Roofline profiles: op-kind efficiencies, the throughput of every precision the data exercises except the
highest (the reference, whose published peak anchors the scale: efficiency x throughput is all the data
can see), bandwidth and both overheads, by bounded nonlinear least squares (scipy.optimize.least_squares)
on relative error. Table profiles: the per-network and per-unit overheads, by linear least squares.
The result is a new profile version: name ``<base>-v<N>``, ``version`` N, ``calibrated_from`` recorded.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from compactnas.core.errors import CompactnasError, ConfigError, DataError
from compactnas.hw_profiles import analysis, transfer
from compactnas.hw_profiles.fit_linear import fit_linear
from compactnas.hw_profiles.models import create_latency_model
from compactnas.hw_profiles.profile import OP_KINDS, PRECISIONS, DeviceProfile
from compactnas.hw_profiles.registry import load_profile
from compactnas.hw_profiles.tables import fit_overheads
from compactnas.hw_profiles.units import network_units
from compactnas.spaces.arch import ArchSpec, parse_arch

DEAD_CODE = ("keep", "auto", "on", "off")
METHODS = ("linear", "roofline", "transfer")


def _fit_transfer(
    profile: DeviceProfile,
    specs: list[ArchSpec],
    y: np.ndarray,
    shape: tuple[int, int, int],
    num_classes: int,
) -> tuple[DeviceProfile, dict[str, Any]]:
    if len(y) < 4:
        raise DataError(f"--method transfer needs at least 4 measurements, got {len(y)}")
    x = transfer.feature_matrix(specs, shape, num_classes)
    sources = transfer.load_sources(cells=transfer.has_cells(x))
    cal = transfer.calibrate_transfer(x, y, sources)
    fitted = replace(
        profile, model="features", coefficients=transfer.named_coefficients(cal.coefficients)
    )
    coeffs = {
        f"coefficients.{k}": {"before": 0.0, "after": v} for k, v in fitted.coefficients.items()
    }
    return fitted, {
        "method": "transfer",
        "chosen": cal.method,
        "source_devices": cal.source,
        "leave_one_out": cal.scores,
        "coefficients": coeffs,
    }


def read_measurements(source: str | Path | pd.DataFrame) -> tuple[list[ArchSpec], np.ndarray, str]:
    """(specs, milliseconds, label) from a CSV path or a DataFrame with columns arch and ms."""
    if isinstance(source, pd.DataFrame):
        df, label = source, "<dataframe>"
    else:
        label = Path(source).name
        try:
            df = pd.read_csv(source)
        except FileNotFoundError:
            raise ConfigError(f"no measurements file '{source}'") from None
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(
                f"cannot read measurements '{label}': {str(e).splitlines()[0]}"
            ) from None
    missing = [c for c in ("arch", "ms") if c not in df.columns]
    if missing:
        raise DataError(
            f"measurements '{label}' lack column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))})"
        )
    if len(df) < 2:
        raise DataError(f"measurements '{label}' need at least 2 rows, got {len(df)}")
    specs, ms = [], []
    for i, (arch, t) in enumerate(zip(df["arch"], df["ms"], strict=True), start=2):
        try:
            specs.append(parse_arch(str(arch)))
        except CompactnasError as e:
            raise DataError(f"measurements '{label}' line {i}: {e}") from None
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = float("nan")
        if not (math.isfinite(t) and t > 0):
            raise DataError(
                f"measurements '{label}' line {i}: ms must be a positive number, got {df['ms'].iloc[i - 2]!r}"
            )
        ms.append(t)
    return specs, np.array(ms), label


def _mape(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - y) / y) * 100)


def _next_version(profile: DeviceProfile) -> tuple[str, int]:
    base = re.sub(r"-v\d+$", "", profile.name)
    version = profile.version + 1
    return f"{base}-v{version}", version


def _fit_roofline(
    profile: DeviceProfile, specs: list[ArchSpec], y: np.ndarray, input_shape, num_classes: int
) -> tuple[DeviceProfile, dict[str, Any]]:
    terms = [
        analysis.layer_terms(profile, analysis.network_layers(s, input_shape, num_classes))
        for s in specs
    ]
    net = np.concatenate([np.full(len(t.macs), i) for i, t in enumerate(terms)])
    macs = np.concatenate([t.macs for t in terms])
    nbytes = np.concatenate([t.bytes for t in terms])
    kind = np.concatenate([t.kind for t in terms])
    prec = np.concatenate([t.precision for t in terms])
    keep = (
        np.concatenate([t.live for t in terms]) if profile.dead_code else np.ones(len(kind), bool)
    )
    n_layers = np.bincount(net[keep], minlength=len(specs)).astype(float)
    has_macs = kind < len(OP_KINDS)
    op = np.where(has_macs, kind, -1)

    ops = [k for i, k in enumerate(OP_KINDS) if np.any(op == i)]
    used = sorted({int(p) for p in prec[has_macs]})
    ref = max(used) if used else PRECISIONS.index("fp32")
    free_prec = [PRECISIONS[p] for p in used if p != ref]
    throughput0, efficiency0 = analysis.profile_vectors(profile)
    # Unknowns, all as logs so they stay positive: efficiencies (<= 1), throughputs, bandwidth, overheads.
    names = (
        [f"efficiency.{k}" for k in ops] + [f"throughput.{p}" for p in free_prec] + ["bandwidth"]
    )
    names += ["layer_overhead_ms", "network_overhead_ms"]
    x0 = [math.log(efficiency0[OP_KINDS.index(k)]) for k in ops]
    x0 += [math.log(throughput0[PRECISIONS.index(p)]) for p in free_prec] + [
        math.log(profile.bandwidth)
    ]
    # Overheads may be zero; they are fitted in linear space with a lower bound of 0.
    x0 += [profile.layer_overhead_ms, profile.network_overhead_ms]
    # Log unknowns stay within e^30 of their start: a rate no layer depends on (bandwidth when every
    # layer is compute-bound) is otherwise free to drift until exp() overflows.
    n_log = len(ops) + len(free_prec) + 1
    lo = [v - 30.0 for v in x0[:n_log]] + [0.0, 0.0]
    hi = [0.0] * len(ops) + [v + 30.0 for v in x0[len(ops) : n_log]] + [np.inf, np.inf]
    x0 = np.clip(np.array(x0, dtype=float), np.array(lo) + 1e-9, np.array(hi) - 1e-9)

    def unpack(x: np.ndarray):
        eff = efficiency0.copy()
        tp = throughput0.copy()
        for i, k in enumerate(ops):
            eff[OP_KINDS.index(k)] = math.exp(x[i])
        for j, p in enumerate(free_prec):
            tp[PRECISIONS.index(p)] = math.exp(x[len(ops) + j])
        bw = math.exp(x[len(ops) + len(free_prec)])
        return eff, tp, bw, x[-2], x[-1]

    def predict(x: np.ndarray) -> np.ndarray:
        eff, tp, bw, o_layer, o_net = unpack(x)
        rate = np.where(has_macs, tp[prec] * eff[kind], 1.0)
        compute = np.where(has_macs, macs / rate, 0.0)
        memory = nbytes / (bw * np.where(has_macs, 1.0, eff[kind]))
        both = compute + memory if profile.combine == "sum" else np.maximum(compute, memory)
        per_layer = np.where(keep, both * 1e3, 0.0)
        return (
            np.bincount(net, weights=per_layer, minlength=len(specs)) + n_layers * o_layer + o_net
        )

    fit = least_squares(
        lambda x: (predict(x) - y) / y, x0, bounds=(lo, hi), x_scale="jac", max_nfev=2000
    )
    eff, tp, bw, o_layer, o_net = unpack(fit.x)
    new = replace(
        profile,
        efficiency={**profile.efficiency, **{k: float(eff[OP_KINDS.index(k)]) for k in ops}},
        throughput={**profile.throughput, **{p: float(tp[PRECISIONS.index(p)]) for p in free_prec}},
        bandwidth=float(bw),
        layer_overhead_ms=float(o_layer),
        network_overhead_ms=float(o_net),
    )
    before = {**{f"efficiency.{k}": profile.efficiency.get(k, 1.0) for k in ops},
              **{f"throughput.{p}": profile.throughput.get(p, 0.0) for p in free_prec},
              "bandwidth": profile.bandwidth, "layer_overhead_ms": profile.layer_overhead_ms,
              "network_overhead_ms": profile.network_overhead_ms}  # fmt: skip
    after = {**{f"efficiency.{k}": new.efficiency[k] for k in ops},
             **{f"throughput.{p}": new.throughput[p] for p in free_prec},
             "bandwidth": new.bandwidth, "layer_overhead_ms": new.layer_overhead_ms,
             "network_overhead_ms": new.network_overhead_ms}  # fmt: skip
    coeffs = {k: {"before": float(before[k]), "after": float(after[k])} for k in names}
    return new, {
        "coefficients": coeffs,
        "reference_precision": PRECISIONS[ref],
        "converged": bool(fit.success),
    }


def _fit_table(
    profile: DeviceProfile, specs: list[ArchSpec], y: np.ndarray, input_shape
) -> tuple[DeviceProfile, dict[str, Any]]:
    assert profile.table is not None and profile.measurement is not None
    sums, counts = [], []
    for s in specs:
        units = network_units(s, input_shape)
        for u in units:
            if u.key not in profile.table:
                raise DataError(
                    f"profile '{profile.name}' has no table entry for '{u.key}'; rebuild the table first"
                )
        sums.append(sum(profile.table[u.key] for u in units))
        counts.append(len(units))
    net, unit = fit_overheads(np.array(sums), np.array(counts, dtype=float), y)
    new = replace(
        profile,
        network_overhead_ms=net,
        measurement=replace(profile.measurement, unit_overhead_ms=unit),
    )
    coeffs = {
        "network_overhead_ms": {"before": profile.network_overhead_ms, "after": net},
        "measurement.unit_overhead_ms": {
            "before": profile.measurement.unit_overhead_ms,
            "after": unit,
        },
    }
    return new, {"coefficients": coeffs}


def calibrate(
    profile: DeviceProfile | str,
    measurements_csv: str | Path | pd.DataFrame,
    *,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    num_classes: int = 10,
    method: str = "linear",
    dead_code: str = "keep",
) -> tuple[DeviceProfile, dict[str, Any]]:
    """A new profile version fitted to the measurements, and a report with MAPE before and after.

    ``method`` for an analytic profile: ``linear`` (hw_profiles/fit_linear.py: per-kind costs that add
    up, a handful of coefficients, regularised towards the base; what 10-20 measurements support) or
    ``roofline`` (the base's own max(compute, memory) form, every coefficient free; needs more data), or
    ``transfer`` (hw_profiles/transfer.py: the device described from 23 measured devices' tables and
    the measurements, the candidate that predicts the measurements best in leave-one-out kept; a
    ``features`` profile that keeps the base's memory, energy and runtime). Left out of the tables it
    was built from, ``transfer`` ranks NAS-Bench-201 cells on each of the 23 devices at least as well as
    FLOPs from 20 measurements (benchmarks/device_transfer.py).

    ``dead_code``: whether the runtime drops operators whose results never reach the output. ``keep``
    (default) takes the base profile's statement, a fact about its runtime; ``on``/``off`` set it;
    ``auto`` lets the linear fit keep whichever fits the measurements better, for a base that only
    stands in for another device. On NAS-Bench-201 (benchmarks/device_fidelity.py) ``auto`` on 10-20
    measurements of a Raspberry Pi 4 picked the wrong answer for one seed in four, and its ranking
    fell from 0.96 to 0.86-0.90 when it did.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method '{method}' (use {', '.join(METHODS)})")
    if dead_code not in DEAD_CODE:
        raise ConfigError(f"unknown dead_code '{dead_code}' (use {', '.join(DEAD_CODE)})")
    profile = load_profile(profile)
    if dead_code in ("on", "off"):
        profile = replace(profile, dead_code=dead_code == "on")
    specs, y, label = read_measurements(measurements_csv)
    shape = tuple(int(d) for d in input_shape)
    old_model = create_latency_model(profile, num_classes=num_classes)
    before = np.array([old_model.predict_ms(s, shape, num_classes=num_classes) for s in specs])
    if method == "transfer":
        fitted, details = _fit_transfer(profile, specs, y, shape, num_classes)
    elif profile.model == "table":
        fitted, details = _fit_table(profile, specs, y, shape)
    elif method == "linear":
        dc = None if dead_code == "auto" else profile.dead_code
        fitted, details = fit_linear(profile, specs, y, shape, num_classes, dead_code=dc)
    else:
        fitted, details = _fit_roofline(profile, specs, y, shape, num_classes)
    name, version = _next_version(profile)
    new_model = create_latency_model(fitted, num_classes=num_classes)
    after = np.array([new_model.predict_ms(s, shape, num_classes=num_classes) for s in specs])
    mape_before, mape_after = _mape(before, y), _mape(after, y)
    note = (
        f"calibrated: least-squares fit to {len(y)} measurements in '{label}' at input "
        f"{'x'.join(map(str, shape))} (MAPE {mape_before:.1f}% -> {mape_after:.1f}%)"
    )
    sources = dict(fitted.sources)
    for field in details["coefficients"]:
        if not field.startswith("measurement."):
            sources[field.removeprefix("1/")] = note
    if details.get("method") == "linear":
        for field in ("efficiency", "throughput", "bandwidth", "combine", "dead_code"):
            sources[field] = note
    if details.get("method") == "transfer":
        sources = {k: v for k, v in sources.items() if not k.startswith("coefficients.")}
        sources["coefficients"] = (
            f"{note}; candidate '{details['chosen']}' chosen by leave-one-out, source devices: "
            f"{details['source_devices'] or 'none'} (hw_profiles/sources/nb201_devices.json: NAS-Bench-201 "
            "latency tables of HW-NAS-Bench and BRP-NAS)"
        )
    fitted = replace(
        fitted,
        name=name,
        version=version,
        sources=sources,
        calibrated_from=f"{profile.name} (version {profile.version}) with {len(y)} measurements from '{label}'",
    )
    report = {
        "profile": name,
        "calibrated_from": profile.name,
        "version": version,
        "n": len(y),
        "mape_before": mape_before,
        "mape_after": mape_after,
        **details,
    }
    return fitted, report
