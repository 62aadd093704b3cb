"""Search quality: the search's default sampler against random search at an equal trial budget.

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from compactnas.core.data import load_data
from compactnas.search import SearchConfig, run_search
from compactnas.search.objectives import resolve_objectives
from compactnas.search.results import hypervolume, pareto_front, to_minimisation

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # _results beside this file, however started
from _results import Results  # noqa: E402

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
    default = SearchConfig().sampler
    samplers = (default, "random")
    objectives = resolve_objectives(("accuracy", "latency", "size"))
    res = Results(args.out, {
        "benchmark": "search_quality",
        "data": "digits",
        "default_sampler": default,
        "settings": {"trials": trials, "epochs": epochs, "seeds": args.seeds, "population": 8,
                     "quick": args.quick},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version()},
    })  # fmt: skip
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
                # Every run so far, scored against one reference point, saved before the next starts.
                res.update(summarise(runs, samplers, objectives))
                print(
                    f"{sampler:>6} seed {seed}: {r.summary['n_complete']} complete in {elapsed:.0f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res.finish()
    print(
        json.dumps(
            {k: res[k] for k in ("samplers", "hypervolume_ratio_default_over_random", "verdict")},
            indent=2,
        )
    )
    return dict(res)


def summarise(runs: list[dict], samplers: tuple[str, ...], objectives: Any) -> dict:
    """Hypervolumes of ``runs`` on one reference point (1.1 x the worst value seen in any of them)."""
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
        if len(hv):
            stats[s] = {
                "hypervolume_mean": float(hv.mean()),
                "hypervolume_std": float(hv.std()),
                "candidates_per_min_mean": float(cpm.mean()),
            }
    default, ratio, verdict = samplers[0], None, None
    if default in stats and "random" in stats:
        a, b = stats[default], stats["random"]
        ratio = a["hypervolume_mean"] / b["hypervolume_mean"]
        lead = a["hypervolume_mean"] - b["hypervolume_mean"]
        spread = max(a["hypervolume_std"], b["hypervolume_std"])
        verdict = {
            "lead": lead,
            "spread": spread,  # the larger standard deviation over seeds of the two
            "ahead_by_more_than_spread": bool(lead > spread),
        }
    return {
        "reference_point": {
            "error": float(ref[0]),
            "latency_ms": float(ref[1]),
            "size_bytes": float(ref[2]),
        },
        "samplers": stats,
        "hypervolume_ratio_default_over_random": ratio,
        "verdict": verdict,
        "runs": per_run,
    }


if __name__ == "__main__":
    main()
