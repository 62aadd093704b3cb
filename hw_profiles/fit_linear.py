"""The few-parameter latency fit: a profile whose per-layer costs add up, fitted from 10-20 measurements.

Per layer, time = MACs / (peak x efficiency of its kind) + bytes / (bandwidth x efficiency of its kind)
+ a dispatch overhead; plus one overhead per network (``combine: "sum"``). Every term is linear in
one coefficient (1/efficiency per op kind, 1/bandwidth, the overheads), so the fit is non-negative least
squares on relative error (a 1 ms and a 50 ms network count alike), with a weak pull of every coefficient
towards the base profile's value (weighed by how much the coefficient moves the predictions), so that a coefficient the few measurements cannot see stays where the
base profile put it instead of going to zero or infinity. Dead-code elimination (operators whose
results never reach the output dropped) is taken as given, or, with ``dead_code=None``, fitted both ways
and the better fit kept (calibrate.py says when that is wise).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from scipy.optimize import nnls

from compactnas.hw_profiles import analysis
from compactnas.hw_profiles.profile import DeviceProfile
from compactnas.spaces.arch import ArchSpec

PRIOR_WEIGHT = 1e-2  # each coefficient's pull towards the base profile (chosen on NAS-Bench-201: see REPORT.md)
_FLOOR = 1e-3  # smallest coefficient kept, relative to the base's: no infinite rates


def _features(
    profile: DeviceProfile, terms: list[analysis.LayerTerms], dead_code: bool
) -> tuple[np.ndarray, list[str]]:
    """Columns: peak-rate milliseconds per compute kind, bandwidth milliseconds for compute layers'
    bytes and per memory kind, number of layers, 1. The compute layers' bytes keep the base bandwidth
    (see _solve); memory-bound kinds get their own efficiency relative to it."""
    tp, _ = analysis.profile_vectors(profile)
    bw = profile.bandwidth
    n_op = int(np.sum([k in analysis.OP_KINDS for k in analysis.KINDS]))
    rows = []
    for t in terms:
        keep = t.live if dead_code else np.ones_like(t.live)
        peak_ms = np.where(t.compute, t.macs / np.maximum(tp[t.precision], 1.0), 0.0) * 1e3
        mem_ms = t.bytes / bw * 1e3
        row = [np.sum(peak_ms[keep & (t.kind == k)]) for k in range(n_op)]
        row.append(np.sum(mem_ms[keep & t.compute]))
        row += [np.sum(mem_ms[keep & (t.kind == k)]) for k in range(n_op, len(analysis.KINDS))]
        row += [float(np.sum(keep)), 1.0]
        rows.append(row)
    names = [f"1/efficiency.{k}" for k in analysis.OP_KINDS] + ["1/bandwidth"]
    names += [f"1/efficiency.{k}" for k in analysis.KINDS[n_op:]]
    names += ["layer_overhead_ms", "network_overhead_ms"]
    return np.array(rows, dtype=float), names


def _base_coefficients(profile: DeviceProfile) -> np.ndarray:
    _, eff = analysis.profile_vectors(profile)
    n_op = len(analysis.OP_KINDS)
    return np.concatenate(
        [
            1 / eff[:n_op],
            [1.0],
            1 / eff[n_op:],
            [profile.layer_overhead_ms, profile.network_overhead_ms],
        ]
    )


def _solve(x: np.ndarray, y: np.ndarray, c0: np.ndarray, weight: float) -> np.ndarray:
    # What the measurements cannot tell apart stays at the base value: columns that are zero, or the
    # same for every network (they only shift the network overhead), and the compute layers' memory
    # term, which on a fixed-width space moves with the MACs.
    mean = x.mean(axis=0)
    spread = x.std(axis=0) / np.maximum(mean, 1e-300)
    used = (mean > 0) & (spread > 1e-6)
    used[-1] = True  # the network overhead
    used[len(analysis.OP_KINDS)] = False  # 1/bandwidth of compute layers
    offset = x[:, ~used] @ c0[~used]
    a = x[:, used] / y[:, None]
    b = 1.0 - offset / y
    # The prior: sqrt(w) * (c - c0) * (the column's mean share of a measurement), i.e. how much moving
    # the coefficient away from the base changes the predictions, relative to the measurements.
    share = a.mean(axis=0)
    prior = np.diag(np.sqrt(weight) * share)
    target = np.sqrt(weight) * share * c0[used]
    coef, _ = nnls(np.vstack([a, prior]), np.concatenate([b, target]), maxiter=50 * a.shape[1])
    out = c0.copy()
    out[used] = coef
    return out


def fit_linear(
    profile: DeviceProfile,
    specs: list[ArchSpec],
    y: np.ndarray,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    prior_weight: float = PRIOR_WEIGHT,
    dead_code: bool | None = None,
) -> tuple[DeviceProfile, dict[str, Any]]:
    """The fitted profile (``combine: "sum"``) and a report of coefficients before and after."""
    terms = [
        analysis.layer_terms(profile, analysis.network_layers(s, input_shape, num_classes))
        for s in specs
    ]
    c0 = _base_coefficients(profile)
    best = None
    for dc in (False, True) if dead_code is None else (dead_code,):
        x, names = _features(profile, terms, dc)
        c = _solve(x, y, c0, prior_weight)
        err = float(np.sqrt(np.mean(((x @ c) - y) ** 2 / y**2)))
        if best is None or err < best[0] - 1e-9:
            best = (err, dc, c, names)
    assert best is not None
    err, dc, c, names = best
    n_op = len(analysis.OP_KINDS)
    floor = np.maximum(c0, 1e-12) * _FLOOR
    c = np.where(np.arange(len(c)) < len(c) - 2, np.maximum(c, floor), c)
    eff = 1 / c[:n_op]
    bandwidth = profile.bandwidth / c[n_op]
    mem_eff = c[n_op] / c[n_op + 1 : -2]  # relative to the bandwidth
    # Efficiencies of compute kinds are shares of peak (<= 1): a faster device raises its peak instead.
    lift = max(1.0, float(eff.max()))
    throughput = {p: v * lift for p, v in profile.throughput.items()}
    efficiency = {k: float(e / lift) for k, e in zip(analysis.OP_KINDS, eff, strict=True)}
    efficiency.update({k: float(e) for k, e in zip(analysis.KINDS[n_op:], mem_eff, strict=True)})
    new = replace(
        profile,
        throughput=throughput,
        efficiency=efficiency,
        bandwidth=float(bandwidth),
        layer_overhead_ms=float(c[-2]),
        network_overhead_ms=float(c[-1]),
        combine="sum",
        dead_code=dc,
    )
    coeffs = {
        n: {"before": float(b), "after": float(a)} for n, b, a in zip(names, c0, c, strict=True)
    }
    return new, {
        "coefficients": coeffs,
        "method": "linear",
        "dead_code": dc,
        "rms_relative_error": err,
        "prior_weight": prior_weight,
        "throughput_scale": lift,
    }
