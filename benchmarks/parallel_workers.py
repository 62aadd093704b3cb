"""Parallel workers: candidates per minute with one worker and with the default (one per core), and
how clean host latency stays while a parallel search trains.

Measurements on digits, written to ``results/parallel_workers.json`` as each one ends:

1. a fixed network's host latency measured on its own (nothing else running here), at the probes'
   cadence, before the searches and again after them;
2. a search with ``--workers 1``: candidates per minute;
3. the same search with the default number of workers: candidates per minute;
4. both again with random search, which proposes the same candidates whatever the number of workers
   (the default sampler proposes from results, so its candidates differ between 2 and 3);
5. the default search once more while the same fixed network is timed every few seconds (a) through
   the search's timing gate, which pauses every worker the way a candidate's own timing does, and
   (b) without it, to show what the gate protects against (a run of its own: the probes pause
   workers). The fixed network is timed in a process of its own, as a worker times a candidate.

The searches are the default local search (default sampler and training epochs; ``--quick`` trains
2 epochs, which makes each trial's fixed costs, timing included, a larger share and understates the
speedup).

    python benchmarks/parallel_workers.py [--quick] [--trials N] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # _results beside this file, however started
from _results import Results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "parallel_workers.json"
PROBE_EVERY_S = 2.0
FIXED = "stem_k3_s1_c16-ir_r2_k3_s1_e4_c24-ir_r2_k5_s2_e4_c32_se0.25-head_c64"


def _probe_main(conn: Any) -> None:
    """A process of its own that times the fixed network on request, as a worker times a candidate
    (its own interpreter: no lock shared with the search's threads)."""
    import torch

    from compactnas.evaluators.latency import latency_timer
    from compactnas.spaces import create_model

    torch.set_num_threads(1)
    model = create_model(FIXED, num_classes=10, in_chans=1)
    timer = latency_timer(model, (1, 8, 8), threads=1)
    while conn.recv() == "measure":
        # Median of three blocked measurements: one is at the mercy of a single busy spell.
        with torch.inference_mode():
            medians = sorted(timer.blocked_autorange(min_run_time=0.2).median for _ in range(3))
        conn.send(medians[1] * 1e3)


class Prober:
    """The fixed network's latency, measured in a separate process, optionally while ``quiet``."""

    def __init__(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_probe_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def measure(self, quiet: Any = None) -> float:
        import contextlib

        with (quiet or contextlib.nullcontext)():
            self.conn.send("measure")
            return float(self.conn.recv())

    def close(self) -> None:
        self.conn.send("stop")
        self.proc.join(timeout=10)


def _stats(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    return {
        "n": len(values),
        "median_ms": med,
        "p10_ms": sorted(values)[len(values) // 10],
        "mean_ms": statistics.fmean(values),
        "stdev_ms": statistics.stdev(values) if len(values) > 1 else 0.0,
        "spread": (max(values) - min(values)) / med if med else 0.0,
        "values_ms": values,
    }


def _trial_seconds(out: Path) -> float:
    """Seconds the search's candidates took to evaluate, summed (trials.csv): the work done, whatever
    was chosen. A candidate's own clock (train_seconds), not its trial's: a trial proposed ahead
    starts before a worker is free to run it."""
    import csv

    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return sum(float(r.get("train_seconds") or r["duration_s"] or 0) for r in rows)


def _search(
    out: Path,
    trials: int,
    epochs: int,
    workers: int,
    during: Any = None,
    sampler: str | None = None,
) -> dict:
    from compactnas.search import SearchConfig, run_search

    extra_cfg = {"sampler": sampler} if sampler else {}
    cfg = SearchConfig(
        out=str(out), trials=trials, epochs=epochs, seed=0, workers=workers, **extra_cfg
    )
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["result"] = run_search(cfg, quiet=True)
        except BaseException as e:  # noqa: BLE001 - reported below, in this thread
            box["error"] = e

    t0 = time.time()
    thread = threading.Thread(target=go)
    thread.start()
    extra = during(thread) if during is not None else {}
    thread.join()
    wall = time.time() - t0
    if "error" in box:
        raise box["error"]
    s = box["result"].summary
    busy = _trial_seconds(out)
    return {
        "workers": workers,
        "sampler": cfg.sampler,
        "wall_s": wall,
        "trial_seconds": busy,
        "trial_seconds_per_s": busy / wall,
        "n_trials": s["n_trials"],
        "n_complete": s["n_complete"],
        "candidates_per_min": 60.0 * s["n_trials"] / wall,
        **extra,
    }


def _alone(probe: Prober, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(probe.measure())
        time.sleep(PROBE_EVERY_S)  # the cadence of the probes during the search
    return out


def _time_during(probe: Prober) -> Any:
    from compactnas.search.backends.workers import current_gate

    def during(thread: threading.Thread) -> dict:
        gated: list[float] = []
        ungated: list[float] = []
        while thread.is_alive():
            gate = current_gate()
            if gate is None:  # workers not started yet, or already stopped
                time.sleep(0.2)
                continue
            gated.append(probe.measure(gate.exclusive))
            ungated.append(probe.measure())
            time.sleep(PROBE_EVERY_S)  # probes pause the workers: keep them rare
        return {
            "latency_gated": _stats(gated) if gated else None,
            "latency_ungated": _stats(ungated) if ungated else None,
        }

    return during


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None, help="latency measurements alone")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import torch

    from compactnas.search import SearchConfig

    torch.set_num_threads(1)
    trials = args.trials or (12 if args.quick else 24)
    epochs = args.epochs or (2 if args.quick else SearchConfig().epochs)
    default_workers = os.cpu_count() or 1
    # Written as each measurement ends (Results rewrites the file on every assignment).
    record = Results(args.out, {
        "quick": args.quick, "trials": trials, "epochs": epochs, "data": "digits",
        "fixed_arch": FIXED, "cpu_count": default_workers, "host": platform.node(),
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    })  # fmt: skip
    started = time.time()
    probe = Prober()
    for _ in range(2):  # warm-up: the first calls after start run slow
        probe.measure()
    alone = _alone(probe, args.repeats or 10)
    record["latency_alone"] = _stats(alone)
    root = Path(tempfile.mkdtemp(prefix="parallel-workers-"))
    try:
        record["one_worker"] = _search(root / "one", trials, epochs, 1)
        record["default_workers"] = _search(root / "default", trials, epochs, default_workers)
        # The default sampler proposes from results, so with several workers it proposes other
        # (larger or smaller) candidates than with one; random search proposes the same ones.
        record["same_candidates"] = {}
        for n in (1, default_workers):
            record["same_candidates"][str(n)] = _search(
                root / f"random{n}", trials, epochs, n, sampler="random"
            )
            record.save()  # a change inside a value: written here
        # Timing probes pause the workers, so they run in a search of their own.
        probed = _search(root / "probed", trials, epochs, default_workers, _time_during(probe))
        record["during_search"] = probed
        alone += _alone(probe, args.repeats or 10)
        record["latency_alone"] = _stats(alone)
    finally:
        probe.close()
        shutil.rmtree(root, ignore_errors=True)
    one, many = record["one_worker"], record["default_workers"]
    record["speedup"] = many["candidates_per_min"] / one["candidates_per_min"]
    record["work_speedup"] = many["trial_seconds_per_s"] / one["trial_seconds_per_s"]
    same = record["same_candidates"]
    record["speedup_same_candidates"] = (
        same[str(default_workers)]["candidates_per_min"] / same["1"]["candidates_per_min"]
    )
    alone = record["latency_alone"]["median_ms"]
    many = record["during_search"]
    gated = many.get("latency_gated")
    record["gated_vs_alone"] = gated["median_ms"] / alone - 1 if gated else None
    ungated = many.get("latency_ungated")
    record["ungated_vs_alone"] = ungated["median_ms"] / alone - 1 if ungated else None
    record["targets"] = {
        "speedup_at_least_1.7x": record["speedup"] >= 1.7,
        "same_candidates_speedup_at_least_1.7x": record["speedup_same_candidates"] >= 1.7,
        "latency_within_5pct": gated is not None and abs(record["gated_vs_alone"]) <= 0.05,
    }
    record["load_avg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    record["elapsed_s"] = time.time() - started
    record.finish()
    print(
        json.dumps(
            {
                k: record[k]
                for k in (
                    "speedup",
                    "work_speedup",
                    "speedup_same_candidates",
                    "gated_vs_alone",
                    "ungated_vs_alone",
                    "targets",
                )
            },
            indent=2,
        )
    )
    return record


def render(ctx: Any) -> list[str]:
    """The REPORT.md section (benchmarks/report.py calls it with the loaded results)."""
    return report_section(ctx.data.get("parallel_workers"))


def report_section(d: dict | None) -> list[str]:
    """The REPORT.md section, from the results file (None: not run)."""
    out = ["## Parallel workers", ""]
    if d is None:
        return out + ["Not run (no `parallel_workers.json`).", ""]
    out.append(
        f"digits, {d['trials']} trials x {d['epochs']} epochs, {d['cpu_count']} cores"
        f"{' (quick)' if d.get('quick') else ''}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in d.get('load_avg_at_start') or [])}."
    )
    out.append("")
    out += [
        "| run | sampler | workers | wall s | candidates/min | trial seconds per second |",
        "|---|---|---|---|---|---|",
    ]
    runs = [(k.replace("_", " "), d.get(k)) for k in ("one_worker", "default_workers")]
    runs += [("same candidates", r) for r in (d.get("same_candidates") or {}).values()]
    for label, r in runs:
        if r:
            busy = r.get("trial_seconds_per_s")
            out.append(
                f"| {label} | {r.get('sampler', 'random')} | {r['workers']} | {r['wall_s']:.1f} | "
                f"{r['candidates_per_min']:.2f} | {'n/a' if busy is None else f'{busy:.2f}'} |"
            )
    out.append("")
    lat = [("alone", d.get("latency_alone"))]
    many = d.get("during_search") or {}
    lat += [("during the parallel search, gated", many.get("latency_gated")),
            ("during the parallel search, not gated", many.get("latency_ungated"))]  # fmt: skip
    out += [
        "| fixed network latency | n | median ms | spread (max-min)/median |",
        "|---|---|---|---|",
    ]
    for label, s in lat:
        if s:
            out.append(f"| {label} | {s['n']} | {s['median_ms']:.4f} | {100 * s['spread']:.1f}% |")
    if "speedup" in d:
        if "speedup_same_candidates" in d:
            out += ["", f"Same candidates (random sampler): {d['speedup_same_candidates']:.2f}x; work done "
                    f"(trial seconds per second) with the default sampler: {d['work_speedup']:.2f}x. The default "
                    "sampler proposes from results, so with more workers it chooses other candidates, "
                    "whose training takes longer or shorter."]  # fmt: skip
        out += ["", f"Speedup {d['speedup']:.2f}x; gated latency {100 * (d['gated_vs_alone'] or 0):+.1f}% "
                f"vs alone. Targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in d['targets'].items()) + "."]  # fmt: skip
    return out + [""]


if __name__ == "__main__":
    main()
