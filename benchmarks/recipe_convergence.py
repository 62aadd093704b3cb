"""Which recipe trains a network to convergence in few epochs: ResNet-8 on cifar10_20k.

    python benchmarks/recipe_convergence.py [--data npz:PATH] [--recipes final,proxy] [--epochs 30]
                                            [--seeds 2] [--model resnet8] [--out PATH]

Trains on every training image of the file (``x``: the split's train and validation parts together)
and tests on its held-out ``x_test``, with compactnas's own ``train()`` and each named recipe
(evaluators/recipes.py). Per run: test accuracy after the last epoch, training loss and a test curve on
2,000 held-out images per epoch (the convergence check: the gain of the last epochs), seconds. Results
go to results/recipe_convergence.json as each run ends; a rerun skips runs already there (a stopped run
resumes). About 10 minutes per 30-epoch ResNet-8 run on this 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import Results  # noqa: E402
from arena_models import build_baseline  # noqa: E402

from compactnas.core.data import load_data  # noqa: E402
from compactnas.evaluators import TrainConfig  # noqa: E402
from compactnas.evaluators.recipes import recipe  # noqa: E402
from compactnas.evaluators.train import accuracy, train  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"
CURVE = 2000  # held-out images scored after each epoch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=f"npz:{SHARED / 'cifar10_20k.npz'}")
    p.add_argument("--recipes", default="final,proxy")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--model", default="resnet8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "recipe_convergence.json")
    args = p.parse_args(argv)
    path = args.data.split(":", 1)[-1]
    if args.data.startswith("npz:") and not Path(path).is_file():
        print(f"recipe_convergence: no data at {path} (../shared/data is absent): skipped")
        return 0
    torch.set_num_threads(args.threads)
    data = load_data(args.data, seed=0)
    x = torch.cat([data.train.x, data.val.x])
    y = torch.cat([data.train.y, data.val.y])
    res = Results(args.out, resume=True, initial={"data": args.data, "train_images": len(y),
                                                  "test_images": len(data.test.y)})  # fmt: skip
    runs = res.setdefault("runs", {})
    for name in args.recipes.split(","):
        for seed in range(args.seeds):
            key = f"{args.model}/{name}/e{args.epochs}/s{seed}"
            if key in runs:
                print(f"{key}: kept from an earlier run ({runs[key]['test_accuracy']:.4f})")
                continue
            tc = TrainConfig(**recipe(name), epochs=args.epochs, seed=seed, train_device="cpu")
            torch.manual_seed(seed)
            model, _ = build_baseline(args.model, num_classes=data.num_classes, in_chans=3)
            curve: list[float] = []

            def report(epoch: int, acc: float, curve: list[float] = curve, key: str = key) -> bool:
                curve.append(round(acc, 4))
                print(f"  {key} epoch {epoch}: held-out {acc:.4f}", flush=True)
                return False

            t0 = time.time()
            stats = train(model, x, y, tc, val=(data.test.x[:CURVE], data.test.y[:CURVE]),
                          report=report)  # fmt: skip
            seconds = time.time() - t0
            runs[key] = {
                "recipe": name, "settings": recipe(name), "epochs": args.epochs, "seed": seed,
                "test_accuracy": round(accuracy(model, data.test.x, data.test.y, tc), 4),
                "train_loss": round(stats["loss"], 4), "curve": curve,
                "last5_gain": round(curve[-1] - curve[-6], 4) if len(curve) > 5 else None,
                "seconds": round(seconds, 1), "images_per_s": round(args.epochs * len(y) / seconds, 1),
            }  # fmt: skip
            res.save()
            print(f"{key}: test {runs[key]['test_accuracy']:.4f} in {seconds:.0f} s", flush=True)
    summary: dict[str, dict] = {}  # every recipe measured so far, this run's and earlier ones
    for r in runs.values():
        key = f"{args.model}/{r['recipe']}/e{r['epochs']}"
        summary.setdefault(key, {"runs": []})["runs"].append(r["test_accuracy"])
    for v in summary.values():
        v["mean"] = round(sum(v["runs"]) / len(v["runs"]), 4)
    res["summary"] = summary
    res.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def render(ctx: object) -> list[str]:
    """The REPORT.md section, from results/recipe_convergence.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("recipe_convergence")  # type: ignore[attr-defined]
    out = ["## Training to convergence: the recipes", ""]
    if not d:
        return out + ["Not run (no `recipe_convergence.json`).", ""]
    out.append(
        f"{d['data'].rsplit('/', 1)[-1]}: trained on {d['train_images']:,} images, tested on "
        f"{d['test_images']:,} held-out ones; commit {str(d.get('commit', 'unknown'))[:12]}."
    )
    out += ["", "| run | test accuracy | last training loss | gain over the last 5 epochs | seconds |",
            "|---|---|---|---|---|"]  # fmt: skip
    for key, r in d.get("runs", {}).items():
        gain = "n/a" if r.get("last5_gain") is None else f"{100 * r['last5_gain']:+.2f} pt"
        out.append(f"| {key} | {100 * r['test_accuracy']:.2f}% | {r['train_loss']:.3f} | {gain} | "
                   f"{r['seconds']:.0f} |")  # fmt: skip
    for key, s in (d.get("summary") or {}).items():
        out.append(
            f"\n{key}: mean test accuracy {100 * s['mean']:.2f}% over {len(s['runs'])} seed(s)."
        )
    return [*out, ""]
