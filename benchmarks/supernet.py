"""Weight sharing against training from scratch: rank agreement, candidates per minute, equal wall-clock.

    python benchmarks/supernet.py [--data SOURCE] [--quick] [--epochs E] [--subnets N] [--final-epochs F]
                                  [--supernet-trials T] [--device-trials D] [--picks K] [--out PATH]

Steps (results/supernet.json rewritten after every measured item):
1. supernet: ``compactnas supernet train`` (sandwich rule, in-place distillation) for E epochs on the
   whole training split, on both cores, timed;
2. rank agreement: the largest, the smallest and N-2 random sub-networks; each one's validation
   accuracy with inherited weights (batch norm recalibrated on 8 training batches) against its
   accuracy trained from scratch with the arena's final recipe (F epochs on the arena's training
   subset); Kendall tau and Spearman;
3. supernet search: T candidates for one device (rpi4, latency from its profile), 2 workers, timed;
4. from-scratch search at equal wall-clock: the proxy evaluator with the arena's search recipe, given
   the supernet's training plus search time (``--time-budget``); ``speedup`` is the ratio of the two
   searches' candidates per minute;
5. quality: K picks spread over each front, retrained from scratch with the final recipe; hypervolume
   of (validation accuracy, rpi4 latency) and the arena's baselines on one plot;
6. specialisation: a D-trial supernet search for one more device (stm32f746), timed end to end.
Default data: ../shared/data/cifar10_20k.npz beside the checkout; ``--data digits`` needs no files.
"""

from __future__ import annotations

import argparse
import json
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
DEVICE, NEW_DEVICE = "rpi4", "stm32f746"
STEPS = ("rank", "cost", "compare", "picks", "device")
# The arena's quick recipes: search 2 epochs on 5,000 images (1,000 validation); final 3 epochs on 5,000.
QUICK = {
    "epochs": 4,
    "subnets": 20,
    "final_epochs": 3,
    "final_subset": 5000,
    "search_epochs": 2,
    "subset": 5000,
    "val_subset": 1000,
    "supernet_trials": 150,
    "device_trials": 150,
    "picks": 4,
    "cost_subnets": 6,
}
FULL = {"epochs": 40, "subnets": 30, "final_epochs": 30, "final_subset": 0, "search_epochs": 8,
        "subset": 0, "val_subset": 0, "supernet_trials": 2000, "device_trials": 2000, "picks": 6,
        "cost_subnets": 10}  # fmt: skip


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


def _search(res: Results, key: str, cfg: Any, data: Any) -> dict[str, Any]:
    from compactnas.search import run_search

    t = time.time()
    result = run_search(cfg, data=data, quiet=True)
    wall = time.time() - t
    n = int(result.summary["n_complete"])
    res[key] = {
        "trials": n, "wall_s": round(wall, 1), "candidates_per_min": 60 * n / wall,
        "front": [{k: r.get(k) for k in ("trial", "arch", "accuracy", "latency_ms", "size_bytes")}
                  for r in result.summary["pareto"]],
        "hypervolume": result.summary["hypervolume"],
    }  # fmt: skip
    say(f"{key}: {n} candidates in {wall:.0f} s ({res[key]['candidates_per_min']:.1f} per minute)")
    return res[key]


