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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # _results beside this file, however started
from _results import Results  # noqa: E402

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
    res = Results(args.out, {
        "benchmark": "ray_scaling",
        "settings": {"trials": trials, "epochs": epochs, "sampler": "random", "device": "rpi4",
                     "quick": args.quick},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
    })  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="cnas-ray-"))
    runs: dict[str, dict] = {}
    try:
        for name, extra in (
            ("local", {}),
            ("ray_1", {"backend": "ray", "concurrency": 1}),
            ("ray_2", {"backend": "ray", "concurrency": 2}),
        ):
            runs[name] = _run({**base, **extra}, work / name)
            res.update(_compare(runs, trials))  # each run saved before the next starts
            print(f"{name}: {runs[name]['wall_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res.finish()
    print(json.dumps({k: v for k, v in res.items() if k not in ("machine",)}, indent=2))
    return dict(res)


def _compare(runs: dict[str, dict], trials: int) -> dict:
    """Wall times of the runs so far, and the ratios whose runs are both done."""
    out: dict = {
        "wall_s": {k: round(v["wall_s"], 2) for k, v in runs.items()},
        # Trials completed per run ("complete" is the file's own flag, set by Results.finish()).
        "completed_trials": {k: v["n_complete"] for k, v in runs.items()},
    }
    if "ray_1" in runs:
        out["ray_overhead_per_trial_s"] = (
            runs["ray_1"]["wall_s"] - runs["local"]["wall_s"]
        ) / trials
    if "ray_2" in runs:
        out["same_candidates_in_all_runs"] = (
            runs["local"]["archs"] == runs["ray_1"]["archs"] == runs["ray_2"]["archs"]
        )
        out["speedup_2_workers_over_1"] = runs["ray_1"]["wall_s"] / runs["ray_2"]["wall_s"]
        out["speedup_2_workers_over_local"] = runs["local"]["wall_s"] / runs["ray_2"]["wall_s"]
    return out


if __name__ == "__main__":
    main()
