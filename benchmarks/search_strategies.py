"""How many evaluations each search strategy needs, measured against the exact front of a real table.

Every strategy searches a table of architectures with known objectives (by default NAS-Bench-201:
CIFAR-100 accuracy against latency measured on a Raspberry Pi 4, 15,625 cells), so a candidate costs a
lookup, not a training run, and the found front can be compared with the exact one. The score after
each evaluation is the hypervolume ratio HV(found) / HV(exact), both with the reference point (the
table's lowest accuracy, its largest latency), objectives in the table's own units.

An evaluation is one distinct architecture (NAS-Bench-201 string) looked up: a strategy that proposes
an architecture again is told the value it already had, at no cost, as the search loop does. The
strategies run through ``compactnas.search.strategies.create_sampler`` over the ``edge_0..edge_5``
parameters of the NB201 space, asked and told in this process (W workers: W proposals asked before
the oldest is told).

    python benchmarks/search_strategies.py [--table PATH --accuracy COL --latency COL]
        [--budgets 25,50,100,200] [--seeds 20] [--strategies guided,random,...] [--workers 1] [--quick]

Writes benchmarks/results/search_strategies.json after every run, and search_strategies.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# _results sits beside this file, however the script is started
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "search_strategies.json"
PLOT = RESULTS.with_suffix(".png")
DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "nb201_hw.csv"
STRATEGIES = ("guided", "random", "nsga2-p8", "nsga2-p32", "nsga3", "tpe", "gp")
# Optuna's GP sampler costs seconds per proposal here: it runs on fewer seeds and a smaller budget.
SLOW = {"gp": (2, 50)}
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
TARGETS = (0.98, 0.99)


def cell_ops(arch: str) -> tuple[str, ...]:
    """NAS-Bench-201 notation -> the six ops in edge order."""
    nodes = arch.strip().strip("|").split("|+|")
    return tuple(t.split("~")[0] for node in nodes for t in node.strip("|").split("|"))


def hypervolume(acc: np.ndarray, lat: np.ndarray, ref: tuple[float, float]) -> float:
    """2-D hypervolume of (maximised accuracy, minimised latency) points above the reference."""
    order = np.lexsort((lat, -acc))
    total, best_lat = 0.0, ref[1]
    for i in order:
        if lat[i] < best_lat and acc[i] > ref[0]:
            total += (acc[i] - ref[0]) * (best_lat - lat[i])
            best_lat = lat[i]
    return total


class Table:
    def __init__(self, path: Path, accuracy: str, latency: str) -> None:
        df = pd.read_csv(path)
        missing = [c for c in ("arch", accuracy, latency) if c not in df.columns]
        if missing:
            sys.exit(f"error: {path} has no column(s) {', '.join(missing)}")
        df = df.dropna(subset=[accuracy, latency])
        self.path, self.columns = path, (accuracy, latency)
        # The table evaluator reports accuracy in [0, 1]; a percent column is scaled the same way here.
        self.acc = df[accuracy].to_numpy(float) * (0.01 if df[accuracy].max() > 1.0 else 1.0)
        self.lat = df[latency].to_numpy(float)
        self.ref = (float(self.acc.min()), float(self.lat.max()))
        self.index = {cell_ops(a): i for i, a in enumerate(df["arch"])}
        self.hv_exact = hypervolume(self.acc, self.lat, self.ref)
        order = np.lexsort((self.lat, -self.acc))
        running_best = np.minimum.accumulate(np.r_[np.inf, self.lat[order]])
        self.front_size = int((self.lat[order] < running_best[:-1]).sum())


def run_one(table: Table, strategy: str, seed: int, budget: int, workers: int) -> list[float]:
    """HV ratio after each distinct evaluation, for one strategy and seed.

    The search's own parts: the strategy from ``create_sampler``, candidates from the ``nb201`` space's
    ``sample(trial)``, scores from the ``table`` evaluator, repeats recognised by the architecture string.
    """
    import optuna

    from compactnas.evaluators import create_evaluator
    from compactnas.search.strategies import create_sampler
    from compactnas.spaces import create_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = create_space("nb201")
    data = _table_data(table.path)
    acc_col, lat_col = table.columns
    evaluator = create_evaluator("table", options={"accuracy": acc_col, "latency": lat_col})
    sampler = create_sampler(
        strategy, seed=seed, trials=budget, workers=workers, space_name="nb201"
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen: dict[str, tuple[float, float] | None] = {}
    points: list[tuple[float, float]] = []
    curve: list[float] = []
    hv_now, pending, asks = 0.0, [], 0
    while len(curve) < budget and asks < 20 * budget:
        while len(pending) < workers:
            trial = study.ask()
            asks += 1
            pending.append((trial, space.sample(trial)))
        trial, spec = pending.pop(0)
        arch, repeat = str(spec), str(spec) in seen
        if not repeat:
            try:
                r = evaluator.evaluate(None, spec, data)
                seen[arch] = (r["accuracy"], r["latency_ms"])
            except Exception:  # noqa: BLE001 - an architecture the table lacks fails its trial
                seen[arch] = None
        if seen[arch] is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, list(seen[arch]))
        if repeat:
            continue
        points.append(seen[arch])
        acc, lat = np.array(points).T
        hv_now = hypervolume(acc, lat, table.ref)
        curve.append(round(hv_now / table.hv_exact, 5))
    return curve


def run_loop(table: Table, seed: int, trials: int) -> float:
    """HV ratio of one whole ``compactnas search`` (default sampler, SQLite study, MLflow tracking)."""
    import tempfile

    from compactnas.search.study import run_search

    with tempfile.TemporaryDirectory() as out:
        config = {
            "space": "nb201",
            "data": f"table:{table.path}",
            "table_accuracy": table.columns[0],
            "table_latency": table.columns[1],
            "objectives": ["accuracy", "latency"],
            "trials": trials,
            "seed": seed,
            "out": out,
        }
        result = run_search(config, quiet=True)
        done = result.trials[result.trials["state"] == "COMPLETE"]
        acc, lat = done["accuracy"].to_numpy(float), done["latency_ms"].to_numpy(float)
    return round(hypervolume(acc, lat, table.ref) / table.hv_exact, 5)


_DATA: dict[Path, object] = {}


def _table_data(path: Path):
    from compactnas.core.data import load_data

    if path not in _DATA:
        _DATA[path] = load_data(f"table:{path}")
    return _DATA[path]


def summarise(curves: list[list[float]], budgets: list[int]) -> dict:
    n = min(len(c) for c in curves)
    budgets = [b for b in budgets if b <= n]
    arr = np.array([c[:n] for c in curves])
    out: dict = {"seeds": len(arr), "budgets": {}}
    for b in budgets:
        col = arr[:, b - 1]
        out["budgets"][str(b)] = {
            "median": round(float(np.median(col)), 4),
            "p10": round(float(np.percentile(col, 10)), 4),
            "p90": round(float(np.percentile(col, 90)), 4),
        }
    for target in TARGETS:
        reached = [int(np.argmax(c >= target)) + 1 if (c >= target).any() else None for c in arr]
        # (not reached within the budget counts as None)
        hits = sorted(r for r in reached if r is not None)
        # The median is defined only when at least half of the seeds got there within the budget.
        median = hits[len(arr) // 2] if len(hits) * 2 > len(arr) else None
        out[f"evals_to_{target}"] = {"median": median, "reached": f"{len(hits)}/{len(arr)}"}
    return out


def below_random(results: dict) -> None:
    """For each strategy, the evaluation counts at which its median ratio is below random search's
    (both over their own seeds, up to the shorter budget)."""
    strategies = results["strategies"]
    base = [c for c in strategies.get("random", {}).get("curves", []) if c]
    if not base:
        return
    n_base = min(len(c) for c in base)
    rand = np.median(np.array([c[:n_base] for c in base]), 0)
    for name, r in strategies.items():
        curves = [c for c in r.get("curves", []) if c]
        if name == "random" or not curves:
            continue
        n = min(n_base, *(len(c) for c in curves))
        med = np.median(np.array([c[:n] for c in curves]), 0)
        r["below_random_at"] = [int(k) + 1 for k in np.flatnonzero(med < rand[:n] - 1e-9)]


def _spans(ks: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out: list[str] = []
    for k in ks:
        if out and int(out[-1].split("-")[-1]) == k - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{k}"
        else:
            out.append(str(k))
    return ", ".join(out) or "never"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results["strategies"].items():
        curves = [c for c in r["curves"] if c]
        if not curves:
            continue
        n = max(len(c) for c in curves)
        arr = np.array([c + [c[-1]] * (n - len(c)) for c in curves])
        x = np.arange(1, n + 1)
        line = ax.plot(x, np.median(arr, 0), label=f"{name} ({len(arr)} seeds)")[0]
        lo, hi = np.percentile(arr, 10, 0), np.percentile(arr, 90, 0)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12)
    ax.set_xscale("log")
    ax.set_ylim(0.85, 1.0)
    ax.axhline(0.99, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume ratio (found / exact)")
    ax.set_title(results["table"]["name"])
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def slow_note(results: dict, name: str, seeds: int, top: int) -> None:
    """The note on a strategy of SLOW (fewer seeds, a smaller budget), with its measured cost per
    evaluation, and random search's when measured: replaces the note an earlier run left for it."""

    def per_eval(r: dict) -> float | None:
        n = sum(len(c) for c in r.get("curves", []))
        return sum(r.get("seconds", [])) / n if n else None

    own = per_eval(results["strategies"][name])
    if own is None:
        return
    rand = per_eval(results["strategies"].get("random", {}))
    note = (
        f"`{name}` runs {seeds} seed(s) up to {top} evaluations only: {own:.2f} s per evaluation "
        "here" + (f", against {rand:.4f} s for `random`." if rand else ".")
    )
    kept = [n for n in results["notes"] if not n.startswith(f"`{name}` runs ")]
    results["notes"] = [*kept, note]


