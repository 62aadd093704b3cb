"""Ray scaling: the same search on the local backend, on Ray with one worker and with two.

All three runs evaluate the same candidates (random sampler, same seed; latency predicted for the
rpi4 profile so concurrent trials do not disturb each other's timing) at the same budget. Reports wall
time, speedup of two workers over one, and Ray's per-trial overhead against the local backend.

    python benchmarks/ray_scaling.py [--quick] [--trials 16] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "ray_scaling.json"


def _run(cfg_kwargs: dict, out: Path) -> dict:
    from compactnas.search import SearchConfig, run_search

    t0 = time.time()
    r = run_search(SearchConfig(out=str(out), **cfg_kwargs), quiet=True)
    wall = time.time() - t0
    trained = r.trials[r.trials.state == "COMPLETE"]
    return {
        "wall_s": wall,
        "n_trials": r.summary["n_trials"],
        "n_complete": r.summary["n_complete"],
        "train_s_sum": float(trained["train_seconds"].sum())
        if "train_seconds" in trained
        else None,
        "archs": sorted(r.trials["arch"].dropna().tolist()),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    trials = args.trials or 16
    epochs = args.epochs or (6 if args.quick else 15)
    base = dict(trials=trials, epochs=epochs, sampler="random", seed=0, device="rpi4")
    work = Path(tempfile.mkdtemp(prefix="cnas-ray-"))
    runs = {}
    try:
        runs["local"] = _run(base, work / "local")
        print(f"local: {runs['local']['wall_s']:.1f} s", flush=True)
        for workers in (1, 2):
            runs[f"ray_{workers}"] = _run(
                {**base, "backend": "ray", "concurrency": workers}, work / f"ray{workers}"
            )
            print(f"ray x{workers}: {runs[f'ray_{workers}']['wall_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    same = runs["local"]["archs"] == runs["ray_1"]["archs"] == runs["ray_2"]["archs"]
    result = {
        "benchmark": "ray_scaling",
        "settings": {
            "trials": trials,
            "epochs": epochs,
            "sampler": "random",
            "device": "rpi4",
            "quick": args.quick,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "same_candidates_in_all_runs": same,
        "wall_s": {k: round(v["wall_s"], 2) for k, v in runs.items()},
        "complete": {k: v["n_complete"] for k, v in runs.items()},
        "speedup_2_workers_over_1": runs["ray_1"]["wall_s"] / runs["ray_2"]["wall_s"],
        "speedup_2_workers_over_local": runs["local"]["wall_s"] / runs["ray_2"]["wall_s"],
        "ray_overhead_per_trial_s": (runs["ray_1"]["wall_s"] - runs["local"]["wall_s"]) / trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=2))
    return result


if __name__ == "__main__":
    main()
