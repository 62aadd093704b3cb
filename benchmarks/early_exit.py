"""Early exits: accuracy against expected latency. Each model is trained with exits after two of its
stages (``ex``), the exits fitted on its frozen features, then for each confidence threshold: where
the test images leave, the accuracy of the answers given there, and the expected and worst-case
latency predicted for rpi4 and stm32f746 beside the same network without exits.

    python benchmarks/early_exit.py [--data digits] [--epochs 15]

Writes results/early_exit.json as each model is measured. About 3 minutes on digits (2 cores).
The goal (issue: the rest of the compression toolbox): expected latency below the network without
exits at no more than 1 point of accuracy lost.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results  # noqa: E402

ROOT = Path(__file__).resolve().parent
# Networks of the mobile and squeeze spaces' kinds, each with exits after its first two stages.
MODELS = (
    "stem_k3_s1_c16-ir_r1_k3_s1_e4_c16_ex0.9-ir_r2_k3_s2_e4_c32_ex0.9-ir_r2_k5_s2_e4_c64-head_c64",
    "stem_k3_s1_c16-fire_r1_s1_q8_c32_ex0.9-fire_r2_s2_q16_c64_ex0.9-fire_r1_s2_q16_c96-head_c0",
)
THRESHOLDS = (0.8, 0.9, 0.95, 0.99, 0.999)
DEVICES = ("rpi4", "stm32f746")


def at_threshold(spec, t):
    return replace(spec, stages=tuple(replace(b, exit=t if b.exit else 0.0) for b in spec.stages))


def main(argv: list[str] | None = None) -> int:
    import torch

    from compactnas.core.data import load_data
    from compactnas.evaluators import TrainConfig
    from compactnas.evaluators.early_exit import exit_outcome, fit_exits
    from compactnas.evaluators.train import train
    from compactnas.hw_profiles import create_latency_model
    from compactnas.hw_profiles.exits import exit_latency_ms
    from compactnas.spaces import create_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "early_exit.json")
    args = ap.parse_args(argv)
    data = load_data(args.data, seed=args.seed)
    shape, nc = data.input_shape, data.num_classes
    res = Results(args.out, {"benchmark": "early_exit", "data": args.data, "epochs": args.epochs,
                             "seed": args.seed, "thresholds": list(THRESHOLDS),
                             "devices": list(DEVICES), "goal": "expected < no exits at <= 1 point lost"})  # fmt: skip
    rows = []
    for arch in MODELS:
        torch.manual_seed(args.seed)
        model = create_model(arch, num_classes=nc, in_chans=shape[0])
        t0 = time.time()
        train(model, data.train.x, data.train.y, TrainConfig(epochs=args.epochs, seed=args.seed))
        t1 = time.time()
        fit_exits(model, data.train.x, data.train.y, seed=args.seed)
        fit_s = time.time() - t1
        base, points = model.spec, []
        for t in THRESHOLDS:
            model.spec = at_threshold(base, t)
            o = exit_outcome(model, data.test.x, data.test.y)
            p = {"threshold": t, "fractions": [round(f, 4) for f in o.fractions],
                 "accuracy": o.accuracy, "points_lost": round(100 * (o.final_accuracy - o.accuracy), 2)}  # fmt: skip
            for dev in DEVICES:
                lat = exit_latency_ms(create_latency_model(dev, num_classes=nc), model.spec, shape,
                                      o.fractions, num_classes=nc)  # fmt: skip
                p[dev] = {k: round(v, 5) for k, v in lat.items()}
                p[dev]["expected_over_no_exits"] = round(lat["expected_ms"] / lat["no_exits_ms"], 4)
            points.append(p)
            print(f"{arch[:40]}... t={t}: leave {p['fractions']}  acc {o.accuracy:.4f} "
                  f"(-{p['points_lost']} pt)  rpi4 {p['rpi4']['expected_over_no_exits']:.3f}x")  # fmt: skip
        model.spec = base
        ok = [p for p in points if p["points_lost"] <= 1.0
              and all(p[d]["expected_ms"] < p[d]["no_exits_ms"] for d in DEVICES)]  # fmt: skip
        best = min(ok, key=lambda p: p["rpi4"]["expected_ms"]) if ok else None
        rows.append({"arch": arch, "final_accuracy": o.final_accuracy,
                     "train_s": round(t1 - t0, 1), "fit_exits_s": round(fit_s, 1), "points": points,
                     "best_within_1_point": best, "goal_met": best is not None})  # fmt: skip
        res["models"] = rows
    res["goal_met"] = all(r["goal_met"] for r in rows)
    res.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def render(ctx: object) -> list[str]:
    """The REPORT.md section, from results/early_exit.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("early_exit")  # type: ignore[attr-defined]
    out = ["## Early exits", ""]
    if not d:
        return out + ["Not run (no `early_exit.json`).", ""]
    out.append(
        f"{d['data']}, {d['epochs']} epochs, exits fitted on frozen features; test split; predicted "
        f"latency on {', '.join(d['devices'])}; commit {str(d.get('commit', 'unknown'))[:12]}. "
        "Expected latency is over where the test images left, as a share of the network without exits."
    )
    out += ["", "| network | threshold | left at exits / output | accuracy | points lost | "
            + " | ".join(f"{dev} expected" for dev in d["devices"]) + " |",
            "|---|---|---|---|---|" + "---|" * len(d["devices"])]  # fmt: skip
    for m in d.get("models", []):
        for p in m["points"]:
            shares = " / ".join(f"{f:.2f}" for f in p["fractions"])
            lat = " | ".join(f"{p[dev]['expected_over_no_exits']:.3f}x" for dev in d["devices"])
            out.append(f"| `{m['arch'][:48]}...` | {p['threshold']} | {shares} | "
                       f"{100 * p['accuracy']:.2f}% | {p['points_lost']:+.2f} | {lat} |")  # fmt: skip
    return [*out, ""]
