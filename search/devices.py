"""A search for several devices at once (``--device rpi4,cortex-a76,stm32f746``): one front per device.

Each device gets a search of its own in ``OUT/devices/NAME/`` (its study, trials, front, checkpoints and
MLflow store), so everything that reads a search folder works on it unchanged; ``OUT/summary.json``
lists the devices with their fronts. With the supernet evaluator the devices share the supernet's
accuracy cache, so an architecture proposed for several devices is evaluated once. ``show OUT`` prints
every front; ``export``, ``retrain`` and ``distill`` take ``--device NAME`` (or the device's folder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from compactnas.core.data import load_data
from compactnas.core.errors import ConfigError
from compactnas.core.files import write_json_atomic
from compactnas.hw_profiles import load_profile
from compactnas.search.loop import SearchResult
from compactnas.search.results import load_summary

FOLDER = "devices"


def split_devices(device: str) -> list[str]:
    names = [d.strip() for d in device.split(",")]
    if not all(names):
        raise ConfigError(f"--device '{device}' lists an empty device name")
    if len(set(names)) != len(names):
        raise ConfigError(f"--device '{device}' names a device twice")
    return names


def run_devices(
    cfg: Any, *, run_one: Callable[..., SearchResult], data: Any | None = None, quiet: bool = False
) -> SearchResult:
    """One search per device in OUT/devices/NAME, each run by ``run_one(cfg, data=, quiet=)``;
    returns a SearchResult over all of them."""

    devices = split_devices(cfg.device)
    for d in devices:  # an unknown device fails before anything runs
        load_profile(d)
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if data is None:  # loaded once for every device
        data = load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
    started = time.time()
    results: dict[str, Any] = {}
    for d in devices:
        sub = cfg.replace(device=d, out=str(out / FOLDER / d))
        if cfg.resume and not (sub.out_dir / "study.db").exists():
            sub = sub.replace(resume=False)  # the earlier run stopped before this device began
        if not quiet:
            print(f"device {d}: searching in {sub.out_dir}", flush=True)
        t0 = time.time()
        results[d] = run_one(sub, data=data, quiet=quiet)
        results[d].summary["device_seconds"] = round(time.time() - t0, 2)
    summary = combined_summary(cfg, results, time.time() - started)
    write_json_atomic(out / "summary.json", summary)
    trials = pd.concat([r.trials.assign(device=d) for d, r in results.items()], ignore_index=True)
    front = pd.concat([r.front.assign(device=d) for d, r in results.items()], ignore_index=True)
    trials.to_csv(out / "trials.csv", index=False)
    front.to_csv(out / "pareto.csv", index=False)
    return SearchResult(out, summary, trials, front, results[devices[-1]].study)


def combined_summary(cfg: Any, results: dict[str, Any], elapsed: float) -> dict[str, Any]:
    per = {}
    for d, r in results.items():
        s = r.summary
        per[d] = {
            "folder": f"{FOLDER}/{d}",
            "seconds": s.get("device_seconds"),
            **{
                k: s[k]
                for k in ("n_trials", "n_complete", "n_failed", "n_infeasible", "hypervolume")
            },
            "pareto": s["pareto"],
        }
    counts = ("n_trials", "n_complete", "n_failed", "n_infeasible", "n_stopped_early")
    return {
        "devices": per,
        **{k: sum(int(r.summary.get(k, 0)) for r in results.values()) for k in counts},
        "hypervolume": {d: p["hypervolume"] for d, p in per.items()},
        "objectives": next(iter(results.values())).summary["objectives"],
        "config": cfg.to_dict(),
        "elapsed_s": round(elapsed, 2),
        # Every device's front, each row naming its device (for tools that read one table).
        "pareto": [{"device": d, **row} for d, p in per.items() for row in p["pareto"]],
    }


def is_multi_device(summary: dict[str, Any]) -> bool:
    return isinstance(summary.get("devices"), dict)


def device_folder(out: str | Path, device: str | None) -> Path:
    """The folder of one device's search: ``out`` itself for a single-device search."""
    out = Path(out).expanduser().resolve()
    summary = load_summary(out)
    if not is_multi_device(summary):
        return out  # a single-device search: --device only chooses an export format there
    names = list(summary["devices"])
    if device is None:
        raise ConfigError(
            f"{out} holds one front per device ({', '.join(names)}): choose one with --device NAME"
        )
    if device not in summary["devices"]:
        raise ConfigError(f"{out} has no front for device '{device}' (it has: {', '.join(names)})")
    return out / summary["devices"][device]["folder"]
