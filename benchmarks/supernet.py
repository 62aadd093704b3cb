"""Weight sharing against training from scratch: rank agreement, cost per candidate, a new device's front.

    python benchmarks/supernet.py [--data SOURCE] [--quick] [--epochs E] [--subnets N] [--final-epochs F]
                                  [--proxy-epochs P] [--device-trials T] [--out PATH]

Steps (results/supernet.json rewritten after every measured item):
1. supernet: ``compactnas supernet train`` (sandwich rule, in-place distillation) for E epochs, timed;
2. sub-networks: the largest, the smallest and N-2 drawn at random from the supernet's space;
3. inherited: each one's validation accuracy with the supernet's weights (batch norm recalibrated on
   8 training batches), seconds per candidate;
4. stand-alone: each one trained from scratch with the final recipe (``compactnas retrain``'s, F
   epochs, one seed); Kendall tau and Spearman between inherited and stand-alone accuracy;
5. cost: seconds per candidate of the from-scratch proxy evaluator (P epochs, the search's default
   recipe) on three of them; ``speedup`` is the ratio of candidates evaluated per minute;
6. specialisation: a T-trial supernet search for one more device (stm32f746), timed end to end.
Default data: ../shared/data/cifar10_20k.npz beside the checkout; ``--data digits`` needs no files.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import Results  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"
QUICK = {"epochs": 3, "subnets": 20, "final_epochs": 3, "proxy_epochs": 2, "device_trials": 40}
FULL = {"epochs": 40, "subnets": 30, "final_epochs": 30, "proxy_epochs": 8, "device_trials": 500}


def say(msg: str) -> None:
    print(f"[supernet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rank_agreement(a: list[float], b: list[float]) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    return {
        "kendall_tau": float(kendalltau(a, b).statistic),
        "spearman": float(spearmanr(a, b).statistic),
    }


def subnets(space: Any, n: int, seed: int) -> list[str]:
    """The largest, the smallest and random distinct sub-networks, ``n`` in all."""
    rng = random.Random(seed)
    archs = dict.fromkeys([str(space.largest()), str(space.smallest())])
    for _ in range(100 * n):
        if len(archs) >= n:
            break
        archs.setdefault(str(space.random(rng)))
    return list(archs)


def run(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    import torch

    from compactnas.core.data import load_data
    from compactnas.evaluators.supernet import SupernetEvaluator, read_checkpoint
    from compactnas.search import SearchConfig, run_search
    from compactnas.search.candidate import train_config
    from compactnas.search.retrain import final_train_config, train_final
    from compactnas.search.supernet import SupernetConfig, train_supernet
    from compactnas.spaces import create_model, parse_arch
    from compactnas.spaces.elastic import ElasticSpace

    torch.set_num_threads(1)
    res = Results(Path(args.out), {"settings": settings})
    data = load_data(args.data, seed=0)
    work = Path(tempfile.mkdtemp(prefix="supernet-bench-"))
    say(f"data {data.name}: {len(data.train)} training images {data.input_shape}; work in {work}")

    t0 = time.time()
    meta = train_supernet(
        SupernetConfig(out=str(work / "supernet"), epochs=settings["epochs"]), data=data
    )
    res["supernet"] = {
        "train_s": round(time.time() - t0, 1),
        "history": meta["history"],
        "largest": meta["largest"],
        "smallest": meta["smallest"],
    }
    space = ElasticSpace.from_dict(read_checkpoint(work / "supernet")["elastic"])
    archs = subnets(space, settings["subnets"], seed=1)
    ev = SupernetEvaluator(folder=str(work / "supernet"))
    rows: list[dict[str, Any]] = []
    res["subnets"] = rows
    for arch in archs:
        t = time.time()
        m = ev.evaluate(None, parse_arch(arch), data)
        rows.append({"arch": arch, "inherited": m["accuracy"], "inherited_s": time.time() - t})
        res.save()
    inherited_s = statistics.median(r["inherited_s"] for r in rows)
    res["seconds_per_candidate_supernet"] = inherited_s
    say(f"inherited accuracy of {len(rows)} sub-networks, {inherited_s:.2f} s each (median)")

    for i, r in enumerate(rows):
        tc = final_train_config({}, epochs=settings["final_epochs"], seed=0)
        _, m = train_final(parse_arch(r["arch"]), data, tc)
        r.update(
            standalone=m["accuracy"], standalone_test=m["test_accuracy"], standalone_s=m["seconds"]
        )
        res.save()
        say(f"{i + 1}/{len(rows)}: inherited {r['inherited']:.3f}, stand-alone {m['accuracy']:.3f}")
        if i >= 2:
            res.update(rank_agreement([x["inherited"] for x in rows[: i + 1]],
                                      [x["standalone"] for x in rows[: i + 1]]))  # fmt: skip

    from compactnas.evaluators import ProxyEvaluator

    proxy_s = []
    for r in rows[:3]:
        cfg = SearchConfig(epochs=settings["proxy_epochs"])
        model = create_model(r["arch"], num_classes=data.num_classes, in_chans=data.input_shape[0])
        t = time.time()
        ProxyEvaluator(train_config=train_config(cfg, 0)).evaluate(model, r["arch"], data)
        proxy_s.append(time.time() - t)
    res["seconds_per_candidate_proxy"] = statistics.median(proxy_s)
    res["speedup"] = res["seconds_per_candidate_proxy"] / max(inherited_s, 1e-9)
    say(
        f"proxy evaluator {res['seconds_per_candidate_proxy']:.1f} s per candidate; speedup {res['speedup']:.0f}x"
    )

    t = time.time()
    result = run_search(
        SearchConfig(supernet=str(work / "supernet"), device="stm32f746", trials=settings["device_trials"],
                     workers=1, out=str(work / "device")),
        data=data, quiet=True,
    )  # fmt: skip
    res["new_device"] = {
        "device": "stm32f746",
        "trials": settings["device_trials"],
        "seconds": round(time.time() - t, 1),
        "front_size": len(result.summary["pareto"]),
        "hypervolume": result.summary["hypervolume"],
    }
    say(f"a front for one more device in {res['new_device']['seconds']:.0f} s")
    res["left_out"] = "quality at equal wall-clock against a from-scratch search: not measured yet"
    res.finish()


def render(ctx: Any) -> list[str]:
    """The REPORT.md section, from results/supernet.json."""
    from report_sections.common import num, settings_line, short_arch, table

    d = ctx.data.get("supernet")
    out = ["## Weight-sharing supernet", ""]
    if d is None:
        return out + ["Not run (no `supernet.json`).", ""]
    out += [settings_line(d.get("settings")), ""]
    if not d.get("complete"):
        out += ["Partial results: the run did not finish.", ""]
    sn = d.get("supernet") or {}
    out.append(f"- Supernet training: {num(sn.get('train_s'), 1)} s")
    for key, label in (
        ("kendall_tau", "Kendall tau, inherited vs stand-alone accuracy"),
        ("spearman", "Spearman, inherited vs stand-alone accuracy"),
        ("seconds_per_candidate_supernet", "Seconds per candidate, supernet (inherited weights)"),
        ("seconds_per_candidate_proxy", "Seconds per candidate, from-scratch proxy training"),
        ("speedup", "Candidates per minute, supernet over from scratch"),
    ):
        if key in d:
            out.append(f"- {label}: {num(d[key], 3)}")
    nd = d.get("new_device")
    if nd:
        out.append(
            f"- A front for one more device ({nd['device']}, {nd['trials']} trials): {num(nd['seconds'], 1)} s"
        )
    rows = [r for r in d.get("subnets", []) if "standalone" in r]
    if rows:
        out += ["", *table(["sub-network", "inherited val acc", "stand-alone val acc"],
                           [[short_arch(r["arch"], 80), num(r["inherited"]), num(r["standalone"])]
                            for r in rows])]  # fmt: skip
    if d.get("left_out"):
        out += ["", f"Not measured: {d['left_out']}."]
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=f"npz:{SHARED / 'cifar10_20k.npz'}")
    p.add_argument("--quick", action="store_true", help="small settings (minutes on digits)")
    for key in QUICK:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "results" / "supernet.json"))
    args = p.parse_args(argv)
    kind, _, path = args.data.partition(":")
    if path and not Path(path).exists():
        print(f"supernet benchmark: data not found: {path} (use --data digits)", file=sys.stderr)
        return 2
    base = QUICK if args.quick else FULL
    settings = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    settings.update(data=args.data, quick=args.quick)
    run(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
