"""How well each cheap accuracy signal ranks NAS-Bench-201 cells against their exact accuracy.

    python benchmarks/signal_fidelity.py [--cells 1000] [--batch 64] [--quick] [--out PATH]

1. ``--cells`` NAS-Bench-201 cells drawn at random (seed 0) from ../shared/data/nb201/nb201_hw.csv,
   each built at the table's size (16/32/64 channels, five cells per stage) with a 10-class head.
2. One minibatch of ``--batch`` CIFAR-10 training images from cifar10_20k.npz (the first images of the
   package's own split and normalisation), the same for every cell; every network is initialised under
   ``torch.manual_seed(0)``.
3. Every zero-cost proxy of ``compactnas.evaluators.zerocost`` (seconds per cell each), and the rank
   votes named in VOTES, fixed before any cell was scored (not chosen on this table).
4. Spearman and Kendall of each signal against the table's ``cifar100_test_acc`` (200 epochs, exact),
   beside the published figures for the same space and accuracy.

Each cell's scores go to results/signal_fidelity.json as they are measured; a rerun resumes with the
cells still missing. ``--quick``: 60 cells (about 3 minutes here). The full 1,000 cells take about
40 minutes on this 2-core machine. Not measured here yet: 1-, 3- and 10-epoch training and the
supernet's inherited accuracy as signals (the issue's costlier rows).
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import Results  # noqa: E402
from scipy import stats  # noqa: E402

from compactnas.core.data import load_data  # noqa: E402
from compactnas.evaluators import zerocost  # noqa: E402
from compactnas.spaces.build import create_model  # noqa: E402
from compactnas.spaces.nb201 import parse_nb201_string  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"
# Rank votes, fixed in advance: all six published proxies; the three the literature ranks highest on
# this space (synflow, NASWOT, MeCo); Abdelfattah et al.'s vote (synflow, jacov, snip).
VOTES = {
    "vote_all": ("synflow", "naswot", "jacov", "grad_norm", "snip", "meco"),
    "vote_top3": ("synflow", "naswot", "meco"),
    "vote_abdelfattah": ("synflow", "jacov", "snip"),
}
# Spearman against NAS-Bench-201 CIFAR-100 accuracy as published (ranges over papers' reruns).
PUBLISHED = {
    "synflow": "0.74-0.76",
    "naswot": "0.70-0.73 (with jacov)",
    "jacov": "0.70-0.73",
    "params": "about 0.73",
    "vote_abdelfattah": "0.82-0.83",
    "meco": "0.89",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=SHARED / "nb201" / "nb201_hw.csv")
    p.add_argument("--data", type=Path, default=SHARED / "cifar10_20k.npz")
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    for path in (args.table, args.data):
        if not path.is_file():
            print(f"signal_fidelity: no data at {path} (../shared/data is absent): skipped")
            return 0
    if args.quick:
        args.cells = 60
    out = args.out or ROOT / "results" / f"signal_fidelity{'_quick' if args.quick else ''}.json"
    torch.set_num_threads(args.threads)
    with args.table.open() as f:
        rows = list(csv.DictReader(f))
    chosen = random.Random(0).sample(rows, args.cells)
    data = load_data(f"npz:{args.data}", seed=0)
    x, y = data.train.x[: args.batch], data.train.y[: args.batch]
    res = Results(out, resume=True, initial={
        "table": args.table.name, "accuracy": "cifar100_test_acc", "cells": args.cells,
        "batch": args.batch, "threads": args.threads, "votes": {k: list(v) for k, v in VOTES.items()},
        "published_spearman": PUBLISHED,
    })  # fmt: skip
    scored = res.setdefault("scores", {})
    t_start = time.time()
    for i, row in enumerate(chosen):
        if row["arch"] in scored:
            continue
        torch.manual_seed(0)
        model = create_model(parse_nb201_string(row["arch"]), num_classes=10, in_chans=3)
        timings: dict[str, float] = {}
        values = zerocost.score(model, x, y, timings=timings)
        scored[row["arch"]] = {
            "accuracy": float(row["cifar100_test_acc"]),
            "proxies": values,
            "seconds": {k: round(v, 4) for k, v in timings.items()},
        }
        res.save()
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(chosen)} cells, {time.time() - t_start:.0f} s", flush=True)
    res["summary"] = summarise(scored)
    res.finish()
    for name, s in res["summary"].items():
        print(f"{name:18s} spearman {s['spearman']:+.3f}  kendall {s['kendall']:+.3f}  "
              f"{s['seconds_per_cell']:.2f} s/cell")  # fmt: skip
    return 0


def summarise(scored: dict[str, dict]) -> dict[str, dict[str, float]]:
    cells = list(scored.values())
    acc = [c["accuracy"] for c in cells]
    table = [c["proxies"] for c in cells]
    signals = {name: [row[name] for row in table] for name in zerocost.PROXIES}
    seconds = {name: statistics.fmean(c["seconds"][name] for c in cells) for name in signals}
    for vote, names in VOTES.items():
        signals[vote] = zerocost.rank_vote(table, names)
        seconds[vote] = sum(seconds[n] for n in names)
    out = {}
    for name, values in signals.items():
        # a proxy that could not be computed for a cell (nan) ranks it last, as the vote does
        ranked = zerocost.ranks(values)
        out[name] = {
            "spearman": round(float(stats.spearmanr(ranked, acc).statistic), 4),
            "kendall": round(float(stats.kendalltau(ranked, acc).statistic), 4),
            "seconds_per_cell": round(seconds[name], 4),
            "nan_cells": sum(v != v for v in values),
        }
    return out


if __name__ == "__main__":
    raise SystemExit(main())


def render(ctx: object) -> list[str]:
    """The REPORT.md section, from results/signal_fidelity.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("signal_fidelity")  # type: ignore[attr-defined]
    out = ["## Zero-cost proxies against NAS-Bench-201's exact accuracy", ""]
    if not d or "summary" not in d:
        return out + ["Not run (no complete `signal_fidelity.json`).", ""]
    n = len(d["scores"])
    out.append(
        f"{n:,} random NAS-Bench-201 cells (seed 0), one minibatch of {d['batch']} cifar10_20k "
        f"images, initialisation under seed 0, {d['threads']} torch thread(s); ranked against "
        f"`{d['accuracy']}` of {d['table']}; commit {str(d.get('commit', 'unknown'))[:12]}. "
        "The votes' members were fixed before any cell was scored."
    )
    out += ["", "| signal | Spearman | Kendall | s per cell | published Spearman |",
            "|---|---|---|---|---|"]  # fmt: skip
    for name, s in sorted(d["summary"].items(), key=lambda kv: -kv[1]["spearman"]):
        members = d["votes"].get(name)
        label = f"{name} ({', '.join(members)})" if members else name
        out.append(f"| {label} | {s['spearman']:.3f} | {s['kendall']:.3f} | "
                   f"{s['seconds_per_cell']:.2f} | {d['published_spearman'].get(name, '')} |")  # fmt: skip
    return out + [""]