def rank_step(
    res: Results, args: Any, s: dict[str, Any], data: Any, work: Path, sn: Path, recipe: dict
) -> None:
    from supernet_compare import train_standalone

    from compactnas.evaluators.supernet import SupernetEvaluator, read_checkpoint
    from compactnas.spaces import parse_arch
    from compactnas.spaces.elastic import ElasticSpace

    space = ElasticSpace.from_dict(read_checkpoint(sn)["elastic"])
    ev = SupernetEvaluator(folder=str(sn))
    rows: list[dict[str, Any]] = []
    res["subnets"] = rows
    for arch in subnets(space, s["subnets"], seed=1):
        t = time.time()
        m = ev.evaluate(None, parse_arch(arch), data)
        rows.append({"arch": arch, "inherited": m["accuracy"], "inherited_s": time.time() - t,
                     "cached": bool(m["cached"])})  # fmt: skip
        res.save()
    fresh = [r["inherited_s"] for r in rows if not r["cached"]]
    if fresh:  # a supernet evaluated before answers from its cache: no time to report then
        res["seconds_per_subnet_inherited"] = statistics.median(fresh)
    say(f"inherited accuracy of {len(rows)} sub-networks; now training each from scratch")
    by_arch = {r["arch"]: r for r in rows}

    def done(m: dict[str, Any]) -> None:
        by_arch[m["arch"]].update(standalone=m["accuracy"], standalone_s=m["seconds"])
        res.save()
        got = [r for r in rows if "standalone" in r]
        say(f"{len(got)}/{len(rows)}: inherited {by_arch[m['arch']]['inherited']:.3f}, "
            f"stand-alone {m['accuracy']:.3f} ({m['seconds']:.0f} s)")  # fmt: skip
        if len(got) >= 3:
            res.update(
                rank_agreement([r["inherited"] for r in got], [r["standalone"] for r in got])
            )

    train_standalone([r["arch"] for r in rows], args.data, recipe, s["final_subset"] or None, done)


def compare_step(
    res: Results, args: Any, s: dict[str, Any], data: Any, work: Path, sn: Path
) -> None:
    """The supernet search, then the from-scratch search given the same wall-clock."""
    from compactnas.search import SearchConfig

    val = s["val_subset"] or None
    sn = _search(res, "supernet_search", SearchConfig(
        supernet=str(sn), device=DEVICE, trials=s["supernet_trials"], workers=2,
        val_subset=val, out=str(work / "sn-search")), data)  # fmt: skip
    budget_s = res["supernet"]["train_s"] + sn["wall_s"]
    scratch = _search(res, "scratch_search", SearchConfig(
        data=args.data, device=DEVICE, trials=100000, time_budget=budget_s / 60, workers=2,
        epochs=s["search_epochs"], subset=s["subset"] or None, val_subset=val,
        out=str(work / "scratch-search")), data)  # fmt: skip
    scratch["time_budget_s"] = round(budget_s, 1)
    res["speedup"] = sn["candidates_per_min"] / scratch["candidates_per_min"]
    res["speedup_with_supernet_training"] = (
        sn["trials"] / budget_s * 60 / scratch["candidates_per_min"]
    )
    say(f"speedup {res['speedup']:.1f}x in candidates per minute "
        f"({res['speedup_with_supernet_training']:.2f}x counting the supernet's training)")  # fmt: skip


def picks_step(res: Results, args: Any, s: dict[str, Any], data: Any, recipe: dict) -> None:
    """K picks spread over each search's front, retrained from scratch; hypervolume and baselines."""
    from supernet_compare import (
        arena_baselines,
        dominated_baselines,
        hypervolume_2d,
        plot,
        spread_picks,
        train_standalone,
    )  # fmt: skip

    sn, scratch = res["supernet_search"], res["scratch_search"]
    budget_s = scratch.get("time_budget_s") or res["equal_wall_clock"]["budget_s"]
    sides = {"supernet": spread_picks(sn["front"], s["picks"]),
             "from scratch": spread_picks(scratch["front"], s["picks"])}  # fmt: skip
    archs = list(dict.fromkeys(p["arch"] for picks in sides.values() for p in picks))
    got: dict[str, dict[str, Any]] = {}
    say(f"retraining {len(archs)} picks of the two fronts")
    train_standalone(archs, args.data, recipe, s["final_subset"] or None,
                     lambda m: got.__setitem__(m["arch"], m))  # fmt: skip
    retrained = {
        side: [{**p, "search_accuracy": p["accuracy"], "accuracy": got[p["arch"]]["accuracy"]}
               for p in picks]
        for side, picks in sides.items()
    }  # fmt: skip
    lat_ref = 1.1 * max(p["latency_ms"] for picks in retrained.values() for p in picks)
    ref = (1.0 / data.num_classes, lat_ref)
    name = Path(args.data.partition(":")[2]).stem if ":" in args.data else args.data
    baselines, why = arena_baselines(ROOT / "results" / f"arena_{name}.json", name, recipe,
                                     s["final_subset"] or None, DEVICE)  # fmt: skip
    res["equal_wall_clock"] = {
        "device": DEVICE, "budget_s": round(budget_s, 1),
        "reference": {"accuracy": ref[0], "latency_ms": lat_ref},
        "sides": {side: {"picks": picks,
                         "hypervolume": hypervolume_2d([(p["accuracy"], p["latency_ms"]) for p in picks], ref),
                         "baselines_beaten": dominated_baselines(picks, baselines)}
                  for side, picks in retrained.items()},
        "baselines": baselines, "baselines_left_out": why,
    }  # fmt: skip
    plot(Path(args.out).with_name("supernet_front.png"), retrained, baselines, DEVICE)
    hv = {k: v["hypervolume"] for k, v in res["equal_wall_clock"]["sides"].items()}
    say(f"equal wall-clock hypervolume: {hv}")


