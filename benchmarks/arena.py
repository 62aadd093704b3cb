"""Found models against hand-designed ones, trained alike, timed side by side, predicted on devices.

    python benchmarks/arena.py --data SOURCE [--quick] [--trials N] [--search-epochs E] [--final-epochs F]
                               [--seeds K] [--baselines LIST] [--subset N] [--final-subset N] [--workers W] [--out PATH]
                           [--resume]

Steps (each timed; results/arena_<data>.json rewritten after every measured item):
1. search: ``run_search`` with the default space and sampler, proxy-training candidates for E epochs
   (on ``--subset`` training examples when given);
2. retrain: ``compactnas retrain`` of every front model from scratch, F epochs x K seeds, whole split;
3. baselines (benchmarks/arena_models.py): exactly the same final recipe, epochs and seeds;
4. timing: every model in one run on this host, in ONNX Runtime and in eager PyTorch, batch 1, one
   thread, interleaved rounds; median and 10th percentile;
5. predictions on rpi4 and cortex-a76 (fp32) and stm32f746 (int8, with SRAM/flash fit), from the
   architecture string or, for modules the grammar cannot express, a layer list traced from the module.
A baseline is dominated when a found model is at least as accurate (mean test accuracy over seeds) and at
least as fast, strictly better in one (verdicts on ONNX Runtime's median and on each device's prediction).
Images smaller than 32 px (digits) are resized to 32 for every model, found and baseline alike.
``--resume`` keeps what an earlier results file at --out already holds for the same settings: the
search (its front is in the file, so a lost work folder does not matter once the front is retrained),
the retrained front models, and every baseline training made on the same data with the same recipe,
training examples and seeds. A baseline training in progress writes its state to the work folder after
every epoch (``baseline_ckpt/``), and a resumed run carries it on from there. Baselines train cheapest
first (multiply-accumulates), so a stopped run has measured as many as it could. Timing always runs
again, so every model is timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import commit  # noqa: E402
from arena_models import all_baselines, build_baseline, load_mcu  # noqa: E402
from baselines import traced_layers, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"
DEVICES = ("rpi4", "cortex-a76", "stm32f746")
INT8_DEVICES = ("stm32f746",)  # microcontrollers run int8 models
# Quick: measured on cifar10_20k in 34 min end to end on this 2-core machine (27 baselines x 2 seeds
# 28.5 min, the 12-trial search 2.5 min, retraining its 3 front models 2.5 min). ``--trials 24``
# gives a front of 7 models for about 7 min more (search 7.6 min, retraining 4.9 min, measured with
# --resume). Final training there uses a stratified subset of the training split; the full settings
# train on all of it.
QUICK = {
    "trials": 12, "search_epochs": 2, "subset": 5000, "val_subset": 1000,
    "final_epochs": 3, "final_subset": 5000, "seeds": 2,
}  # fmt: skip
FULL = {
    "trials": 40, "search_epochs": 8, "subset": None, "val_subset": None,
    "final_epochs": 30, "final_subset": None, "seeds": 3,
}  # fmt: skip
# Converged: every final model (found and baseline) trained with the final recipe on the whole training
# split for 30 epochs (where ResNet-8 plateaus: results/recipe_convergence.json), 2 seeds; the search
# stays a proxy search. Each training is written as it ends, and --resume keeps the search, the
# retrained models and every baseline seed already measured.
CONVERGED = {
    "trials": 24, "search_epochs": 4, "subset": 5000, "val_subset": 1000,
    "final_epochs": 30, "final_subset": None, "seeds": 2,
}  # fmt: skip
CONVERGED_BASELINES = (
    "resnet8", "resnet10t@s1", "mobilenetv3_small_050@s1", "mobilenetv3_small_075@s1",
    "mobilenetv2_035@s1", "lcnet_050@s1", "mcunet-in0",
)  # fmt: skip


def slug(source: str) -> str:
    name = Path(source.partition(":")[2]).stem if ":" in source else source
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "data"


def say(msg: str) -> None:
    print(f"[arena {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write(path: Path, doc: dict[str, Any]) -> None:
    """Atomically, with the commit of the code that measured it."""
    doc.setdefault("commit", commit())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def stats(values: Sequence[float]) -> dict[str, Any]:
    v = list(values)
    return {
        "values": v,
        "mean": statistics.fmean(v),
        "std": statistics.stdev(v) if len(v) > 1 else 0.0,
        "min": min(v),
        "max": max(v),
    }


# -- training (in worker processes) -----------------------------------------------------------------

_DATA: Any = None


def _init_worker(
    source: str, seed: int, resize: int | None, threads: int, final_subset: int | None = None
) -> None:
    import torch

    from compactnas.core.data import load_data, take_subset

    global _DATA
    torch.set_num_threads(threads)
    _DATA = take_subset(load_data(source, seed=seed, resize=resize), train=final_subset, seed=seed)


def _train_job(
    name: str,
    seed_index: int,
    recipe: dict[str, Any],
    mcu_path: str | None,
    ckpt_dir: str | None = None,
) -> dict:
    """One baseline, one seed: trained from a seeded init with the final recipe on the whole split,
    its state written after every epoch to ``ckpt_dir`` (and carried on from there when present)."""
    import torch

    from compactnas.evaluators import TrainConfig, accuracy
    from compactnas.evaluators.train import train

    data = _DATA
    tc = TrainConfig(**{**recipe, "seed": recipe["seed"] * 1000 + seed_index})
    mcu = load_mcu(Path(mcu_path)) if mcu_path else None
    torch.manual_seed(tc.seed)
    model, _ = build_baseline(
        name, num_classes=data.num_classes, in_chans=data.input_shape[0], mcu=mcu
    )
    t0 = time.time()
    curve: list[float] = []

    def report(epoch: int, acc: float) -> bool:  # validation accuracy after each epoch
        curve.append(round(acc, 4))
        return False

    ckpt = (
        Path(ckpt_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}_{tc.seed}.pt"
        if ckpt_dir
        else None
    )
    out = train(model, data.train.x, data.train.y, tc, val=(data.val.x, data.val.y),
                report=report, checkpoint=ckpt)  # fmt: skip
    loss = out["loss"]
    res = {
        "name": name,
        "seed": tc.seed,
        "val_curve": curve,
        # the convergence check: what the last epochs still gained (validation accuracy)
        "last5_gain": round(curve[-1] - curve[-6], 4) if len(curve) > 5 else None,
        "accuracy": accuracy(model, data.val.x, data.val.y, tc),
        "test_accuracy": accuracy(model, data.test.x, data.test.y, tc),
        "train_loss": float(loss),
        "seconds": round(time.time() - t0, 2),
    }
    if out["resumed_from"]:  # its seconds are this process's only: say from which epoch it ran
        res["resumed_from_epoch"] = int(out["resumed_from"])
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    return res


# -- static facts, timing, predictions --------------------------------------------------------------


def static_facts(model: Any, shape: tuple[int, int, int], arch: str | None, nc: int) -> dict:
    from compactnas.evaluators import count_macs, count_parameters
    from compactnas.hw_profiles import create_latency_model
    from compactnas.hw_profiles.analysis import roofline_ms, weight_bytes
    from compactnas.hw_profiles.memory_plan import arena_bytes
    from compactnas.spaces.layers import arch_layers

    params = count_parameters(model)
    out: dict[str, Any] = {
        "params": params,
        "macs": count_macs(model, shape),
        "size_bytes": 4 * params,
    }
    if arch is not None:
        base = tuple(arch_layers(arch, shape, nc))
        basis = "architecture string"
    else:
        base = tuple(traced_layers(model, shape))
        basis = "layer list traced from the module"
    layers = {32: base, 8: tuple(_with_bits(base, 8))}
    out["prediction_basis"] = basis
    for dev in DEVICES:
        lm = create_latency_model(dev, num_classes=nc)
        bits = 8 if dev in INT8_DEVICES else 32
        ls = layers[bits]
        entry = {
            "latency_ms": roofline_ms(lm.profile, ls),
            "precision": f"int{bits}" if bits == 8 else "fp32",
        }
        mem = lm.profile.memory
        if mem is not None:
            sram = arena_bytes(ls, mem.planner) / 1024 + mem.runtime_sram_kb
            flash = weight_bytes(ls) / 1024 + mem.code_flash_kb
            entry.update(
                peak_sram_kb=sram,
                flash_kb=flash,
                fits=sram <= mem.sram_kb and flash <= mem.flash_kb,
            )
        out[f"predicted_{dev}"] = entry
    return out


def _with_bits(layers: Sequence[Any], bits: int) -> list[Any]:
    from dataclasses import replace

    return [replace(layer, wbits=bits, abits=bits) for layer in layers]


def time_side_by_side(
    models: dict[str, Any], shape: tuple[int, int, int], *, rounds: int, sample_s: float = 0.02
) -> dict[str, dict[str, float]]:
    """Every model in ONNX Runtime and eager PyTorch, one thread, batch 1: the models are visited in
    turn for ``rounds`` rounds (so no model gets all of a neighbour's quiet or busy spells); each visit
    takes one sample of ~``sample_s`` seconds per runtime. Median and 10th percentile per call."""
    import numpy as np
    import torch

    from compactnas.evaluators.latency import latency_timer

    torch.set_num_threads(1)
    timers: dict[tuple[str, str], tuple[Any, int]] = {}
    for name, model in models.items():
        for rt in ("onnxruntime", "torch"):
            t = latency_timer(model, shape, threads=1, runtime=rt)
            with torch.inference_mode():
                per = t.timeit(5).mean
            timers[(name, rt)] = (t, max(1, int(sample_s / max(per, 1e-7))))
    got: dict[tuple[str, str], list[float]] = {k: [] for k in timers}
    with torch.inference_mode():
        for _ in range(rounds):
            for key, (t, n) in timers.items():
                got[key].append(t.timeit(n).mean * 1e3)
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    for (name, rt), v in got.items():
        tag = "ort" if rt == "onnxruntime" else "torch"
        out[name][f"{tag}_median_ms"] = float(np.median(v))
        out[name][f"{tag}_p10_ms"] = float(np.quantile(v, 0.1))
    return out


# -- verdicts ---------------------------------------------------------------------------------------


def verdicts(doc: dict[str, Any]) -> None:
    """Adds dominated_measured and dominated_<device> (with the numbers behind them) to every baseline."""

    def row(e: dict[str, Any], lat: float | None) -> dict[str, Any] | None:
        if lat is None or "test_accuracy" not in e:
            return None
        return {
            "trial": e.get("trial", e.get("name")),
            "test_accuracy": e["test_accuracy"]["mean"],
            "latency_ms": lat,
        }

    def lat_of(e: dict[str, Any], where: str) -> float | None:
        if where == "measured":
            return (e.get("timing") or {}).get("ort_median_ms")
        return (e.get(f"predicted_{where}") or {}).get("latency_ms")

    for b in doc["baselines"].values():
        for where in ("measured", *DEVICES):
            me = row(b, lat_of(b, where))
            found = [r for f in doc["found"] if (r := row(f, lat_of(f, where))) is not None]
            if me is None or not found:
                continue
            v = verdict(me, found)
            b[f"dominated_{where.replace('-', '_')}"] = v["dominated"]
            b[f"verdict_{where.replace('-', '_')}"] = v


# -- the run ----------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="digits, npz:PATH, folder:PATH or cifar10:PATH")
    p.add_argument("--quick", action="store_true", help=f"quick settings {QUICK}")
    p.add_argument(
        "--converged",
        action="store_true",
        help=f"train to convergence: {CONVERGED}, baselines {','.join(CONVERGED_BASELINES)}",
    )
    p.add_argument("--trials", type=int)
    p.add_argument("--search-epochs", type=int)
    p.add_argument("--final-epochs", type=int)
    p.add_argument("--seeds", type=int)
    p.add_argument("--subset", type=int, help="training examples per search candidate")
    p.add_argument("--val-subset", type=int, help="validation examples per search candidate")
    p.add_argument(
        "--final-subset", type=int, help="training examples for final training (smoke runs only)"
    )
    p.add_argument("--baselines", help="comma-separated (default: all; NAME@s1 = small-input form)")
    p.add_argument("--resize", type=int, help="default: 32 for images under 32 px, else none")
    p.add_argument(
        "--workers", type=int, help="processes training baselines at once (2 quick, all cores full)"
    )
    p.add_argument("--rounds", type=int, help="timing rounds (default 5 quick, 15 full)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mcu", type=Path, default=SHARED / "mcu" / "mcu_reference.json")
    p.add_argument("--work", type=Path, help="folder for the search (default runs/arena_<data>)")
    p.add_argument("--out", type=Path, help="results JSON (default results/arena_<data>.json)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the baseline trainings of the results file at --out when they match",
    )
    return p.parse_args(argv)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    s = dict(CONVERGED if args.converged else QUICK if args.quick else FULL)
    for k in (
        "trials",
        "search_epochs",
        "final_epochs",
        "seeds",
        "subset",
        "val_subset",
        "final_subset",
    ):
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    s["rounds"] = args.rounds or (5 if args.quick else 15)
    s["workers"] = args.workers or (2 if args.quick else (os.cpu_count() or 1))
    s["seed"] = args.seed
    return s


def run_search_step(args, s, data, resize, work, doc, path, prev=None) -> dict[str, Any]:
    from compactnas.search import SearchConfig, run_search
    from compactnas.search.results import load_summary

    t0 = time.time()
    cfg = SearchConfig(
        data=args.data, resize=resize, trials=s["trials"], epochs=s["search_epochs"],
        subset=s["subset"], val_subset=s["val_subset"], population=max(2, min(8, s["trials"] // 2)), seed=s["seed"],
        out=str(work / "search"), experiment="arena",
    )  # fmt: skip
    done = work / "search" / "summary.json"
    if prev and same_search((prev.get("search") or {}).get("config"), cfg.to_dict()):
        # --resume: the same search already ran. Its front is in the results file, so a lost work
        # folder costs nothing unless the front models still have to be retrained.
        if done.is_file():
            summary = load_summary(work / "search")
        elif "retrain_s" not in (prev.get("steps") or {}):
            summary = None  # neither the folder nor the retrained models: search again
        else:
            summary = {"config": prev["search"]["config"], "pareto": prev["search"]["front"]}
        if summary is not None:
            doc["steps"]["search_s"] = (prev.get("steps") or {}).get("search_s")
            doc["search"] = prev["search"]
            say(f"search: kept from the earlier run ({len(summary['pareto'])} front models)")
            write(path, doc)
            return summary
    if (work / "search").exists():
        import shutil

        shutil.rmtree(work / "search")  # another search's folder: this one starts anew
    result = run_search(cfg, data=data, quiet=True)
    doc["steps"]["search_s"] = round(time.time() - t0, 1)
    doc["search"] = {
        "config": cfg.to_dict(),
        "n_complete": result.summary["n_complete"],
        "front": result.summary["pareto"],
    }
    write(path, doc)
    return result.summary


def same_search(before: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    """Whether an earlier run's search settings are this run's. A setting the earlier run's code did
    not have yet counts as the same when it is at its default now (a new option changes no old search)."""
    from compactnas.search.config import SearchConfig

    if not before:
        return False
    defaults = SearchConfig().to_dict()
    return all(before.get(k, defaults.get(k)) == v for k, v in now.items())


def kept_retrain(prev: dict[str, Any] | None, doc: dict[str, Any]) -> list[dict] | None:
    """The earlier run's retrained front models, when this run would retrain the same ones the same
    way: the same search front, final epochs, seeds and training examples."""
    if (
        not prev
        or prev.get("search") != doc.get("search")
        or "retrain_s" not in prev.get("steps", {})
    ):
        return None
    same = ("final_epochs", "seeds", "final_subset")
    if any((prev.get("settings") or {}).get(k) != doc["settings"].get(k) for k in same):
        return None
    if prev.get("final_train_examples") != doc.get("final_train_examples"):
        return None
    found = prev.get("found") or []
    if sorted(f["trial"] for f in found) != sorted(r["trial"] for r in doc["search"]["front"]):
        return None
    return found


def run_retrain_step(s, data, work, doc, path, prev=None) -> None:
    from compactnas.search.workflows.retrain import RetrainConfig, run_retrain

    kept = kept_retrain(prev, doc)
    if kept is not None:
        doc["found"] = [dict(f) for f in kept]
        doc["steps"]["retrain_s"] = prev["steps"]["retrain_s"]
        say(f"retrain: kept from the earlier run ({len(kept)} front models)")
        write(path, doc)
        return
    if not (work / "search" / "summary.json").is_file():
        raise SystemExit(
            f"arena: {work / 'search'} is gone and the earlier retraining does not match these "
            "settings; run again without --resume"
        )
    t0 = time.time()
    front = doc["search"]["front"]
    cfg = RetrainConfig(
        top=len(front), epochs=s["final_epochs"], seeds=s["seeds"], threads=s["workers"]
    )
    report = run_retrain(work / "search", cfg, data=data, quiet=False)
    by_trial = {r["trial"]: r for r in front}
    for m in report["models"]:
        row = by_trial.get(m["trial"], {})
        doc["found"].append({
            "trial": m["trial"], "arch": m["arch"], "search_accuracy": m["search_accuracy"],
            "search_latency_ms": row.get("latency_ms"), "accuracy": m["accuracy"],
            "test_accuracy": m["test_accuracy"], "train_loss": m["train_loss"],
            "train_seconds": sum(x["seconds"] for x in m["seeds"]),
        })  # fmt: skip
    doc["steps"]["retrain_s"] = round(time.time() - t0, 1)
    write(path, doc)


def reusable_baselines(prev: dict[str, Any] | None, doc: dict[str, Any]) -> dict[str, list[dict]]:
    """Baseline seed results of an earlier run that this one would reproduce exactly: same data,
    resize, recipe and training examples. Keyed by baseline name."""
    if not prev:
        return {}
    same = ("data", "resize", "recipe", "final_train_examples")
    if any(prev.get(k) != doc.get(k) for k in same):
        return {}
    return {n: list(b.get("seeds") or []) for n, b in prev.get("baselines", {}).items()}


def cheapest_first(names: Sequence[str], data: Any, mcu_path: str | None) -> list[str]:
    """Baseline names in order of multiply-accumulates per image, so a stopped run has the most done."""
    from compactnas.evaluators import count_macs

    mcu = load_mcu(Path(mcu_path)) if mcu_path else None
    shape, nc = data.input_shape, data.num_classes

    def macs(n: str) -> int:
        return count_macs(build_baseline(n, num_classes=nc, in_chans=shape[0], mcu=mcu)[0], shape)

    return sorted(names, key=macs)


def run_baselines_step(
    args, s, names, recipe, resize, data, doc, path, reuse=None, work=None
) -> None:
    t0 = time.time()
    mcu = str(args.mcu) if args.mcu.is_file() else None
    ckpt_dir = str(Path(work) / "baseline_ckpt") if work is not None else None
    seeds: dict[str, list[dict]] = {n: [] for n in names}
    kept = 0
    for n in names:
        for r in (reuse or {}).get(n, []):
            i = r["seed"] - recipe["seed"] * 1000
            if 0 <= i < s["seeds"] and all(x["seed"] != r["seed"] for x in seeds[n]):
                seeds[n].append(r)
                kept += 1
    jobs = [
        (n, i)
        for n in cheapest_first(names, data, mcu)
        for i in range(s["seeds"])
        if all(r["seed"] != recipe["seed"] * 1000 + i for r in seeds[n])
    ]
    if kept:
        doc["baselines_reused"] = kept
        say(f"baselines: {kept} trainings kept from the earlier run, {len(jobs)} to do")

    def record(res: dict[str, Any]) -> None:
        name = res["name"]
        seeds[name].append(res)
        b = doc["baselines"].setdefault(name, {"name": name})
        b["seeds"] = seeds[name]
        for k in ("accuracy", "test_accuracy", "train_loss"):
            b[k] = stats([r[k] for r in seeds[name]])
        b["train_seconds"] = sum(r["seconds"] for r in seeds[name])
        say(
            f"{name} seed {res['seed']}: test {res['test_accuracy']:.4f}, loss {res['train_loss']:.3f}, {res['seconds']:.0f} s"
        )
        write(path, doc)

    for name in names:  # kept results enter the document as fresh ones do
        for res in list(seeds[name]):
            seeds[name].remove(res)
            record(res)

    init = (args.data, s["seed"], resize, 1, s["final_subset"])
    if s["workers"] <= 1:
        global _DATA
        _DATA = data  # already loaded here
        for n, i in jobs:
            record(_train_job(n, i, recipe, mcu, ckpt_dir))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(s["workers"], mp.get_context("spawn"), _init_worker, init) as pool:
            futs = [pool.submit(_train_job, n, i, recipe, mcu, ckpt_dir) for n, i in jobs]
            for f in as_completed(futs):
                record(f.result())
    doc["steps"]["baselines_s"] = round(time.time() - t0, 1)
    write(path, doc)


def run_measure_step(args, s, data, names, doc, path) -> None:
    from compactnas.spaces import create_model

    t0 = time.time()
    shape, nc = data.input_shape, data.num_classes
    mcu = load_mcu(args.mcu) if args.mcu.is_file() else None
    models: dict[str, Any] = {}
    archs: dict[str, str | None] = {}
    for f in doc["found"]:
        key = f"trial_{f['trial']}"
        models[key], archs[key] = (
            create_model(f["arch"], num_classes=nc, in_chans=shape[0]),
            f["arch"],
        )
    for n in names:
        models[n], info = build_baseline(n, num_classes=nc, in_chans=shape[0], mcu=mcu)
        archs[n] = info.get("arch")
        doc["baselines"].setdefault(n, {"name": n}).update(info)
    for key, m in models.items():
        facts = static_facts(m, shape, archs[key], nc)
        target = (
            doc["baselines"][key]
            if key in doc["baselines"]
            else next(f for f in doc["found"] if f"trial_{f['trial']}" == key)
        )
        target.update(facts)
    write(path, doc)
    timing = time_side_by_side(models, shape, rounds=s["rounds"])
    for f in doc["found"]:
        f["timing"] = timing[f"trial_{f['trial']}"]
    for n in names:
        doc["baselines"][n]["timing"] = timing[n]
    doc["steps"]["measure_s"] = round(time.time() - t0, 1)
    verdicts(doc)
    write(path, doc)


def main(argv: list[str] | None = None) -> int:
    from dataclasses import asdict

    from compactnas.core.data import load_data, take_subset
    from compactnas.core.errors import CompactnasError
    from compactnas.core.host import host_description
    from compactnas.search.workflows.retrain import final_train_config

    args = parse(argv)
    s = settings_of(args)
    default = list(CONVERGED_BASELINES) if args.converged else all_baselines()
    names = args.baselines.split(",") if args.baselines else default
    unknown = sorted(set(n for n in names) - set(all_baselines()))
    if unknown:
        print(
            f"arena: unknown baseline(s) {', '.join(unknown)} (known: {', '.join(all_baselines())})",
            file=sys.stderr,
        )
        return 2
    if not args.mcu.is_file():
        names = [n for n in names if not n.startswith(("mcunet", "mbv2", "proxyless"))]
        say(f"{args.mcu} is absent: MCU reference networks left out")
    try:
        probe = load_data(args.data, seed=args.seed)
    except CompactnasError as e:
        print(f"arena: {e} (real data lives in {SHARED}; see its README)", file=sys.stderr)
        return 2
    resize = args.resize or (32 if probe.image_size < 32 else None)
    data = load_data(args.data, seed=args.seed, resize=resize) if resize else probe
    name = slug(args.data) + ("_converged" if args.converged else "")
    path = args.out or ROOT / "results" / f"arena_{name}.json"
    work = args.work or ROOT.parent / "runs" / f"arena_{name}"
    prev = json.loads(path.read_text()) if args.resume and path.is_file() else None
    t_all = time.time()
    doc: dict[str, Any] = {
        "benchmark": "arena", "data": args.data, "data_name": name, "resize": resize,
        "input_shape": list(data.input_shape), "num_classes": data.num_classes,
        "train_examples": len(data.train),
        "test_examples": len(data.test), "settings": s, "host": host_description(),
        "cpu_count": os.cpu_count(), "status": "running", "steps": {}, "found": [], "baselines": {},
        "devices": {d: ("int8" if d in INT8_DEVICES else "fp32") for d in DEVICES},
    }  # fmt: skip
    write(path, doc)
    say(
        f"search: {s['trials']} trials x {s['search_epochs']} epochs on {data.name} {data.input_shape}"
    )
    summary = run_search_step(args, s, data, resize, work, doc, path, prev)
    final = take_subset(data, train=s["final_subset"], seed=args.seed)
    doc["final_train_examples"] = len(final.train)
    say(
        f"retrain: {len(doc['search']['front'])} front models x {s['seeds']} seeds x {s['final_epochs']} epochs"
    )
    run_retrain_step(s, final, work, doc, path, prev)
    tc = final_train_config(summary.get("config") or {}, epochs=s["final_epochs"], seed=s["seed"])
    recipe = asdict(tc)
    doc["recipe"] = recipe
    say(f"baselines: {len(names)} x {s['seeds']} seeds x {s['final_epochs']} epochs")
    reuse = reusable_baselines(prev, doc)
    if prev and not reuse:
        say(
            f"--resume: {path} was made with other data, recipe or examples; training every baseline"
        )
    if reuse:
        doc["earlier_baselines_s"] = (prev.get("steps") or {}).get("baselines_s")
    run_baselines_step(args, s, names, recipe, resize, final, doc, path, reuse, work)
    say("timing and predictions")
    run_measure_step(args, s, data, names, doc, path)
    doc["status"] = "complete"
    doc["elapsed_s"] = round(time.time() - t_all, 1)
    write(path, doc)
    say(f"done in {doc['elapsed_s'] / 60:.1f} min; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
