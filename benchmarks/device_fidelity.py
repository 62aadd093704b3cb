"""Device-latency fidelity against real measurements: NAS-Bench-201 cells timed on four devices.

    python benchmarks/device_fidelity.py [--nb201 PATH] [--mcu PATH] [--calibration-samples N] [--seeds K]
                                         [--quick] [--out PATH]

For every latency column of the NB201 table (HW-NAS-Bench: Raspberry Pi 4, Pixel 3, Eyeriss ASIC, FPGA;
CIFAR input 3x32x32, batch 1), calibrates a profile with ``compactnas.hw_profiles.calibrate`` (the linear,
few-parameter fit) from N measured cells (default 20, and N/2) chosen by the tool, and scores its
predictions on every other cell: Spearman, Kendall, MAPE and the share within +/-10%. Cells are chosen
diverse by MACs: the table is sorted by MACs, cut into N equal bins, and one cell is drawn from each
(seeded; repeated over K seeds, default 5). ``--selection-pool P`` also spreads operator counts (of P
cells per bin, the one farthest from those chosen); cells cut off from their input (only ``none`` paths)
are never picked unless ``--include-cut-off``; the calibration keeps the base profile's dead-code
statement where it describes the device's runtime (``--dead-code`` overrides, see DEVICES). Reported beside: the published profile before calibration
(where one exists for the device), MACs (ranking; milliseconds by one least-squares scale on the same N
cells) and the published figures of FLOPs and HELP on the same table. ``--quick`` scores on 3,000 cells
and runs 2 seeds. For the MCU file (``--mcu``), every named network becomes our int8 layer list; per
(board, runtime) with latency rows, ms/MAC, ms/operator and ms/network are fitted and each row is
predicted leave-one-row-out; SRAM is the runtime's own activation plan (hw_profiles/memory_plan.py)
plus a runtime constant (median, leave-one-network-out: fitted without any row of the row's network),
flash our int8 weights plus a runtime constant (median, leave-one-row-out); the packaged board+runtime
profiles predict every row they cover.
``--write-mcu-profiles DIR`` writes those profiles (how hw_profiles/data/stm32*-*.json were made).

Results go to benchmarks/results/device_fidelity.json, rewritten after every device and seed.

``--leave-one-out`` runs benchmarks/device_transfer.py instead (its flags follow): each of the 23 public
device configurations calibrated from 20 cells with the other 22 as sources, never its own table.
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
sys.path.insert(0, str(HERE))
from _results import commit  # noqa: E402

RESULTS = HERE / "results" / "device_fidelity.json"
DEFAULT_NB201 = HERE.parent.parent / "shared" / "data" / "nb201" / "nb201_hw.csv"
DEFAULT_MCU = HERE.parent.parent / "shared" / "data" / "mcu" / "mcu_reference.json"
SHAPE, CLASSES = (3, 32, 32), 100

# column -> (base profile, whether that profile describes this device, dead-code setting of the fit).
# Dead-code elimination is a property of the runtime: HW-NAS-Bench timed the Raspberry Pi 4 and the
# Pixel 3 under TF Lite, whose converter drops operators that never reach an output (the rpi4 profile's
# source); the ASIC and FPGA figures come from their own tool flows, for which the fit decides.
DEVICES = {
    "raspi4_ms": ("rpi4", True, "keep"),
    # Pixel 3 is a Cortex-A75 phone; the nearest published profile
    "pixel3_ms": ("cortex-a76", False, "on"),
    "eyeriss_ms": ("rpi4", False, "auto"),  # no published ASIC profile: a starting point only
    "fpga_ms": ("rpi4", False, "auto"),
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


def op_counts(archs: pd.Series) -> np.ndarray:
    """How many edges of each operator a cell has (NAS-Bench-201 notation)."""
    from compactnas.spaces.nb201 import OPS

    return np.array([[a.count(f"|{op}~") for op in OPS] for a in archs], dtype=float)


def diverse_cells(
    macs: np.ndarray,
    counts: np.ndarray,
    n: int,
    seed: int,
    pool: int = 16,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """n cells diverse by MACs and by operator counts: the table sorted by MACs is cut into n equal bins;
    from each bin, of ``pool`` cells drawn at random, the one whose operator counts are farthest from
    the cells already chosen is taken (greedy max-min). Cells in ``skip`` are never chosen."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    order = np.argsort(macs, kind="stable")
    if skip is not None:
        order = order[~skip[order]]
    if pool <= 1:  # one cell at random from each MACs bin
        return np.array([rng.choice(b) for b in np.array_split(order, n)])
    for b in np.array_split(order, n):
        cand = rng.choice(b, size=min(pool, len(b)), replace=False)
        if not chosen:
            chosen.append(int(cand[0]))
            continue
        dist = np.min(np.linalg.norm(counts[cand][:, None] - counts[chosen][None], axis=2), axis=1)
        chosen.append(int(cand[np.argmax(dist)]))
    return np.array(chosen)


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
    """Atomically, with the commit of the code that measured it."""
    doc.setdefault("commit", commit())
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
    counts = op_counts(df.arch)
    from compactnas.spaces.cells import cut_off

    # Cut-off cells (output independent of the input): optionally never chosen for calibration.
    dead = np.array(
        [cut_off(a.split("_o")[1][:6]) for a in map(str, map(parse_nb201_string, df.arch))]
    )
    log(f"layer lists of {len(df)} cells in {time.time() - t0:.0f} s")
    doc["nb201"] = {"file": str(path), "cells": len(df), "columns": cols, "devices": {}}
    sizes = sorted({max(2, args.calibration_samples // 2), args.calibration_samples})
    for col in cols:
        y = df[col].to_numpy(dtype=float)
        base_name, own, dead_code = DEVICES.get(col, ("rpi4", False, "auto"))
        dead_code = args.dead_code or dead_code
        base = load_profile(base_name)
        dev: dict[str, Any] = {"base_profile": base_name, "base_is_this_device": own, "dead_code_setting": dead_code,
                               "published": PUBLISHED.get(col, {}),
                               "macs_all": {"spearman": float(stats.spearmanr(macs, y).statistic)}}  # fmt: skip
        pred0 = predict_all(base, terms)
        dev["before"] = scores(pred0, y)
        dev["cut_off"] = {"cells": int(dead.sum()), "measured_ms_min": float(y[dead].min(initial=np.inf)),
                          "measured_ms_max": float(y[dead].max(initial=0.0)),
                          "predicted_ms_median": float(np.median(pred0[dead])) if dead.any() else None}  # fmt: skip
        # The model the search uses must agree with the vectorised predictions here.
        check = create_latency_model(base, num_classes=CLASSES)
        assert abs(check.predict_ms(parse_nb201_string(df.arch[0]), SHAPE) - pred0[0]) < 1e-9
        doc["nb201"]["devices"][col] = dev
        for n in sizes:
            runs = []
            for seed in range(args.seeds):
                idx = diverse_cells(macs, counts, n, seed, pool=args.selection_pool,
                                    skip=None if args.include_cut_off else dead)  # fmt: skip
                rest = np.ones(len(y), bool)
                rest[idx] = False
                fitted, report = calibrate(base, pd.DataFrame({"arch": df.arch[idx], "ms": y[idx]}),
                                           input_shape=SHAPE, num_classes=CLASSES, dead_code=dead_code)  # fmt: skip
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


BOARDS = {  # clock (MHz), SRAM and flash (KB), bus peak (bytes/s): ST datasheets
    "stm32h743": (480, 1024, 2048, 480e6 * 8, "STM32H743xI datasheet DS12110: Cortex-M7 up to 480 MHz, 1 MB RAM, 2 MB flash, 64-bit AXI"),
    "stm32h747": (400, 1024, 2048, 400e6 * 8, "STM32H747xI datasheet DS12930 and the reference file: Cortex-M7 core at 400 MHz on the STM32H747I-DISCO, 1 MB RAM, 2 MB flash"),
    "stm32f769": (216, 512, 2048, 216e6 * 8, "STM32F769xI datasheet DS11532: Cortex-M7 at 216 MHz, 512 KB RAM, 2 MB flash"),
    "stm32f746": (216, 320, 1024, 216e6 * 8, "STM32F746xG datasheet DS10916: Cortex-M7 at 216 MHz, 320 KB RAM, 1 MB flash"),
}  # fmt: skip


def _rel(pred: float, y: float) -> float:
    return float(pred / y - 1)


def run_mcu(path: Path, doc: dict, write_profiles: Path | None = None) -> None:
    import mcu_reference as mr

    from compactnas.hw_profiles.analysis import layer_bytes

    ref = json.loads(path.read_text())
    nets = {k: mr.network_layers(v) for k, v in ref.get("networks", {}).items()}
    feats = {k: mr.features(v) for k, v in nets.items()}
    rows = []
    for r in ref.get("measurements", []):
        board, runtime = mr.board_of(r), mr.RUNTIMES.get(r.get("runtime", ""))
        if board is None or runtime is None or r.get("network_id") not in feats:
            continue
        rows.append({"network": r["network_id"], "board": board, "runtime": runtime,
                     "latency_ms": mr.number(r, "latency_ms"),
                     "sram_kb": mr.number(r, "peak_sram_kB", "peak_sram_KiB"),
                     "flash_kb": mr.number(r, "flash_kB", "total_flash_KiB"),
                     "source": r.get("source", {}).get("repo", "")})  # fmt: skip
    out: dict[str, Any] = {"file": str(path), "rows": len(rows), "groups": {}, "per_runtime": {}}
    fits: dict[tuple[str, str], Any] = {}
    for key in sorted({(r["board"], r["runtime"]) for r in rows}):
        g = [r for r in rows if (r["board"], r["runtime"]) == key and r["latency_ms"]]
        if len(g) < 3:
            continue
        bw = BOARDS.get(key[0], (0, 0, 0, 1.7e9))[3]
        mem = np.array([sum(layer_bytes(x) for x in nets[r["network"]]) / bw * 1e3 for r in g])
        x = np.array([[feats[r["network"]]["macs"], feats[r["network"]]["layers"], 1.0] for r in g])
        y = np.array([r["latency_ms"] for r in g])
        pred = mr.loo(x, np.maximum(y - mem, 1e-3 * y)) + mem
        for r, p in zip(g, pred, strict=True):
            r["latency_pred_loo_ms"], r["latency_err"] = float(p), _rel(p, r["latency_ms"])
        fits[key] = mr.fit_latency(x, np.maximum(y - mem, 1e-3 * y))
        out["groups"][f"{key[0]}-{key[1]}"] = {"n": len(g), "coef_ms_per_mmac_op_net": [float(fits[key][0] * 1e6), float(fits[key][1]), float(fits[key][2])],
                                              "median_abs_err": float(np.median(np.abs(pred / y - 1)))}  # fmt: skip
    consts: dict[str, dict[str, float]] = {}
    for rt in sorted({r["runtime"] for r in rows}):
        sram_feat = f"arena_{mr.PLANNER.get(rt, 'live')}_kb" if rt in mr.PLANNER else "peak_act_kb"
        for kind, feat in (("sram_kb", sram_feat), ("flash_kb", "weights_kb")):
            g = [r for r in rows if r["runtime"] == rt and r[kind]]
            if len(g) < 2:
                continue
            diff = np.array([r[kind] - feats[r["network"]][feat] for r in g])
            fit = np.array(
                [kind != "sram_kb" or not r["source"].startswith(mr.OTHER_SRAM_SOURCES) for r in g]
            )
            consts.setdefault(rt, {})[kind] = float(np.median(diff[fit]))
            # SRAM: leave-one-network-out; flash: leave-one-row-out (its model and check as before)
            groups = (
                [r["network"] for r in g] if kind == "sram_kb" else [str(i) for i in range(len(g))]
            )
            loo_c = mr.loo_constants(diff, groups, fit)
            for r, c in zip(g, loo_c, strict=True):
                r[f"{kind}_pred_loo"] = feats[r["network"]][feat] + float(c)
                r[f"{kind}_err"] = _rel(r[f"{kind}_pred_loo"], r[kind])
        per: dict[str, Any] = {}
        for kind in ("latency", "sram_kb", "flash_kb"):
            errs = [
                abs(r[f"{kind}_err"]) for r in rows if r["runtime"] == rt and f"{kind}_err" in r
            ]
            if errs:
                per[kind] = {"n": len(errs), "median_abs_err": float(np.median(errs)),
                             "within_15pct": float(np.mean(np.array(errs) <= 0.15)),
                             "within_20pct": float(np.mean(np.array(errs) <= 0.20))}  # fmt: skip
        out["per_runtime"][rt] = per
    out["runtime_constants_kb"] = consts
    out["profiles"] = profile_predictions(rows, nets)
    out["rows_detail"] = rows
    out["status"] = "leave-one-network-out errors per (board, runtime) fit"
    doc["mcu"] = out
    if write_profiles is not None:
        write_mcu_profiles(fits, consts, write_profiles, str(path))


def profile_predictions(rows: list[dict], nets: dict) -> dict[str, Any]:
    """Every row for which a packaged board+runtime profile exists, predicted by that profile (in
    sample where the profile was fitted to these rows; F746 profiles are clock-scaled H743 fits)."""
    from compactnas.core.errors import CompactnasError
    from compactnas.hw_profiles import analysis, load_profile
    from compactnas.hw_profiles.memory_plan import arena_bytes

    errs: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        try:
            prof = load_profile(f"{r['board']}-{r['runtime']}")
        except CompactnasError:
            continue
        layers = tuple(nets[r["network"]])
        pred = {"latency_ms": analysis.roofline_ms(prof, layers),
                "sram_kb": arena_bytes(layers, prof.memory.planner) / 1024 + prof.memory.runtime_sram_kb,
                "flash_kb": analysis.weight_bytes(layers) / 1024 + prof.memory.code_flash_kb}  # fmt: skip
        r["profile"] = prof.name
        for k, v in pred.items():
            r[f"profile_{k}"] = float(v)
            if r[k]:
                errs.setdefault(r["runtime"], {}).setdefault(k, []).append(abs(v / r[k] - 1))
    return {
        rt: {k: {"n": len(v), "median_abs_err": float(np.median(v))} for k, v in d.items()}
        for rt, d in errs.items()
    }


def write_mcu_profiles(fits: dict, consts: dict, folder: Path, label: str) -> None:
    """Profiles per board and runtime; boards without latency rows scale an H743 fit by clock."""
    import mcu_reference as mr

    from compactnas.hw_profiles import load_profile, profile_from_dict

    base = load_profile("stm32f746").to_dict()
    todo = dict(fits)
    for (board, rt), coef in fits.items():
        if board == "stm32h743":
            for other in ("stm32f746",):
                todo.setdefault((other, rt), coef * (BOARDS[board][0] / BOARDS[other][0]))
    for (board, rt), coef in sorted(todo.items()):
        if board not in BOARDS:
            continue
        clock, sram, flash, bw, cite = BOARDS[board]
        fitted_here = (board, rt) in fits
        how = (f"fitted by non-negative least squares on relative error to the {rt} rows for {board} in {label}"
               if fitted_here else f"the {rt} fit for stm32h743 scaled by clock (480 -> {clock} MHz); {board} has no latency rows of its own")  # fmt: skip
        doc = {
            "name": f"{board}-{rt}", "kind": "mcu", "model": "roofline", "version": 1, "combine": "sum",
            "description": f"{board.upper()} (Cortex-M7 at {clock} MHz) under {rt}, int8",
            "throughput": {"int8": float(1e3 / max(coef[0], 1e-18)), "fp32": float(0.5e3 / max(coef[0], 1e-18))},
            "bandwidth": bw, "layer_overhead_ms": float(coef[1]), "network_overhead_ms": float(coef[2]),
            "memory": {"sram_kb": sram, "flash_kb": flash,
                       "runtime_sram_kb": max(0.0, consts.get(rt, {}).get("sram_kb", 0.0)),
                       "code_flash_kb": max(0.0, consts.get(rt, {}).get("flash_kb", 0.0)),
                       "planner": mr.PLANNER.get(rt, "live")},
            "energy": base["energy"],
            "sources": {"throughput.int8": how, "layer_overhead_ms": how, "network_overhead_ms": how,
                        "throughput.fp32": "estimate: half the fitted int8 rate (int8 kernels pack two MACs per SIMD instruction; float kernels of the same runtime do not); no fp32 row is measured",
                        "bandwidth": f"64-bit bus at {clock} MHz; {cite}",
                        "memory.sram_kb": cite, "memory.flash_kb": cite,
                        "memory.runtime_sram_kb": f"median over {rt} rows of measured peak SRAM minus the {mr.PLANNER.get(rt, 'live')} plan of our activations ({label}; rows of {', '.join(mr.OTHER_SRAM_SOURCES)}, another quantity, left out)",
                        "memory.planner": f"how {rt} lays out activations (hw_profiles/memory_plan.py)",
                        "memory.code_flash_kb": f"median over {rt} rows of measured flash minus our int8 weights ({label})",
                        "energy": base["sources"]["energy"]},
        }  # fmt: skip
        profile_from_dict(doc, label=doc["name"])
        (folder / f"{doc['name']}.json").write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {folder / (doc['name'] + '.json')}")


def selection_text(args: argparse.Namespace) -> str:
    text = ("diverse by MACs: one random cell from each of N equal bins of the MACs-sorted table, seeded"
            if args.selection_pool <= 1 else
            f"diverse by MACs and operator counts: per equal bin of the MACs-sorted table, of {args.selection_pool} "
            "random cells the one farthest (operator counts) from those already chosen; seeded")  # fmt: skip
    return text + ("" if args.include_cut_off else "; cells cut off from their input never chosen")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Each device calibrated without its own table: benchmarks/device_transfer.py does that.
    if "--leave-one-out" in argv:
        sys.path.insert(0, str(HERE))
        import device_transfer

        return device_transfer.main([a for a in argv if a != "--leave-one-out"])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nb201", type=Path, default=DEFAULT_NB201)
    ap.add_argument("--mcu", type=Path, default=DEFAULT_MCU)
    ap.add_argument("--calibration-samples", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--selection-pool", type=int, default=1,
                    help="1 (default): one random cell per MACs bin; P > 1: of P random cells per bin, the "
                    "one farthest in operator counts from those already chosen")  # fmt: skip
    ap.add_argument("--include-cut-off", action="store_true",
                    help="also calibrate on cells cut off from their input (by default never chosen: what "
                    "such a cell costs on a device follows no rule over the cell, so it teaches the fit "
                    "nothing about the others)")  # fmt: skip
    ap.add_argument("--dead-code", choices=("keep", "auto", "on", "off"), default=None,
                    help="the calibration's dead-code setting for every column (default: per device, "
                    "see DEVICES)")  # fmt: skip
    ap.add_argument("--mcu-only", action="store_true", help="skip the NB201 table")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--write-mcu-profiles", type=Path, default=None, metavar="DIR",
                    help="also write the fitted board+runtime profiles into DIR")  # fmt: skip
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 2)
    if args.calibration_samples < 2 or args.seeds < 1:
        ap.error("--calibration-samples must be >= 2 and --seeds >= 1")
    doc: dict[str, Any] = {"benchmark": "device_fidelity", "quick": args.quick, "seeds": args.seeds,
                           "calibration_samples": args.calibration_samples,
                           "selection": selection_text(args),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    write(doc, args.out)
    if args.nb201.is_file() and not args.mcu_only:
        run_nb201(args.nb201, args, doc, args.out)
    elif not args.mcu_only:
        log(f"no NB201 table at {args.nb201}: skipped (pass --nb201 PATH)")
        doc["nb201"] = {"status": f"absent: {args.nb201}"}
    if args.mcu.is_file():
        sys.path.insert(0, str(HERE))
        run_mcu(args.mcu, doc, args.write_mcu_profiles)
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


def render(ctx: Any) -> list[str]:
    """REPORT.md section (benchmarks/report.py's SECTIONS entry)."""
    return report_section(ctx.data.get("device_fidelity"), ctx.results, ctx.img)


def report_section(data: dict | None, results: Path, rel: Any) -> list[str]:
    """REPORT.md lines; ``rel(path)`` gives an image link relative to REPORT.md."""
    out = ["## Device latency against real measurements (NAS-Bench-201, HW-NAS-Bench)", ""]
    if not data:
        return out + ["Not run (no `device_fidelity.json`).", ""]
    nb = data.get("nb201", {})
    if "devices" not in nb:
        return (
            out + [f"NB201: {nb.get('status', 'not run')}", ""] + mcu_section(data.get("mcu", {}))
        )
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
    cut = next((d["cut_off"] for d in nb["devices"].values() if d.get("cut_off")), None)
    cut_text = (
        f"MAPE on raspi4/pixel3 is dominated by the {cut['cells']} cells cut off from their input (only "
        f"`none` paths), measured at {cut['measured_ms_min']:.2g}-{cut['measured_ms_max']:.2g} ms on the "
        f"first device against a median {cut['predicted_ms_median']:.2g} ms predicted (what dead-code "
        "elimination leaves); no rule over the cell explains those measurements. "
        if cut and cut.get("predicted_ms_median") is not None
        else "MAPE on raspi4/pixel3 is dominated by the cells cut off from their input (only `none` "
        "paths), whose measurements no rule over the cell explains. "
    )
    out += ["", "Notes: " + cut_text + "Three choices were made on this same table, so these figures are "
            "not those of a device never seen (benchmarks/device_transfer.py gives those): the prior weight of "
            "the fit (hw_profiles/fit_linear.py), that cells cut off from their input are never chosen for "
            "calibration, and that the fit keeps the base profile's dead-code statement instead of choosing by "
            "its fit to the 10-20 cells. Our MACs rank better than the published FLOPs figures (counting "
            "differs); both are shown. `--include-cut-off` and `--dead-code auto` give the former behaviour.",
            ""]  # fmt: skip
    png = results / "device_fidelity.png"
    if plot(data, png):
        out += [rel(png, "predicted against measured latency per device"), ""]
    out += mcu_section(data.get("mcu", {}))
    return out


def mcu_section(mcu: dict) -> list[str]:
    out = ["### Microcontrollers (published int8 measurements, mcu_reference.json)", ""]
    if "per_runtime" not in mcu:
        return out + [f"{mcu.get('status', 'not run')}", ""]
    out += [f"{mcu['rows']} rows with a known board and runtime. Median absolute error (latency: per board+runtime "
            "fit of ms/MAC, ms/operator, ms/network, leave-one-row-out; peak SRAM: the runtime's activation planner "
            "(TF-Lite Micro's greedy arena with its per-channel state, CMSIS-NN's scratch on top, TinyEngine's "
            "in-place depthwise and shared im2col buffers, Cube.AI's overlapping input/output buffers) + a runtime "
            "constant, leave-one-network-out, the mcunet README's SRAM column (another quantity) never fitted; "
            "flash: our int8 weights + a runtime constant, leave-one-row-out); share within 15% in brackets.", ""]  # fmt: skip
    out += ["| runtime | latency | peak SRAM | flash |", "|---|---|---|---|"]
    for rt, d in mcu["per_runtime"].items():
        cells = [f"{d[k]['median_abs_err']:.1%} ({d[k]['within_15pct']:.0%}, n={d[k]['n']})" if k in d else "-"
                 for k in ("latency", "sram_kb", "flash_kb")]  # fmt: skip
        out.append(f"| {rt} | " + " | ".join(cells) + " |")
    out.append("")
    return out


if __name__ == "__main__":
    sys.exit(main())
