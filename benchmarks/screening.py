"""Zero-cost screening against the plain search, on NAS-Bench-201 tables where every value is exact.

    python benchmarks/screening.py [--pairs raspi4_ms,pixel3_ms,gold_6226_ms] [--seeds 5]
        [--screen 10] [--picks front,sampler] [--trials 50] [--plain-trials 100] [--threads 1]
        [--quick]

For each latency column (paired with the table's ``cifar100_test_acc``) and each seed, whole
``compactnas search`` runs on the table (default sampler, SQLite study, MLflow tracking):

- plain: ``--plain-trials`` (100) looked-up candidates, today's default;
- screened, once per ``screen_pick`` rule in ``--picks``: ``--screen N --trials 50``: before each of
  the 50 looked-up candidates the sampler proposes N, scored by the default proxies on one minibatch
  of cifar10_20k images (built at the table's size), and the rule picks the one looked up.

The score after each distinct evaluation is search_strategies' measure: HV(found) / HV(exact) of
(accuracy, latency), reference point (the table's lowest accuracy, its largest latency). A looked-up
cell stands in for a trained one, so "evaluations" here are what trained candidates are in a search.
``raspi4_ms`` is the table the default sampler was developed on; ``pixel3_ms`` and ``gold_6226_ms``
(from nb201_more_devices.csv) are other devices' latencies it was never tuned on.

Each run's curve goes to results/screening.json as it finishes; a rerun skips the runs already there.
``--quick``: one pair, two seeds, N 5 (about 10 minutes here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _results import Results  # noqa: E402
from search_strategies import hypervolume  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"
ACCURACY = "cifar100_test_acc"
BUDGETS = (10, 25, 50, 100)


def joined_table(latency: str, cache: Path) -> Path:
    """A CSV of arch, accuracy and one latency column, from nb201_hw.csv and nb201_more_devices.csv."""
    hw = pd.read_csv(SHARED / "nb201" / "nb201_hw.csv")
    if latency not in hw.columns:
        more = pd.read_csv(SHARED / "nb201" / "nb201_more_devices.csv")
        if latency not in more.columns:
            sys.exit(f"screening: no latency column {latency!r} in the NB201 tables")
        hw = hw[["index", "arch", ACCURACY]].merge(more[["index", latency]], on="index")
    path = cache / f"nb201_{latency}.csv"
    hw[["arch", ACCURACY, latency]].to_csv(path, index=False)
    return path


def curve(trials: pd.DataFrame, ref: tuple[float, float], hv_exact: float) -> list[float]:
    """HV ratio after each distinct evaluation, in the order the search made them."""
    done = trials[(trials["state"] == "COMPLETE") & trials["duplicate_of"].isna()]
    done = done.sort_values("trial")
    acc, lat = done["accuracy"].to_numpy(float), done["latency_ms"].to_numpy(float)
    return [
        round(hypervolume(acc[: i + 1], lat[: i + 1], ref) / hv_exact, 5) for i in range(len(acc))
    ]


def run(
    table: Path, latency: str, seed: int, trials: int, screen: int, pick: str, threads: int
) -> dict:
    from compactnas.search.study import run_search

    with tempfile.TemporaryDirectory() as out:
        config = {
            "space": "nb201",
            "data": f"table:{table}",
            "table_accuracy": ACCURACY,
            "table_latency": latency,
            "objectives": ["accuracy", "latency"],
            "trials": trials,
            "seed": seed,
            "out": out,
            "threads": threads,
        }
        if screen > 1:
            config.update(
                screen=screen, screen_pick=pick, screen_data=f"npz:{SHARED / 'cifar10_20k.npz'}"
            )
        t0 = time.time()
        result = run_search(config, quiet=True)
        seconds = time.time() - t0
        screened = Path(out) / "screened.csv"
        scored = len(pd.read_csv(screened)) if screened.is_file() else 0
        return {"trials": result.trials, "seconds": round(seconds, 1), "proxy_scored": scored}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default="raspi4_ms,pixel3_ms,gold_6226_ms")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--screen", type=int, default=10)
    p.add_argument("--picks", default="front,sampler", help="screen_pick rules, each its own run")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--plain-trials", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if (
        not (SHARED / "nb201" / "nb201_hw.csv").is_file()
        or not (SHARED / "cifar10_20k.npz").is_file()
    ):
        print("screening: ../shared/data is absent: skipped")
        return 0
    pairs = [c.strip() for c in args.pairs.split(",") if c.strip()]
    picks = [c.strip() for c in args.picks.split(",") if c.strip()]
    if args.quick:
        pairs, args.seeds, args.screen = pairs[:1], 2, 5
    out = args.out or ROOT / "results" / f"screening{'_quick' if args.quick else ''}.json"
    import torch

    torch.set_num_threads(args.threads)
    res = Results(out, resume=True, initial={
        "accuracy": ACCURACY, "screen": args.screen, "trials": args.trials,
        "plain_trials": args.plain_trials, "seeds": args.seeds, "threads": args.threads,
        "command": "python benchmarks/screening.py " + " ".join(argv or sys.argv[1:]),
    })  # fmt: skip
    runs = res.setdefault("runs", {})
    cache = ROOT / ".cache"
    cache.mkdir(exist_ok=True)
    for latency in pairs:
        table = joined_table(latency, cache)
        df = pd.read_csv(table)
        acc, lat = df[ACCURACY].to_numpy(float) / 100.0, df[latency].to_numpy(float)
        ref = (float(acc.min()), float(lat.max()))
        hv_exact = hypervolume(acc, lat, ref)
        for seed in range(args.seeds):
            for kind, trials, screen, pick in (
                ("plain", args.plain_trials, 0, ""),
                *(
                    (f"screen{args.screen}-{pick}", args.trials, args.screen, pick)
                    for pick in picks
                ),
            ):
                key = f"{latency}/{kind}/seed{seed}"
                if key in runs:
                    continue
                r = run(table, latency, seed, trials, screen, pick, args.threads)
                runs[key] = {
                    "curve": curve(r["trials"], ref, hv_exact),
                    "seconds": r["seconds"],
                    "proxy_scored": r["proxy_scored"],
                }
                res["summary"] = summarise(runs, args)
                res.save()
                c = runs[key]["curve"]
                print(f"{key}: {len(c)} evaluations, HV ratio {c[-1]:.4f}, {r['seconds']:.0f} s",
                      flush=True)  # fmt: skip
    res["summary"] = summarise(runs, args)
    res.finish()
    for line in render_summary(res["summary"]):
        print(line)
    return 0


def summarise(runs: dict, args: argparse.Namespace) -> dict:
    """Median HV ratio at each budget, per latency column and kind of run, over every run recorded
    (runs of earlier invocations with other --pairs or --picks included)."""
    out: dict = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for key in runs:
        latency, kind, _ = key.split("/")
        groups.setdefault((latency, kind), []).append(key)
    for (latency, kind), keys in sorted(groups.items()):
        curves = [runs[k]["curve"] for k in keys]
        limit = args.plain_trials if kind == "plain" else args.trials
        entry = {  # a run with duplicates made fewer distinct evaluations: its last value counts
            str(b): round(statistics.median(c[min(b, len(c)) - 1] for c in curves), 5)
            for b in BUDGETS
            if b <= limit
        }
        entry["runs"] = len(curves)
        entry["seconds"] = round(float(np.median([runs[k]["seconds"] for k in keys])), 1)
        out.setdefault(latency, {})[kind] = entry
    return out


def render_summary(summary: dict) -> list[str]:
    lines = []
    for latency, entry in summary.items():
        for kind, s in entry.items():
            lines.append(f"{latency:14s} {kind:9s} " + "  ".join(f"{k}: {v}" for k, v in s.items()))
    return lines


if __name__ == "__main__":
    raise SystemExit(main())


def render(ctx: object) -> list[str]:
    """The REPORT.md section, from results/screening.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("screening")  # type: ignore[attr-defined]
    out = ["## Zero-cost screening against the plain search (NAS-Bench-201 tables)", ""]
    if not d or not d.get("summary"):
        return out + ["Not run (no `screening.json` with a summary).", ""]
    out.append(
        f"Whole `compactnas search` runs on the table (default sampler): plain with "
        f"{d['plain_trials']} looked-up candidates, screened with `--screen {d['screen']}` and "
        f"{d['trials']} (each looked-up candidate picked from {d['screen']} proxy-scored proposals, "
        "vote of synflow, naswot and meco on 64 cifar10_20k images). Median over seeds of "
        "HV(found) / HV(exact) of (accuracy, latency) after each number of distinct evaluations; "
        f"`{d['accuracy']}` with the latency column named; {d['threads']} torch thread(s); commit "
        f"{str(d.get('commit', 'unknown'))[:12]}."
    )
    out += ["", "| latency | run | seeds | @10 | @25 | @50 | @100 | median s per search |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for latency, entry in d["summary"].items():
        for kind, s in entry.items():
            cells = [f"{s[b]:.4f}" if b in s else "" for b in ("10", "25", "50", "100")]
            out.append(f"| {latency} | {kind} | {s['runs']} | {' | '.join(cells)} | "
                       f"{s['seconds']:.0f} |")  # fmt: skip
    out.append("")
    for latency, entry in d["summary"].items():
        plain = entry.get("plain", {}).get("100")
        for kind, s in entry.items():
            if kind != "plain" and plain is not None and "50" in s:
                verdict = "reaches" if s["50"] >= plain else "falls short of"
                out.append(f"- {latency}, {kind}: at 50 evaluations {s['50']:.4f}, {verdict} the "
                           f"plain search's {plain:.4f} at 100 ({s['50'] - plain:+.4f}).")  # fmt: skip
    return out + [""]
