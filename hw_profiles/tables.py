"""Building a measured lookup-table profile for this host over a search space.

Enumeration is by sampling: the space is a black-box define-by-run function, so its units are collected
by drawing architectures with Optuna's RandomSampler until ``patience`` draws in a row add no new unit key
(or ``max_samples`` is reached). Units a later query needs but sampling missed are reported by key, or
measured on demand (TableModel ``on_missing='measure'``).

Timed separately, units miss or double count per-call costs of the whole network (the network's own
Python calls and Sequential containers under torch; one session call per unit instead of one per network
under onnxruntime). A per-network and a per-unit overhead are fitted by least squares on a few whole
networks measured end to end, so the table's sum predicts what a whole network measures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from compactnas.core.errors import ConfigError
from compactnas.core.host import host_description
from compactnas.hw_profiles.measure import Progress, time_round_robin
from compactnas.hw_profiles.profile import BACKENDS, DeviceProfile, Measurement
from compactnas.hw_profiles.timing import onnxruntime_version
from compactnas.hw_profiles.units import Unit, build_network, build_unit, network_units
from compactnas.spaces.arch import ArchSpec, format_arch
from compactnas.spaces.registry import SearchSpace, create_space
from compactnas.spaces.sampling import random_specs, sample_archs


def collect_units(
    space: SearchSpace,
    input_shape: tuple[int, int, int],
    *,
    seed: int = 0,
    patience: int = 3000,
    max_samples: int = 50_000,
    max_archs: int | None = None,
) -> tuple[dict[str, Unit], int]:
    """Distinct units over random architectures of the space, and how many architectures were drawn."""
    stream = random_specs(space, seed=seed)
    units: dict[str, Unit] = {}
    quiet = draws = 0
    limit = max_samples if max_archs is None else max_archs
    while draws < limit and (max_archs is not None or quiet < patience):
        spec = next(stream)
        draws += 1
        new = False
        for u in network_units(spec, input_shape):
            if u.key not in units:
                units[u.key] = u
                new = True
        quiet = 0 if new else quiet + 1
    return units, draws


def fit_overheads(
    sums: np.ndarray, counts: np.ndarray, measured: np.ndarray
) -> tuple[float, float]:
    """(per-network, per-unit) overhead so that sum + count * unit + network matches ``measured``.

    Least squares on relative error, as validation judges relative error; a single network (or networks
    that all have the same unit count) fits the per-network overhead alone.
    """
    resid = measured - sums
    w = 1.0 / measured
    if len(set(counts.tolist())) < 2:
        return float(np.sum(resid * w * w) / np.sum(w * w)), 0.0
    a = np.c_[np.ones_like(sums), counts] * w[:, None]
    (net, unit), *_ = np.linalg.lstsq(a, resid * w, rcond=None)
    return float(net), float(unit)


def measure_networks(
    specs: list[ArchSpec],
    input_shape: tuple[int, int, int],
    *,
    num_classes: int = 10,
    backend: str = "onnxruntime",
    threads: int = 1,
    rounds: int = 7,
    samples: int = 10,
    progress: Progress | None = None,
) -> list[float]:
    """End-to-end milliseconds of whole networks on this host, round-robin (see measure.py)."""
    makers: list[Callable[[], Any]] = [
        lambda s=s: (build_network(s, input_shape, num_classes=num_classes), input_shape)
        for s in specs
    ]
    return time_round_robin(
        makers,
        backend=backend,
        threads=threads,
        rounds=rounds,
        samples=samples,
        progress=progress,
    )


def build_table_profile(
    name: str,
    *,
    space: str | SearchSpace = "mobile",
    image_size: int = 8,
    in_chans: int = 1,
    num_classes: int = 10,
    threads: int = 1,
    backend: str = "onnxruntime",
    seed: int = 0,
    patience: int = 3000,
    max_archs: int | None = None,
    fit_archs: int = 12,
    rounds: int = 5,
    samples: int = 10,
    progress: Callable[[str, int, int], None] | None = None,
) -> DeviceProfile:
    """Time every unit the space produces on this host and store the table as a profile.

    ``max_archs`` caps the sampling (a quicker, partial table); otherwise sampling runs until ``patience``
    draws bring no new unit. ``fit_archs`` whole networks (seed ``seed``) fit the overheads.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}' (known: {', '.join(BACKENDS)})")
    if threads < 1:
        raise ConfigError("threads must be at least 1")
    space_obj = (
        create_space(space, image_size=image_size)
        if isinstance(space, str)
        else create_space(space)
    )
    space_name = (
        space if isinstance(space, str) else getattr(space_obj, "name", type(space_obj).__name__)
    )
    shape = (in_chans, image_size, image_size)
    units, draws = collect_units(
        space_obj, shape, seed=seed, patience=patience, max_archs=max_archs
    )
    fit_specs = sample_archs(space_obj, fit_archs, seed=seed + 1) if fit_archs > 0 else []
    for s in fit_specs:  # the fit networks' own units must be in the table
        for u in network_units(s, shape):
            units.setdefault(u.key, u)
    ordered = list(units.values())

    def report(stage: str) -> Progress | None:
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    times = time_round_robin(
        [lambda u=u: (build_unit(u, num_classes=num_classes), u.shape) for u in ordered],
        backend=backend,
        threads=threads,
        rounds=rounds,
        samples=samples,
        progress=report("units"),
    )
    table = {u.key: t for u, t in zip(ordered, times, strict=True)}

    net_overhead = unit_overhead = 0.0
    if fit_specs:
        measured = np.array(
            measure_networks(
                fit_specs, shape, num_classes=num_classes, backend=backend, threads=threads,
                rounds=max(rounds, 7), samples=samples, progress=report("fit"),
            )
        )  # fmt: skip
        unit_lists = [network_units(s, shape) for s in fit_specs]
        sums = np.array([sum(table[u.key] for u in us) for us in unit_lists])
        counts = np.array([len(us) for us in unit_lists], dtype=float)
        net_overhead, unit_overhead = fit_overheads(sums, counts, measured)

    how = (
        f"sampled {draws} architectures at random (seed {seed}) "
        + (
            f"(capped at {max_archs}); "
            if max_archs is not None
            else f"until {patience} draws in a row added no unit; "
        )
        + f"{len(table)} distinct units (stem, every block at its input shape, head+classifier)"
    )
    backend_text = (
        "eager torch modules"
        if backend == "torch"
        else "onnxruntime sessions (TorchScript ONNX export)"
    )
    measurement = Measurement(
        backend=backend,
        threads=threads,
        host=host_description(),
        torch=torch.__version__,
        onnxruntime=onnxruntime_version() if backend == "onnxruntime" else "",
        space=space_name,
        image_size=image_size,
        in_chans=in_chans,
        num_classes=num_classes,
        enumeration=how,
        rounds=rounds,
        samples=samples,
        quantile=0.1,
        unit_overhead_ms=unit_overhead,
        fit_seed=seed + 1,
        fit_archs=tuple(format_arch(s) for s in fit_specs),
    )
    return DeviceProfile(
        name=name,
        kind="cpu",
        model="table",
        description=f"{space_name} space at {in_chans}x{image_size}x{image_size}, measured on this host "
        f"({backend}, {threads} thread{'s' if threads > 1 else ''})",
        network_overhead_ms=net_overhead,
        sources={
            "table": f"measured on {measurement.host}: batch 1, {backend_text}, {threads} thread(s), "
            f"10th percentile of {rounds} round-robin visits x {samples} short samples "
            "(torch.utils.benchmark Timer, see hw_profiles/measure.py)",
            "network_overhead_ms": f"least-squares fit of end-to-end minus table sum over {len(fit_specs)} "
            f"whole networks (RandomSampler seed {seed + 1}), with measurement.unit_overhead_ms",
        },
        table=table,
        measurement=measurement,
    )