def run(args: argparse.Namespace, s: dict[str, Any]) -> None:
    import torch

    from compactnas.core.data import load_data
    from compactnas.search import SearchConfig
    from compactnas.search.supernet.epochs import SupernetConfig
    from compactnas.search.supernet.training import train_supernet
    from compactnas.search.workflows.retrain import final_train_config

    torch.set_num_threads(1)
    earlier = json.loads(Path(args.earlier).read_text()) if args.earlier else {}
    earlier.pop("complete", None)
    res = Results(Path(args.out), {**earlier, "settings": s, "earlier": args.earlier})
    data = load_data(args.data, seed=0)
    work = Path(tempfile.mkdtemp(prefix="supernet-bench-"))
    say(f"data {data.name}: {len(data.train)} training images {data.input_shape}; work in {work}")
    t0 = time.time()
    if args.supernet:  # trained earlier, by this benchmark or `compactnas supernet train`
        from compactnas.evaluators.supernet import read_checkpoint

        sn = Path(args.supernet).expanduser().resolve()
        meta = {k: v for k, v in read_checkpoint(sn).items() if k != "state_dict"}
        train_s = sum(h["epoch_seconds"] for h in meta["history"])
    else:
        sn = work / "supernet"
        meta = train_supernet(SupernetConfig(out=str(sn), epochs=s["epochs"], threads=2), data=data)
        train_s = time.time() - t0
    torch.set_num_threads(1)
    res["supernet"] = {
        "train_s": round(train_s, 1),
        "history": meta["history"],
        "largest": meta["largest"],
        "smallest": meta["smallest"],
        **(earlier.get("supernet") or {}),  # the earlier run's measured time, when it trained it
        "reused": bool(args.supernet),
    }
    say(f"supernet trained in {res['supernet']['train_s']:.0f} s")
    from dataclasses import asdict

    # The arena's final recipe: the search's defaults (label smoothing 0.1 among them), F epochs.
    recipe = asdict(
        final_train_config(SearchConfig().to_dict(), epochs=s["final_epochs"], seed=args.seed)
    )
    res["recipe"] = recipe
    steps = args.steps.split(",")
    if "rank" in steps:
        rank_step(res, args, s, data, work, sn, recipe)
    if "cost" in steps:
        cost_step(res, s, data, sn)
    if "compare" in steps:
        compare_step(res, args, s, data, work, sn)
    if "picks" in steps:
        picks_step(res, args, s, data, recipe)
    if "device" in steps:
        device_step(res, s, data, work, sn)
    res["elapsed_s"] = round(time.time() - t0, 1)
    res.finish()


