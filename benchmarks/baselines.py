"""Hand-designed baselines: timm's small mobile networks against the searched front, same data and recipe.

    python benchmarks/baselines.py [--quick] [--seeds N] [--trials N] [--epochs N] [--resize N] [--out PATH]

For each seed: one search with the default settings (NSGA-II over the ``mobile`` space; accuracy, latency
measured on this host and size) at the benchmark's trials and epochs; then every baseline is created with
``timm.create_model(name, pretrained=False, num_classes=10, in_chans=1)`` and trained on the same split of
digits with the search's own recipe (``search.candidate.train_config`` for trial 0 of that seed, through the
same ProxyEvaluator). The front's models and the baselines are then timed side by side in one run, with the
search's method (``measure_latency_ms``, batch 1, one thread; median over interleaved rounds) and, as a
cross-check that resists a busy neighbour, hw_profiles' round-robin 10th percentile. Latency on published
devices comes from hw_profiles' roofline profiles: the front's models through their architecture strings,
the baselines through the same roofline over a layer list traced from the module (checked against the
string's layer list on the front's models, see ``predictor_check``).

A found model dominates a baseline when its test accuracy and measured latency are both at least as good and
one is strictly better. Writes benchmarks/results/baselines.json; benchmarks/report.py plots and tabulates it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compactnas.core.host import cpu_name

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # _results beside this file, however started
from _results import Results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "baselines.json"

QUICK_BASELINES = (
    "mobilenetv2_035",
    "mobilenetv2_050",
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "lcnet_035",
    "lcnet_050",
)
FULL_BASELINES = (*QUICK_BASELINES, "mobilenetv2_075", "mobilenetv3_small_100", "lcnet_075")
DEVICES = ("cortex-a76", "rpi4", "jetson-nano")
# Every baseline is trained with the recipe (and so the seed) the search gave its trial 0.
BASELINE_TRIAL = 0

FAIRNESS_NOTE = (
    "Both sides see exactly the same data: digits at 8x8, the same train/validation/test split, the same "
    "training recipe and epochs. timm's networks were designed for 224x224 inputs and downsample by 32, so "
    "at 8x8 most of their layers run on 1x1 feature maps: this is the like-for-like comparison on the "
    "search's data, not a measure of what these networks do on the inputs they were designed for."
)


# -- dominance -----------------------------------------------------------------------------------


def dominates(
    a: dict[str, Any],
    b: dict[str, Any],
    *,
    acc: str = "test_accuracy",
    lat: str = "latency_ms",
) -> bool:
    """``a`` at least as accurate and at least as fast as ``b``, and strictly better in one."""
    ge = a[acc] >= b[acc] and a[lat] <= b[lat]
    return ge and (a[acc] > b[acc] or a[lat] < b[lat])


def verdict(
    baseline: dict[str, Any],
    found: Sequence[dict[str, Any]],
    *,
    acc: str = "test_accuracy",
    lat: str = "latency_ms",
) -> dict[str, Any]:
    """Whether any found model dominates ``baseline`` and, where none does, by how much the baseline leads.

    ``accuracy_lead_points``: the baseline's test accuracy minus the best found model that is at least as
    fast (percentage points; None when no found model is that fast). ``latency_lead_ratio``: the latency of
    the fastest found model that is at least as accurate over the baseline's (None when none is).
    """
    by = [f for f in found if dominates(f, baseline, acc=acc, lat=lat)]
    out: dict[str, Any] = {
        "dominated": bool(by),
        "dominated_by": [f.get("trial") for f in by],
        "accuracy_metric": acc,
        "latency_metric": lat,
    }
    if by:
        # The most accurate dominating model, and how much faster it is.
        best = max(by, key=lambda f: (f[acc], -f[lat]))
        out["best"] = {
            "trial": best.get("trial"),
            "accuracy_gain_points": 100 * (best[acc] - baseline[acc]),
            "speedup": baseline[lat] / best[lat] if best[lat] > 0 else None,
        }
        return out
    as_fast = [f for f in found if f[lat] <= baseline[lat]]
    as_accurate = [f for f in found if f[acc] >= baseline[acc]]
    out["accuracy_lead_points"] = (
        100 * (baseline[acc] - max(f[acc] for f in as_fast)) if as_fast else None
    )
    out["latency_lead_ratio"] = (
        min(f[lat] for f in as_accurate) / baseline[lat] if as_accurate else None
    )
    return out


# -- a roofline prediction for any module ------------------------------------------------------------


def traced_layers(model, input_shape: tuple[int, int, int]) -> list:
    """The operators one forward pass runs, as spaces.layers.Layer rows, following arch_layers' conventions.

    hw_profiles' roofline reads a layer list built from an architecture string; a timm network has no
    string, so its list is read off the aten calls instead: convolutions and linear layers with their
    shapes (batch norm folded into the convolution before it, as deployment does), global pooling, max
    pooling, residual adds and squeeze-excite gating. Activations are folded, as in arch_layers.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from compactnas.spaces.layers import Layer

    aten = torch.ops.aten
    layers: list[Layer] = []

    def is4d(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.dim() == 4

    class Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            op = func.overloadpacket
            n = f"op{len(layers)}"
            if op is aten.convolution:
                x, w, b, stride, groups = args[0], args[1], args[2], args[3], args[8]
                cin = int(x.shape[1])
                layers.append(Layer(
                    name=n, op="dwconv" if groups > 1 and groups == cin else "conv", cin=cin,
                    cout=int(w.shape[0]), kernel=int(w.shape[-1]), stride=int(stride[0]),
                    groups=int(groups), hin=int(x.shape[2]), win=int(x.shape[3]),
                    hout=int(out.shape[2]), wout=int(out.shape[3]), weights=w.numel(),
                    extra_params=b.numel() if b is not None else 0,
                ))  # fmt: skip
            elif op in (aten.native_batch_norm, aten._native_batch_norm_legit_no_training):
                c = int(args[0].shape[1])
                last = layers[-1] if layers else None
                if last is not None and last.op in ("conv", "dwconv") and last.cout == c:
                    layers[-1] = _replace(last, extra_params=last.extra_params + 2 * c)
            elif op in (aten.addmm, aten.mm):
                w = args[2] if op is aten.addmm else args[1]
                bias = args[0].numel() if op is aten.addmm else 0
                layers.append(Layer(
                    name=n, op="linear", cin=int(w.shape[0]), cout=int(w.shape[1]),
                    weights=w.numel(), extra_params=bias,
                ))  # fmt: skip
            elif op in (aten.mean, aten._adaptive_avg_pool2d, aten.adaptive_avg_pool2d) and is4d(
                args[0]
            ):
                x = args[0]
                c, h, w_ = (int(d) for d in x.shape[1:])
                layers.append(Layer(name=n, op="gap", cin=c, cout=c, hin=h, win=w_))
            elif op in (aten.max_pool2d, aten.max_pool2d_with_indices):
                x, y = args[0], out[0] if isinstance(out, tuple) else out
                k = args[1][0] if isinstance(args[1], Sequence) else args[1]
                layers.append(Layer(
                    name=n, op="pool", cin=int(x.shape[1]), cout=int(x.shape[1]), kernel=int(k),
                    stride=int(x.shape[2] // max(1, y.shape[2])), hin=int(x.shape[2]),
                    win=int(x.shape[3]), hout=int(y.shape[2]), wout=int(y.shape[3]),
                ))  # fmt: skip
            elif op is aten.add and is4d(args[0]) and is4d(args[1]):
                if (
                    args[0].shape == args[1].shape
                ):  # a residual; scalar adds inside activations are not
                    c, h, w_ = (int(d) for d in args[0].shape[1:])
                    layers.append(
                        Layer(name=n, op="add", cin=c, cout=c, hin=h, win=w_, hout=h, wout=w_)
                    )
            elif op is aten.mul and is4d(args[0]) and is4d(args[1]):
                x, g = args[0], args[1]
                if tuple(g.shape[2:]) == (1, 1) and g.shape[1] == x.shape[1]:  # squeeze-excite gate
                    c, h, w_ = (int(d) for d in x.shape[1:])
                    layers.append(
                        Layer(name=n, op="mul", cin=c, cout=c, hin=h, win=w_, hout=h, wout=w_)
                    )
            return out

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Trace():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return layers


def _replace(layer, **changes):
    from dataclasses import replace

    return replace(layer, **changes)


def predict_module_ms(profile, model, input_shape: tuple[int, int, int]) -> float:
    from compactnas.hw_profiles.analysis import roofline_ms

    return roofline_ms(profile, tuple(traced_layers(model, input_shape)))


# -- timing ---------------------------------------------------------------------------------------


def time_models(
    models: dict[str, Any], shape: tuple[int, int, int], rounds: int
) -> dict[str, dict]:
    """Both methods on every model, visiting the models in turn so no one model gets all the quiet spells."""
    from compactnas.evaluators import measure_latency_ms
    from compactnas.hw_profiles.measure import time_round_robin

    got: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            got[k].append(measure_latency_ms(m, shape, threads=1))
    p10 = time_round_robin(
        [lambda m=m: (m, shape) for m in models.values()], threads=1, rounds=rounds
    )
    return {
        k: {
            "latency_ms": statistics.median(got[k]),
            "latency_rounds_ms": got[k],
            "latency_p10_ms": p,
        }
        for k, p in zip(models, p10, strict=True)
    }


def _train_baseline(name: str, data, tc) -> tuple[Any, dict[str, float], float]:
    """A timm network trained as the search trains a candidate (seeded init, ProxyEvaluator)."""
    import timm
    import torch

    from compactnas.evaluators import ProxyEvaluator

    torch.manual_seed(tc.seed)
    model = timm.create_model(
        name, pretrained=False, num_classes=data.num_classes, in_chans=data.input_shape[0]
    )
    t0 = time.time()
    metrics = ProxyEvaluator(train_config=tc).evaluate(model, None, data)
    return model, metrics, round(time.time() - t0, 2)


def _trial_value(trials, number: int, column: str) -> float | None:
    if column not in trials.columns:
        return None
    values = trials.loc[trials["trial"] == number, column].dropna()
    return float(values.iloc[0]) if len(values) else None


# -- one seed -------------------------------------------------------------------------------------


def run_seed(args: argparse.Namespace, seed: int, baselines: Sequence[str], work: Path) -> dict:
    import torch

    from compactnas.core.data import load_data
    from compactnas.evaluators import (
        build_pruned_model,
        count_macs,
        count_parameters,
    )
    from compactnas.evaluators.compression import is_pruned
    from compactnas.evaluators.teacher import DEFAULT_MODEL, create_teacher
    from compactnas.hw_profiles import create_latency_model, load_profile
    from compactnas.search import SearchConfig, run_search
    from compactnas.search.candidate import train_config
    from compactnas.spaces import create_model, parse_arch

    data = load_data("digits", seed=seed, resize=args.resize)
    shape = tuple(data.input_shape)
    cfg = SearchConfig(
        trials=args.trials, epochs=args.epochs, seed=seed, resize=args.resize,
        out=str(work / f"search-{seed}"),
    )  # fmt: skip
    t0 = time.time()
    result = run_search(cfg, data=data, quiet=True)
    search_s = time.time() - t0
    say(f"seed {seed}: search of {cfg.trials} trials in {search_s:.0f} s")
    torch.set_num_threads(1)

    modules: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    for rec in result.summary["pareto"]:
        spec = parse_arch(rec["arch"])
        key = f"trial {rec['trial']}"
        modules[key] = (
            build_pruned_model(spec, num_classes=data.num_classes, in_chans=shape[0])
            if is_pruned(spec)
            else create_model(spec, num_classes=data.num_classes, in_chans=shape[0])
        )
        rows[key] = {
            "kind": "found",
            "name": key,
            "trial": rec["trial"],
            "arch": rec["arch"],
            "accuracy": rec["accuracy"],
            "test_accuracy": rec["test_accuracy"],
            "params": rec["params"],
            "size_bytes": rec["size_bytes"],
            "macs": rec["macs"],
            "search_latency_ms": rec["latency_ms"],
            "train_loss": _trial_value(result.trials, rec["trial"], "train_loss"),
        }

    tc = train_config(cfg, BASELINE_TRIAL)
    for name in baselines:
        model, metrics, seconds = _train_baseline(name, data, tc)
        modules[name] = model
        params = count_parameters(model)
        rows[name] = {
            "kind": "baseline",
            "name": name,
            "accuracy": metrics["accuracy"],
            "test_accuracy": metrics["test_accuracy"],
            "train_loss": metrics["train_loss"],
            "params": params,
            "size_bytes": 4 * params,  # fp32, the dense convention of spaces.layers.size_bytes
            "macs": count_macs(model, shape),
            "train_seconds": seconds,
        }
        say(f"seed {seed}: {name} test accuracy {metrics['test_accuracy']:.4f}")
        if args.long_epochs:
            # Not the equal-recipe comparison: how much of a baseline's deficit is the short budget.
            _, long, seconds = _train_baseline(
                name, data, dataclasses.replace(tc, epochs=args.long_epochs)
            )
            rows[name]["longer_training"] = {
                "epochs": args.long_epochs,
                "accuracy": long["accuracy"],
                "test_accuracy": long["test_accuracy"],
                "train_loss": long["train_loss"],
                "train_seconds": seconds,
            }
            say(f"seed {seed}: {name} at {args.long_epochs} epochs {long['test_accuracy']:.4f}")

    # The distillation teacher, timed for the report's teacher ratios (untrained: latency only).
    teacher = create_teacher(
        DEFAULT_MODEL, num_classes=data.num_classes, in_chans=shape[0], image_size=shape[1]
    )
    modules["teacher"] = teacher
    tparams = count_parameters(teacher)
    rows["teacher"] = {
        "kind": "teacher", "name": DEFAULT_MODEL, "params": tparams, "size_bytes": 4 * tparams,
        "macs": count_macs(teacher, shape),
    }  # fmt: skip

    load_before = os.getloadavg()[0]
    for key, timing in time_models(modules, shape, args.rounds).items():
        rows[key].update(timing)
    say(
        f"seed {seed}: timed {len(modules)} models (load {load_before:.1f} -> {os.getloadavg()[0]:.1f})"
    )

    check = []
    for dev in args.devices:
        profile = load_profile(dev)
        string_model = create_latency_model(profile, num_classes=data.num_classes)
        for key, row in rows.items():
            traced = predict_module_ms(profile, modules[key], shape)
            row.setdefault("predicted_ms", {})[dev] = traced
            if row["kind"] == "found":
                official = string_model.predict_ms(row["arch"], shape)
                row["predicted_ms"][dev] = official
                check.append(abs(traced - official) / official)

    found = [r for r in rows.values() if r["kind"] == "found"]
    for row in rows.values():
        if row["kind"] != "baseline":
            continue
        row["verdict"] = verdict(row, found)
        row["verdict_p10"] = verdict(row, found, lat="latency_p10_ms")
        if "longer_training" in row:
            row["longer_training"]["verdict"] = verdict(
                {**row, "test_accuracy": row["longer_training"]["test_accuracy"]}, found
            )
        row["verdict_predicted"] = {
            dev: verdict(
                {**row, "lat": row["predicted_ms"][dev]},
                [{**f, "lat": f["predicted_ms"][dev]} for f in found],
                lat="lat",
            )
            for dev in args.devices
        }
    return {
        "seed": seed,
        "data": {
            "name": data.name,
            "input_shape": list(shape),
            "num_classes": data.num_classes,
            "train": len(data.train),
            "val": len(data.val),
            "test": len(data.test),
        },
        "train_config": dataclasses.asdict(tc),
        "search": {
            "config": {k: v for k, v in cfg.to_dict().items() if k != "out"},
            "n_trials": result.summary["n_trials"],
            "n_complete": result.summary["n_complete"],
            "n_failed": result.summary["n_failed"],
            "hypervolume": result.summary["hypervolume"],
            "seconds": round(search_s, 1),
        },
        "predictor_check": {
            "what": "traced-module roofline vs the string's roofline on the front's models",
            "max_relative_difference": max(check) if check else None,
            "n": len(check),
        },
        "load_avg_during_timing": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "models": list(rows.values()),
    }


# -- main -----------------------------------------------------------------------------------------


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarise(runs: list[dict]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for run in runs:
        for row in run["models"]:
            if row["kind"] != "baseline":
                continue
            s = per.setdefault(row["name"], {"seeds": 0, "dominated": 0, "dominated_p10": 0})
            s["seeds"] += 1
            s["dominated"] += int(row["verdict"]["dominated"])
            s["dominated_p10"] += int(row["verdict_p10"]["dominated"])
    return per


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="budget for a 2-core machine (~5 minutes)")
    p.add_argument(
        "--seeds", type=int, default=None, help="searches, one per seed (1 quick, 3 full)"
    )
    p.add_argument("--trials", type=int, default=None, help="search trials (20 quick, 60 full)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs, both sides (8 / 15)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (3 quick, 5 full)")
    p.add_argument("--resize", type=int, default=None, help="rescale digits, both sides")
    p.add_argument(
        "--long-epochs",
        type=int,
        default=None,
        help="also train each baseline this long, as a budget check (quick: off, full: 4x epochs)",
    )
    p.add_argument("--devices", default=",".join(DEVICES), help="roofline profiles to predict on")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.trials = args.trials or (20 if args.quick else 60)
    args.epochs = args.epochs or (8 if args.quick else 15)
    args.rounds = args.rounds or (3 if args.quick else 5)
    if args.long_epochs is None:
        args.long_epochs = 0 if args.quick else 4 * args.epochs
    args.devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    baselines = QUICK_BASELINES if args.quick else FULL_BASELINES

    import optuna
    import timm
    import torch

    torch.set_num_threads(1)
    started = time.time()
    load_start = os.getloadavg()[0]
    # Written as it measures: the settings now, each seed's run as it ends (Results rewrites the file).
    result = Results(
        args.out,
        {
            "benchmark": "baselines",
            "mode": "quick" if args.quick else "full",
            "settings": {
                "data": "digits",
                "resize": args.resize,
                "seeds": list(range(args.seeds)),
                "trials": args.trials,
                "epochs": args.epochs,
                "long_epochs": args.long_epochs or None,
                "search": "default SearchConfig (nsga2, mobile space, accuracy/latency/size, host latency)",
                "baselines": list(baselines),
                "baseline_creation": "timm.create_model(name, pretrained=False, num_classes=10, in_chans=1)",
                "baseline_recipe": f"search.candidate.train_config(search config, trial_number={BASELINE_TRIAL}) "
                "through ProxyEvaluator, as the search trains its candidates",
                "latency": {
                    "method": "evaluators.measure_latency_ms, batch 1, 1 thread; median over rounds",
                    "cross_check": "hw_profiles.measure.time_round_robin, 1 thread, 10th percentile",
                    "rounds": args.rounds,
                },
                "devices": args.devices,
                "size": "fp32, 4 bytes per parameter (found models: spaces.layers.size_bytes)",
                "dominance": "found model's test accuracy >= and measured latency <=, one strictly",
            },
            "fairness_note": FAIRNESS_NOTE,
            "machine": {
                "cpu": cpu_name(),
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "timm": timm.__version__,
                "optuna": optuna.__version__,
                "load_avg_start": round(load_start, 2),
                "load_avg_end": None,
            },
            "runs": [],
            "summary": {},
            "elapsed_s": None,
        },
    )
    work = Path(tempfile.mkdtemp(prefix="cnas-baselines-"))
    try:
        for seed in range(args.seeds):
            result["runs"].append(run_seed(args, seed, baselines, work))
            result["summary"] = summarise(result["runs"])
            result["elapsed_s"] = round(time.time() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_avg_end"] = round(os.getloadavg()[0], 2)
    result["elapsed_s"] = round(time.time() - started, 1)
    result.finish()
    for name, s in result["summary"].items():
        say(f"{name}: dominated in {s['dominated']}/{s['seeds']} seed(s)")
    say(f"wrote {args.out} in {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
