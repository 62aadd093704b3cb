"""Latency calibration on devices it never saw: leave one device out, over 23 NAS-Bench-201 device tables.

    python benchmarks/device_transfer.py [--nb201 DIR] [--samples 20] [--draws 10] [--quick] [--out PATH]
                                         [--write-sources PATH]
    (also: python benchmarks/device_fidelity.py --leave-one-out ...)

For each of the 23 public device configurations (nb201_hw.csv: raspi4, pixel3, eyeriss, fpga;
nb201_more_devices.csv: 4 server CPUs, 5 desktop GPUs at batch 1, 32 and 256), the predictor is built
without that device's table: the other 22 are its source devices (hw_profiles/transfer.py fits each
one's coefficient vector on its whole table). The left-out device is then calibrated as a user would,
from ``--samples`` random cells (``--draws`` draws, seeds 0..draws-1), and scored on every other cell:
Spearman, Kendall, MAPE and the share within +/-10%. Beside it, on the same cells: FLOPs (MACs of the
layers that reach the output; ranking only) and the 20-sample FLOPs fit (a scale and a constant:
MAPE), and the best the same features reach with the device's whole table (5-fold cross-validated).
Nothing is tuned on the device being scored. Results go to results/device_transfer.json after every
device; a rerun keeps the devices already there (delete the file to measure anew). The whole run takes
about 4 minutes on this 2-core machine (``--quick``: 3 draws, about 1.5 minutes).

``--write-sources PATH`` writes the 23 devices' coefficient vectors, fitted on their whole tables: the
source devices that ``compactnas profile calibrate --method transfer`` starts from
(hw_profiles/sources/nb201_devices.json was written so).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _results import Results  # noqa: E402
from scipy import stats  # noqa: E402

from compactnas.hw_profiles.transfer import (  # noqa: E402
    _MACS,
    FEATURES,
    calibrate_transfer,
    feature_matrix,
    fit_source,
)
from compactnas.spaces.nb201 import parse_nb201_string  # noqa: E402

HERE = Path(__file__).resolve().parent
NB201 = HERE.parent.parent / "shared" / "data" / "nb201"
SHAPE, CLASSES = (3, 32, 32), 100
# Spearman from 10 samples of the target device, as published (HELP, Lee et al., NeurIPS 2021, Table 3),
# with the FLOPs figure of the same table; their FLOPs count every layer, ours those that reach the output.
HELP = {
    "raspi4_ms": (0.890, 0.846), "eyeriss_ms": (0.940, 0.437), "fpga_ms": (0.985, 0.900),
    "gold_6226_ms": (0.989, 0.826), "titan_rtx_256_ms": (0.987, 0.950),
}  # fmt: skip


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    rel = (pred - y) / y
    return {
        "spearman": round(float(stats.spearmanr(pred, y).statistic), 4),
        "kendall": round(float(stats.kendalltau(pred, y).statistic), 4),
        "mape": round(float(np.mean(np.abs(rel)) * 100), 2),
        "within_10pct": round(float(np.mean(np.abs(rel) <= 0.10)), 4),
    }


def load_tables(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    hw = pd.read_csv(folder / "nb201_hw.csv")
    more = folder / "nb201_more_devices.csv"
    df = hw.merge(pd.read_csv(more), on="index") if more.is_file() else hw
    return df, [c for c in df.columns if c.endswith("_ms")]


def whole_table_cv(x: np.ndarray, y: np.ndarray, folds: int = 5) -> dict[str, float]:
    """The features' best with the device's whole table: fitted on 4/5, predicted on the other 1/5."""
    order = np.random.default_rng(0).permutation(len(y))
    pred = np.zeros(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        pred[test] = x[test] @ fit_source(x[train], y[train])
    return scores(pred, y)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 4), "mean": round(float(np.mean(values)), 4),
            "min": round(float(np.min(values)), 4), "max": round(float(np.max(values)), 4)}  # fmt: skip


def one_device(col: str, x: np.ndarray, y: np.ndarray, sources: dict, args: Any) -> dict[str, Any]:
    macs = x[:, _MACS].sum(axis=1)
    draws, methods = [], []
    for seed in range(args.draws):
        idx = np.random.default_rng(seed).choice(len(y), args.samples, replace=False)
        rest = np.ones(len(y), bool)
        rest[idx] = False
        cal = calibrate_transfer(x[idx], y[idx], sources)
        flops_fit = calibrate_transfer(x[idx], y[idx], {}, methods=("flops",))
        draws.append({
            "seed": seed, "method": cal.method, "source": cal.source,
            "calibrated": scores(cal.predict(x[rest]), y[rest]),
            "flops_fit": scores(flops_fit.predict(x[rest]), y[rest]),
            "flops_spearman": round(float(stats.spearmanr(macs[rest], y[rest]).statistic), 4),
        })  # fmt: skip
        methods.append(cal.method)
    out: dict[str, Any] = {
        "draws": draws,
        "methods_chosen": {m: methods.count(m) for m in sorted(set(methods))},
        "whole_table_cv": whole_table_cv(x, y),
        "flops_spearman": round(float(stats.spearmanr(macs, y).statistic), 4),
    }
    for key in ("spearman", "kendall", "mape", "within_10pct"):
        out[f"calibrated_{key}"] = spread([d["calibrated"][key] for d in draws])
    out["flops_fit_mape"] = spread([d["flops_fit"]["mape"] for d in draws])
    out["flops_spearman_rest"] = spread([d["flops_spearman"] for d in draws])
    med = out["calibrated_spearman"]["median"]
    out["at_least_flops"] = bool(med >= out["flops_spearman_rest"]["median"])
    out["gap_to_whole_table"] = round(
        out["whole_table_cv"]["spearman"] - out["calibrated_spearman"]["mean"], 4
    )
    if col in HELP:
        out["help_published"] = {"help_10_samples": HELP[col][0], "flops": HELP[col][1]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nb201", type=Path, default=NB201, help="folder with nb201_hw.csv (and more)")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="3 draws")
    p.add_argument("--out", type=Path, default=HERE / "results" / "device_transfer.json")
    p.add_argument("--write-sources", type=Path, metavar="PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.draws = min(args.draws, 3)
    if not (args.nb201 / "nb201_hw.csv").is_file():
        log(f"device_transfer: no NB201 tables in {args.nb201} (../shared/data is absent): skipped")
        return 0
    t0 = time.time()
    df, cols = load_tables(args.nb201)
    x = feature_matrix([parse_nb201_string(a) for a in df.arch], SHAPE, CLASSES)
    ys = {c: df[c].to_numpy(dtype=float) for c in cols}
    log(f"features of {len(df)} cells, {len(cols)} devices, in {time.time() - t0:.0f} s")
    whole = {c: fit_source(x, ys[c]) for c in cols}
    if args.write_sources:

        def named(v: np.ndarray) -> dict[str, float]:
            return {f: float(c) for f, c in zip(FEATURES, v, strict=True) if c != 0.0}

        # Per device: every feature (for cell networks) and the layer kinds alone (for any other).
        doc = {"features": list(FEATURES), "input_shape": list(SHAPE), "num_classes": CLASSES,
               "source": "NAS-Bench-201 latency tables of HW-NAS-Bench and BRP-NAS as distributed with HELP",
               "devices": {c.removesuffix("_ms"): {"cell": named(v),
                                                   "generic": named(fit_source(x, ys[c], generic=True))}
                           for c, v in whole.items()}}  # fmt: skip
        args.write_sources.write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {args.write_sources}")
    res = Results(args.out, {"benchmark": "device_transfer", "samples": args.samples,
                             "draws": args.draws, "cells": len(df), "devices_total": len(cols)},
                  resume=True)  # fmt: skip
    devices = res.setdefault("devices", {})
    for col in cols:
        if col in devices and len(devices[col]["draws"]) == args.draws:
            continue
        sources = {c: v for c, v in whole.items() if c != col}  # never the device being scored
        devices[col] = one_device(col, x, ys[col], sources, args)
        res.save()
        d = devices[col]
        log(f"{col}: spearman {d['calibrated_spearman']['median']:.3f} (FLOPs "
            f"{d['flops_spearman_rest']['median']:.3f}, whole table {d['whole_table_cv']['spearman']:.3f}) "
            f"{d['methods_chosen']}")  # fmt: skip
    done = [devices[c] for c in cols if c in devices]
    res["summary"] = {
        "devices": len(done),
        "at_least_flops": sum(d["at_least_flops"] for d in done),
        "mean_spearman": round(float(np.mean([d["calibrated_spearman"]["mean"] for d in done])), 4),
        "mean_whole_table_cv": round(
            float(np.mean([d["whole_table_cv"]["spearman"] for d in done])), 4
        ),
        "mean_flops": round(float(np.mean([d["flops_spearman_rest"]["median"] for d in done])), 4),
        "largest_gap_to_whole_table": max(d["gap_to_whole_table"] for d in done),
        "seconds": round(time.time() - t0, 1),
    }
    res.finish()
    return 0


def render(ctx: Any) -> list[str]:
    """The REPORT.md section, from results/device_transfer.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("device_transfer")
    out = ["## Latency on devices never seen: leave one device out", ""]
    if not d:
        return out + ["Not run (no `device_transfer.json`).", ""]
    s = d.get("summary") or {}
    out.append(
        f"{d['devices_total']} NAS-Bench-201 device configurations, {d['cells']:,} cells each. Each device "
        f"in turn is left out: the other {d['devices_total'] - 1} are the sources, and it is calibrated "
        f"from {d['samples']} random cells ({d['draws']} draws), scored on every other cell. Commit "
        f"{str(d.get('commit', 'unknown'))[:12]}."
    )
    if s:
        out.append(
            f"Mean Spearman {s['mean_spearman']:.3f} against {s['mean_whole_table_cv']:.3f} for the same "
            f"features fitted on the whole table (5-fold cross-validated) and {s['mean_flops']:.3f} for "
            f"FLOPs; at least FLOPs on {s['at_least_flops']} of {s['devices']} devices; largest gap to "
            f"the whole-table figure {s['largest_gap_to_whole_table']:.3f}."
        )
    out += ["", "| device | Spearman (median, min-max) | Kendall | MAPE % | within 10% | FLOPs Spearman | "
            "FLOPs-fit MAPE % | whole table (CV) | HELP 10 samples (published) | chosen |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for col, r in d.get("devices", {}).items():
        sp = r["calibrated_spearman"]
        helped = r.get("help_published", {}).get("help_10_samples")
        out.append(
            f"| {col.removesuffix('_ms')} | {sp['median']:.3f} ({sp['min']:.3f}-{sp['max']:.3f}) | "
            f"{r['calibrated_kendall']['median']:.3f} | {r['calibrated_mape']['median']:.1f} | "
            f"{100 * r['calibrated_within_10pct']['median']:.0f}% | {r['flops_spearman_rest']['median']:.3f} | "
            f"{r['flops_fit_mape']['median']:.1f} | {r['whole_table_cv']['spearman']:.3f} | "
            f"{'' if helped is None else f'{helped:.3f}'} | "
            + ", ".join(f"{m} {n}" for m, n in r["methods_chosen"].items())
            + " |"
        )
    return [*out, ""]


if __name__ == "__main__":
    raise SystemExit(main())