def render(ctx) -> list[str]:
    """REPORT.md section (benchmarks/report.py's SECTIONS entry)."""
    results = ctx.data.get("search_strategies")
    if not results:
        return ["## Search strategies against an exact front", "", "Not run.", ""]
    plot_path = ctx.results / PLOT.name
    image = ctx.img(plot_path, "ratio against evaluations") if plot_path.exists() else None
    return report_section(results, image).splitlines() + [""]


def report_section(results: dict, image: str | None = None) -> str:
    """The REPORT.md section: median (10th-90th percentile) ratio per budget, evaluations to targets."""
    t = results["table"]
    budgets = [int(b) for b in results["budgets"]]
    lines = [
        "## Search strategies against an exact front",
        "",
        f"Table `{t['name']}`: {t['accuracy']} (maximised) against {t['latency']} (minimised), "
        f"{t['rows']} architectures, reference point (lowest accuracy, largest latency), "
        f"{t['front_size']} cells on the exact front. Hypervolume ratio = HV(found) / HV(exact) after "
        f"N distinct evaluations; median (10th-90th percentile) over seeds; {results['workers']} "
        f"worker(s); path: {results['path']}.",
        "",
        "| strategy | seeds | "
        + " | ".join(f"@{b}" for b in budgets)
        + "".join(f" | evals to {x}" for x in TARGETS)
        + " | median below random at |",
        "| --- | --- |" + " --- |" * (len(budgets) + 3),
    ]
    for name, r in results["strategies"].items():
        s = r.get("summary")
        if not s:
            continue
        cells = []
        for b in budgets:
            v = s["budgets"].get(str(b))
            cells.append(f"{v['median']:.3f} ({v['p10']:.3f}-{v['p90']:.3f})" if v else "-")
        top = max(int(b) for b in s["budgets"])
        reach = [
            f"{s[f'evals_to_{x}']['median'] or '>' + str(top)} ({s[f'evals_to_{x}']['reached']})"
            for x in TARGETS
        ]
        below = "-" if name == "random" else _spans(r.get("below_random_at", []))
        lines.append(f"| {name} | {s['seeds']} | " + " | ".join(cells + reach + [below]) + " |")
    lines += ["", *results.get("notes", [])] if results.get("notes") else []
    runs = results.get("search_command") or []
    if runs:
        ratios = ", ".join(f"seed {r['seed']}: {r['ratio']:.3f}" for r in runs)
        lines += [
            "",
            f"Whole searches (`compactnas search --space nb201 --data table:... --objectives "
            f"accuracy,latency --trials {runs[0]['trials']} --seed S`, default sampler, SQLite study, "
            f"MLflow tracking): {ratios}.",
        ]
    lines += [
        "",
        f"Run: `{results['command']}` in {results.get('elapsed_s', 0) / 60:.1f} min ({results['note']}).",
        "",
    ]
    if image:
        lines += [image, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("--accuracy", default="cifar100_test_acc")
    ap.add_argument("--latency", default="raspi4_ms")
    ap.add_argument("--budgets", default="25,50,100,200")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--loop-seeds", type=int, default=5, help="full `compactnas search` runs of the default (5)"
    )
    ap.add_argument("--loop-trials", type=int, default=100)
    ap.add_argument(
        "--quick", action="store_true", help="budgets 25,50,100, 5 seeds, no GP, 1 full search"
    )
    args = ap.parse_args(argv)
    if not args.table.is_file():
        print(
            f"error: table {args.table} is absent (see ../shared/data/README.md)", file=sys.stderr
        )
        return 2
    budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.quick:
        budgets, args.seeds = [b for b in budgets if b <= 100] or [25, 50, 100], 5
        strategies = [s for s in strategies if s != "gp"]
        args.loop_seeds = min(args.loop_seeds, 1)
    table = Table(args.table, args.accuracy, args.latency)
    results = {
        "table": {
            "name": args.table.name,
            "accuracy": args.accuracy,
            "latency": args.latency,
            "rows": len(table.acc),
            "front_size": table.front_size,
            "reference": list(table.ref),
            "hv_exact": table.hv_exact,
        },
        "budgets": budgets,
        "workers": args.workers,
        "path": "optuna ask/tell over the nb201 parameters with create_sampler, table lookup",
        "command": "python benchmarks/search_strategies.py " + " ".join(argv or sys.argv[1:]),
        "note": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start",
        "strategies": {},
        "search_command": [],
        "notes": [],
    }
    if not strategies and RESULTS.exists():
        # Only whole searches asked for: keep the strategies already measured.
        kept = json.loads(RESULTS.read_text())
        results["strategies"], results["budgets"] = kept["strategies"], kept["budgets"]
        results["elapsed_s"] = kept.get("elapsed_s", 0)
        results["notes"] = kept.get("notes", [])
        results["command"] = kept["command"] + " ; " + results["command"]
        results["kept_from_commit"] = kept.get("commit", "unknown")
    if strategies and RESULTS.exists():
        # Strategies measured before on the same table and budgets stay; those run now are replaced.
        kept = json.loads(RESULTS.read_text())
        if kept.get("table") == results["table"] and kept.get("budgets") == budgets:
            results["strategies"] = {
                k: v for k, v in kept.get("strategies", {}).items() if k not in strategies
            }
            results["search_command"] = kept.get("search_command", [])
            results["notes"] = kept.get("notes", [])
            results["kept_from_commit"] = kept.get("commit", "unknown")
    # Written as it measures: Results rewrites the file on every assignment and on save().
    results = Results(RESULTS, results)
    started = time.time() - results.get("elapsed_s", 0)
    for name in strategies:
        seeds, top = SLOW.get(name, (args.seeds, max(budgets)))
        seeds, top = min(seeds, args.seeds), min(top, max(budgets))
        entry = results["strategies"][name] = {"curves": [], "seconds": [], "cpu_seconds": []}
        for seed in range(seeds):
            t0, c0 = time.time(), time.process_time()
            entry["curves"].append(run_one(table, name, seed, top, args.workers))
            entry["seconds"].append(round(time.time() - t0, 2))
            entry["cpu_seconds"].append(round(time.process_time() - c0, 2))
            entry["summary"] = summarise(entry["curves"], budgets)
            below_random(results)
            if name in SLOW:
                slow_note(results, name, seeds, top)
            results["elapsed_s"] = round(time.time() - started, 1)
            results.save()
        s = entry["summary"]["budgets"]
        print(
            name,
            {b: v["median"] for b, v in s.items()},
            f"{sum(entry['seconds']):.0f}s",
            flush=True,
        )
    # Whole searches run now replace those of the same seeds and budget kept from an earlier run.
    results["search_command"] = [
        r
        for r in results["search_command"]
        if not (r["seed"] < args.loop_seeds and r["trials"] == args.loop_trials)
    ]
    for seed in range(args.loop_seeds):
        t0 = time.time()
        ratio = run_loop(table, seed, args.loop_trials)
        results["search_command"].append(
            {
                "seed": seed,
                "trials": args.loop_trials,
                "ratio": ratio,
                "seconds": round(time.time() - t0, 1),
            }
        )
        results["elapsed_s"] = round(time.time() - started, 1)
        results.save()
        print(f"compactnas search seed {seed}: ratio {ratio:.4f}", flush=True)
    plot(results, PLOT)
    results.finish()
    print(report_section(results, f"![ratio against evaluations](results/{PLOT.name})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
