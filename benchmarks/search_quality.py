"""Search quality: the default sampler (NSGA-II) against random search at an equal trial budget.

Every search runs on digits with the same settings but the sampler; hypervolume is computed on
normalised objectives (error, latency, size) with one reference point shared by all runs (1.1 x the
worst value seen in any run), so the numbers compare. Also reports candidates evaluated per minute.

    python benchmarks/search_quality.py [--quick] [--seeds 3] [--trials 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from compactnas.core.data import load_data
from compactnas.search import SearchConfig, run_search
from compactnas.search.objectives import resolve_objectives
from compactnas.search.results import hypervolume, pareto_front, to_minimisation

RESULTS = Path(__file__).parent / "results" / "search_quality.json"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller budget for a 2-core machine")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    trials = args.trials or (24 if args.quick else 60)
    epochs = args.epochs or (6 if args.quick else 15)
    samplers = ("nsga2", "random")
    objectives = resolve_objectives(("accuracy", "latency", "size"))
    work = Path(tempfile.mkdtemp(prefix="cnas-bench-"))
    runs = []
    try:
        for seed in range(args.seeds):
            data = load_data("digits", seed=seed)
            for sampler in samplers:
                cfg = SearchConfig(
                    trials=trials, epochs=epochs, sampler=sampler, seed=seed, population=8,
                    out=str(work / f"{sampler}-{seed}"),
                )  # fmt: skip
                t0 = time.time()
                r = run_search(cfg, data=data, quiet=True)
                elapsed = time.time() - t0
                complete = r.trials[r.trials.state == "COMPLETE"]
                runs.append(
                    {
                        "sampler": sampler,
                        "seed": seed,
                        "complete": complete,
                        "elapsed_s": elapsed,
                        "n_trials": r.summary["n_trials"],
                        "n_complete": r.summary["n_complete"],
                        "best_accuracy": float(complete["accuracy"].max()),
                        "best_test_accuracy_on_front": max(
                            (f.get("test_accuracy", 0.0) for f in r.summary["pareto"]), default=0.0
                        ),
                    }
                )
                print(
                    f"{sampler:>6} seed {seed}: {r.summary['n_complete']} complete in {elapsed:.0f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # One reference point for all runs.
    every = np.vstack([to_minimisation(r["complete"], objectives) for r in runs])
    ref = every.max(axis=0) * 1.1
    ref[0] = 1.0  # error
    per_run = []
    for r in runs:
        front = pareto_front(r["complete"], objectives)
        hv = hypervolume(to_minimisation(front, objectives), ref)
        per_run.append(
            {k: v for k, v in r.items() if k != "complete"}
            | {"hypervolume": hv, "candidates_per_min": r["n_trials"] / (r["elapsed_s"] / 60)}
        )
    stats = {}
    for s in samplers:
        hv = np.array([r["hypervolume"] for r in per_run if r["sampler"] == s])
        cpm = np.array([r["candidates_per_min"] for r in per_run if r["sampler"] == s])
        stats[s] = {
            "hypervolume_mean": float(hv.mean()),
            "hypervolume_std": float(hv.std()),
            "candidates_per_min_mean": float(cpm.mean()),
        }
    result = {
        "benchmark": "search_quality",
        "data": "digits",
        "settings": {
            "trials": trials,
            "epochs": epochs,
            "seeds": args.seeds,
            "population": 8,
            "quick": args.quick,
        },
        "reference_point": {
            "error": float(ref[0]),
            "latency_ms": float(ref[1]),
            "size_bytes": float(ref[2]),
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "samplers": stats,
        "hypervolume_ratio_nsga2_over_random": stats["nsga2"]["hypervolume_mean"]
        / stats["random"]["hypervolume_mean"],
        "runs": per_run,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("samplers", "hypervolume_ratio_nsga2_over_random")}, indent=2
        )
    )
    return result


if __name__ == "__main__":
    main()