def cost_step(res: Results, s: dict[str, Any], data: Any, sn: Path) -> None:
    """Seconds per candidate on the same sub-networks, one at a time on one thread: inherited
    accuracy (as the supernet search measures it) against the from-scratch proxy evaluator (the
    arena's search recipe, as the from-scratch search measures it, test split included)."""
    from compactnas.core.data import take_subset
    from compactnas.evaluators import ProxyEvaluator, accuracy
    from compactnas.evaluators.supernet import SupernetEvaluator, inherited_model
    from compactnas.search import SearchConfig
    from compactnas.search.candidate import train_config
    from compactnas.spaces import create_model

    val = s["val_subset"] or None
    inherit_data = take_subset(data, val=val, seed=0)
    proxy_data = take_subset(data, train=s["subset"] or None, val=val, seed=0)
    ev = SupernetEvaluator(folder=str(sn))
    net, _ = ev.network(inherit_data)
    tc = train_config(SearchConfig(epochs=s["search_epochs"]), 0)
    rows: list[dict[str, Any]] = []
    res["cost"] = {"rows": rows}
    for r in (res.get("subnets") or [])[: s["cost_subnets"]]:
        t = time.time()  # the evaluator's own steps, without its cache
        m = inherited_model(net, r["arch"], inherit_data, batches=ev.calib_batches,
                            batch_size=ev.calib_batch_size)  # fmt: skip
        accuracy(m, inherit_data.val.x, inherit_data.val.y)
        inherited_s = time.time() - t
        model = create_model(r["arch"], num_classes=data.num_classes, in_chans=data.input_shape[0])
        t = time.time()
        ProxyEvaluator(train_config=tc).evaluate(model, r["arch"], proxy_data)
        rows.append({"arch": r["arch"], "inherited_s": inherited_s, "proxy_s": time.time() - t})
        res.save()
        say(f"cost {len(rows)}: inherited {inherited_s:.1f} s, proxy {rows[-1]['proxy_s']:.1f} s")
    if rows:
        res["speedup_same_candidates"] = sum(x["proxy_s"] for x in rows) / sum(
            x["inherited_s"] for x in rows
        )
        say(f"same candidates: {res['speedup_same_candidates']:.1f}x")


