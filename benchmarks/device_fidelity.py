"""Device-latency fidelity against real measurements: NAS-Bench-201 cells timed on four devices.

    python benchmarks/device_fidelity.py [--nb201 PATH] [--mcu PATH] [--calibration-samples N] [--seeds K]
                                         [--quick] [--out PATH]

For every latency column of the NB201 table (HW-NAS-Bench: Raspberry Pi 4, Pixel 3, Eyeriss ASIC, FPGA;
CIFAR input 3x32x32, batch 1), calibrates a profile with ``compactnas.hw_profiles.calibrate`` (the linear,
few-parameter fit) from N measured cells (default 20, and N/2) chosen by the tool, and scores its
predictions on every other cell: Spearman, Kendall, MAPE and the share within +/-10%. Cells are chosen
diverse by MACs: the table is sorted by MACs, cut into N equal bins, and one cell is drawn from each bin
(seeded; repeated over K seeds, default 5). Reported beside: the published profile before calibration
(where one exists for the device), MACs (ranking; milliseconds by one least-squares scale on the same N
cells) and the published figures of FLOPs and HELP on the same table. ``--quick`` scores on 3,000 cells
and runs 2 seeds. The MCU file (``--mcu``) is read and its rows counted; predicting them needs profiles
per board and runtime, which are not built yet (reported as such).

Results go to benchmarks/results/device_fidelity.json, rewritten after every device and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "device_fidelity.json"
DEFAULT_NB201 = HERE.parent.parent / "shared" / "data" / "nb201" / "nb201_hw.csv"
DEFAULT_MCU = HERE.parent.parent / "shared" / "data" / "mcu" / "mcu_reference.json"
SHAPE, CLASSES = (3, 32, 32), 100

# column -> (base profile, whether that profile describes this device)
DEVICES = {
    "raspi4_ms": ("rpi4", True),
    "pixel3_ms": (
        "cortex-a76",
        False,
    ),  # Pixel 3 is a Cortex-A75 phone; the nearest published profile
    "eyeriss_ms": ("rpi4", False),  # no published ASIC profile: a starting point only
    "fpga_ms": ("rpi4", False),
}
# Spearman on these columns, as published (HELP, Lee et al. NeurIPS 2021, Table 3 and text).
PUBLISHED = {
    "raspi4_ms": {"FLOPs": 0.846, "BRP-NAS (900 samples)": 0.847, "HELP (10 samples)": 0.890},
    "eyeriss_ms": {"FLOPs": 0.437, "HELP (10 samples)": 0.940},
    "fpga_ms": {"FLOPs": 0.900, "HELP (10 samples)": 0.985},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    rel = (pred - y) / y
    return {
        "spearman": float(stats.spearmanr(pred, y).statistic),
        "kendall": float(stats.kendalltau(pred, y).statistic),
        "mape": float(np.mean(np.abs(rel)) * 100),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
    }


def diverse_cells(macs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """One cell from each of n equal bins of the table sorted by MACs."""
    rng = np.random.default_rng(seed)
    order = np.argsort(macs, kind="stable")
    return np.array([rng.choice(b) for b in np.array_split(order, n)])


def predict_all(profile: Any, terms: list) -> np.ndarray:
    from compactnas.hw_profiles import analysis

    tp, eff = analysis.profile_vectors(profile)
    return np.array(
        [
            analysis.roofline_ms_terms(
                t, throughput=tp, efficiency=eff, bandwidth=profile.bandwidth,
                layer_overhead_ms=profile.layer_overhead_ms,
                network_overhead_ms=profile.network_overhead_ms,
                combine=profile.combine, dead_code=profile.dead_code,
            )
            for t in terms
        ]
    )  # fmt: skip


def write(doc: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)


def run_nb201(path: Path, args: argparse.Namespace, doc: dict, out: Path) -> None:
    from compactnas.hw_profiles import analysis, calibrate, create_latency_model, load_profile
    from compactnas.spaces.layers import arch_layers
    from compactnas.spaces.nb201 import parse_nb201_string

    df = pd.read_csv(path)
    cols = [c for c in df.columns if c.endswith("_ms")]
    if args.quick:
        df = df.sample(n=min(3000, len(df)), random_state=0).reset_index(drop=True)
    t0 = time.time()
    ref = load_profile("rpi4")  # layer terms depend only on precision, fp32 everywhere here
    terms = [
        analysis.layer_terms(ref, tuple(arch_layers(parse_nb201_string(a), SHAPE, CLASSES)))
        for a in df.arch
    ]
    macs = np.array([t.macs.sum() for t in terms])
    log(f"layer lists of {len(df)} cells in {time.time() - t0:.0f} s")
    doc["nb201"] = {"file": str(path), "cells": len(df), "columns": cols, "devices": {}}
    sizes = sorted({max(2, args.calibration_samples // 2), args.calibration_samples})
    for col in cols:
        y = df[col].to_numpy(dtype=float)
        base_name, own = DEVICES.get(col, ("rpi4", False))
        base = load_profile(base_name)
        dev: dict[str, Any] = {"base_profile": base_name, "base_is_this_device": own,
                               "published": PUBLISHED.get(col, {}),
                               "macs_all": {"spearman": float(stats.spearmanr(macs, y).statistic)}}  # fmt: skip
        pred0 = predict_all(base, terms)
        dev["before"] = scores(pred0, y)
        # The model the search uses must agree with the vectorised predictions here.
        check = create_latency_model(base, num_classes=CLASSES)
        assert abs(check.predict_ms(parse_nb201_string(df.arch[0]), SHAPE) - pred0[0]) < 1e-9
        doc["nb201"]["devices"][col] = dev
        for n in sizes:
            runs = []
            for seed in range(args.seeds):
                idx = diverse_cells(macs, n, seed)
                rest = np.ones(len(y), bool)
                rest[idx] = False
                fitted, report = calibrate(base, pd.DataFrame({"arch": df.arch[idx], "ms": y[idx]}),
                                           input_shape=SHAPE, num_classes=CLASSES)  # fmt: skip
                pred = predict_all(fitted, terms)
                scale = float(macs[idx] @ y[idx] / (macs[idx] @ macs[idx]))
                runs.append({
                    "seed": seed, "calibrated": scores(pred[rest], y[rest]),
                    "macs_scaled": scores(macs[rest] * scale, y[rest]),
                    "dead_code": report["dead_code"], "mape_fit": report["mape_after"],
                })  # fmt: skip
                if seed == 0 and n == args.calibration_samples:
                    keep = np.random.default_rng(0).choice(
                        np.flatnonzero(rest), min(1500, rest.sum()), replace=False
                    )
                    dev["points"] = {"measured": y[keep].round(5).tolist(), "predicted": pred[keep].round(5).tolist(),
                                     "before": pred0[keep].round(5).tolist()}  # fmt: skip
                    dev["example_profile"] = fitted.to_dict()
                log(f"{col} n={n} seed={seed}: spearman {runs[-1]['calibrated']['spearman']:.4f}")
                dev[f"n{n}"] = summarise(runs)
                write(doc, out)
    doc["nb201"]["seconds"] = round(time.time() - t0, 1)
    write(doc, out)


def summarise(runs: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in ("calibrated", "macs_scaled"):
        for m in ("spearman", "kendall", "mape", "within_10pct"):
            v = np.array([r[key][m] for r in runs])
            out.setdefault(key, {})[m] = {
                "mean": float(v.mean()),
                "min": float(v.min()),
                "max": float(v.max()),
            }
    return out


def run_mcu(path: Path, doc: dict) -> None:
    ref = json.loads(path.read_text())
    rows = ref.get("measurements", [])
    runtimes: dict[str, int] = {}
    for r in rows:
        runtimes[r.get("runtime", "?")] = runtimes.get(r.get("runtime", "?"), 0) + 1
    doc["mcu"] = {
        "file": str(path), "rows": len(rows), "networks": len(ref.get("networks", {})), "by_runtime": runtimes,
        "status": "not predicted: profiles per board and runtime are not built yet",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nb201", type=Path, default=DEFAULT_NB201)
    ap.add_argument("--mcu", type=Path, default=DEFAULT_MCU)
    ap.add_argument("--calibration-samples", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 2)
    if args.calibration_samples < 2 or args.seeds < 1:
        ap.error("--calibration-samples must be >= 2 and --seeds >= 1")
    doc: dict[str, Any] = {"benchmark": "device_fidelity", "quick": args.quick, "seeds": args.seeds,
                           "calibration_samples": args.calibration_samples,
                           "selection": "diverse by MACs: one cell per equal bin of the MACs-sorted table, seeded",
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    write(doc, args.out)
    if args.nb201.is_file():
        run_nb201(args.nb201, args, doc, args.out)
    else:
        log(f"no NB201 table at {args.nb201}: skipped (pass --nb201 PATH)")
        doc["nb201"] = {"status": f"absent: {args.nb201}"}
    if args.mcu.is_file():
        run_mcu(args.mcu, doc)
    else:
        log(f"no MCU reference at {args.mcu}: skipped (pass --mcu PATH)")
        doc["mcu"] = {"status": f"absent: {args.mcu}"}
    write(doc, args.out)
    log(f"wrote {args.out}")
    return 0


# -- REPORT.md ------------------------------------------------------------------------------------------


def plot(data: dict, path: Path) -> bool:
    devs = {k: v for k, v in data.get("nb201", {}).get("devices", {}).items() if "points" in v}
    if not devs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(devs), figsize=(4 * len(devs), 4))
    for ax, (col, d) in zip(np.atleast_1d(axes), devs.items(), strict=True):
        p = d["points"]
        ax.scatter(p["measured"], p["predicted"], s=3, alpha=0.4, label="calibrated")
        lim = [min(p["measured"]), max(p["measured"])]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(col.removesuffix("_ms"))
        ax.set_xlabel("measured ms")
        ax.set_ylabel("predicted ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report_section(data: dict | None, results: Path, rel: Any) -> list[str]:
    """REPORT.md lines; ``rel(path)`` gives an image link relative to REPORT.md."""
    out = ["## Device latency against real measurements (NAS-Bench-201, HW-NAS-Bench)", ""]
    if not data:
        return out + ["Not run (no `device_fidelity.json`).", ""]
    nb = data.get("nb201", {})
    if "devices" not in nb:
        return out + [f"NB201: {nb.get('status', 'not run')}", ""]
    n = data["calibration_samples"]
    out += [f"{nb['cells']} cells, {data['seeds']} seed(s); calibration cells: {data['selection']}. "
            "Scores on every cell not used for calibration (mean over seeds, min in brackets).", ""]  # fmt: skip
    out += [
        "| device | predictor | Spearman | Kendall | MAPE % | within 10% |",
        "|---|---|---|---|---|---|",
    ]
    for col, d in nb["devices"].items():
        name = col.removesuffix("_ms")
        b = d["before"]
        label = f"published `{d['base_profile']}`" + (
            "" if d["base_is_this_device"] else " (other device)"
        )
        out.append(
            f"| {name} | {label}, uncalibrated | {b['spearman']:.3f} | {b['kendall']:.3f} | {b['mape']:.1f} | {b['within_10pct']:.0%} |"
        )
        for key in sorted(k for k in d if k.startswith("n") and k[1:].isdigit()):
            c = d[key]["calibrated"]
            out.append(f"| {name} | calibrated, {key[1:]} cells | {c['spearman']['mean']:.3f} ({c['spearman']['min']:.3f}) | "
                       f"{c['kendall']['mean']:.3f} | {c['mape']['mean']:.1f} | {c['within_10pct']['mean']:.0%} |")  # fmt: skip
        if f"n{n}" in d:
            m = d[f"n{n}"]["macs_scaled"]
            out.append(f"| {name} | MACs (scaled on {n} cells) | {m['spearman']['mean']:.3f} | {m['kendall']['mean']:.3f} | "
                       f"{m['mape']['mean']:.1f} | {m['within_10pct']['mean']:.0%} |")  # fmt: skip
        for who, v in d["published"].items():
            out.append(f"| {name} | {who}, published | {v:.3f} | | | |")
    out.append("")
    png = results / "device_fidelity.png"
    if plot(data, png):
        out += [rel(png, "predicted against measured latency per device"), ""]
    mcu = data.get("mcu", {})
    out += [f"MCU reference: {mcu.get('rows', 0)} rows; {mcu.get('status', '')}.", ""]
    return out


if __name__ == "__main__":
    sys.exit(main())