def device_step(res: Results, s: dict[str, Any], data: Any, work: Path, sn: Path) -> None:
    from compactnas.search import SearchConfig, run_search

    t = time.time()
    result = run_search(
        SearchConfig(supernet=str(sn), device=NEW_DEVICE, trials=s["device_trials"],
                     workers=2, val_subset=s["val_subset"] or None, out=str(work / "device")),
        data=data, quiet=True,
    )  # fmt: skip
    res["new_device"] = {
        "device": NEW_DEVICE,
        "trials": s["device_trials"],
        "seconds": round(time.time() - t, 1),
        "front_size": len(result.summary["pareto"]),
        "hypervolume": result.summary["hypervolume"],
    }
    say(f"a front for one more device in {res['new_device']['seconds']:.0f} s")


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
    if d.get("earlier"):
        out += [f"Steps {d['settings'].get('steps')} redone on the supernet of an earlier run "
                f"(`{Path(d['earlier']).name}`), whose other measurements are kept.", ""]  # fmt: skip
    sn = d.get("supernet") or {}
    out.append(f"- Supernet training: {num(sn.get('train_s'), 1)} s")
    for key, label in (
        ("kendall_tau", "Kendall tau, inherited vs stand-alone accuracy"),
        ("spearman", "Spearman, inherited vs stand-alone accuracy"),
        ("seconds_per_subnet_inherited", "Seconds per sub-network, inherited accuracy (median)"),
        ("speedup", "Candidates per minute, supernet search over from-scratch search"),
        ("speedup_with_supernet_training", "The same, the supernet's training counted"),
        (
            "speedup_same_candidates",
            "Seconds per candidate on the same sub-networks, proxy over inherited",
        ),
    ):
        if key in d:
            out.append(f"- {label}: {num(d[key], 3)}")
    nd = d.get("new_device")
    if nd:
        out.append(
            f"- A front for one more device ({nd['device']}, {nd['trials']} trials): {num(nd['seconds'], 1)} s"
        )
    searches = [(k, d[k]) for k in ("supernet_search", "scratch_search") if k in d]
    if searches:
        out += ["", *table(["search", "candidates", "wall s", "candidates/min"],
                           [[k.split("_")[0], v["trials"], num(v["wall_s"], 1),
                             num(v["candidates_per_min"], 2)] for k, v in searches])]  # fmt: skip
    eq = d.get("equal_wall_clock")
    if eq:
        out += ["", f"Equal wall-clock ({num(eq['budget_s'], 0)} s each; picks retrained with the "
                f"final recipe; {eq['device']} latency from its profile):", ""]  # fmt: skip
        out += table(["front", "hypervolume", "picks (val acc / ms)", "arena baselines beaten"],
                     [[side, num(v["hypervolume"], 4),
                       ", ".join(f"{p['accuracy']:.3f}/{p['latency_ms']:.2f}" for p in v["picks"]),
                       f"{len(v['baselines_beaten'])} of {len(eq['baselines'])}"]
                      for side, v in eq["sides"].items()])  # fmt: skip
        if eq.get("baselines_left_out"):
            out.append(f"\nArena baselines left out: {eq['baselines_left_out']}.")
        png = ctx.results / "supernet_front.png"
        if png.is_file():
            out += ["", ctx.img(png, "supernet and from-scratch fronts, retrained")]
    rows = [r for r in d.get("subnets", []) if "standalone" in r]
    if rows:
        out += ["", *table(["sub-network", "inherited val acc", "stand-alone val acc"],
                           [[short_arch(r["arch"], 80), num(r["inherited"]), num(r["standalone"])]
                            for r in rows])]  # fmt: skip
    # The rank step again on the same supernet, with other stand-alone recipes or seeds.
    for path in sorted(ctx.results.glob("supernet_rank*.json")):
        e = json.loads(path.read_text())
        es = e.get("settings") or {}
        out += ["", f"`{path.name}` (the same supernet; stand-alone {es.get('final_epochs')} epochs on "
                f"{es.get('final_subset')} images, seed {es.get('seed')}, "
                f"{len(e.get('subnets', []))} sub-networks): Kendall tau {num(e.get('kendall_tau'), 3)}, "
                f"Spearman {num(e.get('spearman'), 3)}."]  # fmt: skip
        mine = {r["arch"]: r["standalone"] for r in rows}
        both = [(mine[r["arch"]], r["standalone"]) for r in e.get("subnets", [])
                if "standalone" in r and r["arch"] in mine]  # fmt: skip
        if len(both) >= 3 and es != d.get("settings"):
            agree = rank_agreement([a for a, _ in both], [b for _, b in both])
            out[-1] += (f" Its stand-alone accuracies against this section's: Kendall tau "
                        f"{num(agree['kendall_tau'], 3)} ({len(both)} sub-networks).")  # fmt: skip
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=f"npz:{SHARED / 'cifar10_20k.npz'}")
    p.add_argument("--quick", action="store_true", help="small settings (minutes on digits)")
    for key in QUICK:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    p.add_argument(
        "--supernet",
        metavar="DIR",
        help="use this trained supernet (DIR/supernet.pt, on the same data) instead of training one",
    )
    p.add_argument(
        "--from",
        dest="earlier",
        metavar="JSON",
        help="start from an earlier results file: its measurements are kept, --steps redone",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of stand-alone and retrained networks (default 0)"
    )
    p.add_argument("--steps", default=",".join(STEPS), help="steps to run (default: all)")
    p.add_argument("--out", default=str(ROOT / "results" / "supernet.json"))
    args = p.parse_args(argv)
    kind, _, path = args.data.partition(":")
    if path and not Path(path).exists():
        print(f"supernet benchmark: data not found: {path} (use --data digits)", file=sys.stderr)
        return 2
    base = QUICK if args.quick else FULL
    settings = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    settings.update(data=args.data, quick=args.quick, steps=args.steps, seed=args.seed)
    unknown = set(args.steps.split(",")) - set(STEPS)
    if unknown:
        print(f"supernet benchmark: unknown step(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    run(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
