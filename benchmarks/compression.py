"""Compression on digits: distillation, int8, pruning, and what a compact model loses against its teacher.

    python benchmarks/compression.py [--quick] [--threads 1] [--out PATH]

1. Distillation against none: the same architectures, seeds, initial weights and epochs, with and
   without the teacher (``--seeds`` >= 5): mean and std of test accuracy, and the paired difference.
2. int8 against fp32: post-training int8 (calibrated on training images) of each fp32 model from (1),
   and 8-bit quantization-aware training of the first architecture within the same epochs.
3. Pruned and fine-tuned (dense training, two pruning steps with fine-tuning, the same total epochs)
   against the same pruned-shape architecture trained from scratch for those epochs.
4. Compression ratio: teacher bytes (fp32) over a compressed, distilled model's bytes (from the string:
   pruned shapes, weight bits), at the test accuracy it loses against the teacher.
5. Wall time of one search trial (evaluate_candidate, latency measured on this host) for a dense and a
   compressed candidate at 15 epochs.
6. The searched keys as a search trains them (the compress evaluator, the same epochs): magnitude
   sparsity fine-tuned against the same sparsity found by lottery-ticket rewinding (``rw``), low-rank
   projections (``lr``), and ternary (``wb2``) and binary (``wb1``) weights in the stages, against the
   dense network: test accuracy and size per variant.

Targets: int8 loses at most 1 point of test accuracy; distillation is not worse than none on average; a
model >= 20x smaller than the teacher loses at most 2 points. Writes benchmarks/results/compression.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from compactnas.core.data import load_data
from compactnas.evaluators import TrainConfig, accuracy, build_pruned_model, count_parameters
from compactnas.evaluators.compression import CompressEvaluator
from compactnas.evaluators.distill import TeacherLogits, distillation_loss_fn, retrain
from compactnas.evaluators.quantization import calibration_batches, post_training_quantize
from compactnas.evaluators.teacher import TeacherConfig, get_teacher
from compactnas.evaluators.train import train
from compactnas.search.candidate import evaluate_candidate
from compactnas.search.config import SearchConfig
from compactnas.spaces import create_model, parse_arch
from compactnas.spaces.layers import count_params, size_bytes

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # _results beside this file, however started
from _results import Results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compression.json"
SHAPE = (1, 8, 8)

# Typical candidates of the mobile and squeeze spaces at 8x8 (about 5k to 50k parameters).
ARCHS = [
    "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r2_k3_s2_e4_c24-ir_r2_k3_s2_e4_c48_se0.25-head_c64",
    "stem_k3_s1_c16-fire_r1_s1_q4_c16-fire_r2_s2_q8_c32-fire_r1_s2_q12_c48-head_c0",
    "stem_k3_s1_c8-ds_r1_k3_s1_e1_c8-ir_r1_k3_s2_e3_c16-ir_r1_k3_s2_e3_c32-head_c0",
]
INT8 = "stem_k3_s1_c16_wb8_ab8-ds_r1_k3_s1_e1_c16_wb8_ab8-ir_r2_k3_s2_e4_c24_wb8_ab8-ir_r2_k3_s2_e4_c48_se0.25_wb8_ab8-head_c64_wb8_ab8"  # fmt: skip
PRUNED = "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r2_k3_s2_e4_c24_pr0.5-ir_r2_k3_s2_e4_c48_se0.25_pr0.5-head_c64"
WINNERS = [
    # int8 everywhere, not pruned (the INT8 string)
    INT8,
    # pruned + int8 everywhere
    "stem_k3_s1_c16_wb8_ab8-ds_r1_k3_s1_e1_c16_wb8_ab8-ir_r2_k3_s2_e4_c24_pr0.5_wb8_ab8-ir_r2_k3_s2_e4_c48_se0.25_pr0.5_wb8_ab8-head_c64_wb8_ab8",
    # pruned + 4-bit weights in the stages, int8 stem and head
    "stem_k3_s1_c16_wb8_ab8-ds_r1_k3_s1_e1_c16_wb4_ab8-ir_r2_k3_s2_e4_c24_pr0.5_wb4_ab8-ir_r2_k3_s2_e4_c48_se0.25_pr0.5_wb4_ab8-head_c64_wb8_ab8",
]  # fmt: skip


# Step 6: ARCHS[0] with one key on every stage that takes it (and the head, for sparsity).
SPARSE = "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16_sp0.75-ir_r2_k3_s2_e4_c24_sp0.75-ir_r2_k3_s2_e4_c48_se0.25_sp0.75-head_c64_sp0.75"  # fmt: skip
KEY_VARIANTS = {
    "dense": ARCHS[0],
    "sp0.75, fine-tuned": SPARSE,
    "sp0.75, rewound to 10% (rw0.1)": SPARSE.replace("_sp0.75", "_sp0.75_rw0.1"),
    "sp0.75, rewound to 30% (rw0.3)": SPARSE.replace("_sp0.75", "_sp0.75_rw0.3"),
    "low rank 0.5 (lr0.5)": "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16_lr0.5-ir_r2_k3_s2_e4_c24_lr0.5-ir_r2_k3_s2_e4_c48_se0.25_lr0.5-head_c64",  # fmt: skip
    "low rank 0.25 (lr0.25)": "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16_lr0.25-ir_r2_k3_s2_e4_c24_lr0.25-ir_r2_k3_s2_e4_c48_se0.25_lr0.25-head_c64",  # fmt: skip
    "ternary stages (wb2)": "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16_wb2-ir_r2_k3_s2_e4_c24_wb2-ir_r2_k3_s2_e4_c48_se0.25_wb2-head_c64",  # fmt: skip
    "binary stages (wb1)": "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16_wb1-ir_r2_k3_s2_e4_c24_wb1-ir_r2_k3_s2_e4_c48_se0.25_wb1-head_c64",  # fmt: skip
}


def keys_step(res: Results, data, epochs: int, seeds: int) -> None:
    """Step 6, saved after each variant: test accuracy (mean, std over seeds) and size."""
    t0 = time.time()
    rows = res.setdefault("searched_keys", {"epochs": epochs, "seeds": seeds, "variants": {}})
    for name, arch in KEY_VARIANTS.items():
        spec = parse_arch(arch)
        accs, sizes = [], []
        for s in range(seeds):
            torch.manual_seed(s)
            model = create_model(spec, num_classes=10, in_chans=1)
            m = CompressEvaluator(train_config=cfg_for(epochs, s)).evaluate(model, spec, data)
            accs.append(accuracy(model, data.test.x, data.test.y))
            sizes.append(m.get("size_bytes", size_bytes(spec, SHAPE, 10)))
        rows["variants"][name] = {"arch": arch, "test_accuracy": stats(accs),
                                  "size_bytes": statistics.fmean(sizes)}  # fmt: skip
        rows["seconds"] = round(time.time() - t0, 1)
        res["searched_keys"] = rows
        say(f"{name}: test {statistics.fmean(accs):.4f}, {statistics.fmean(sizes):.0f} B")


def stats(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def cfg_for(epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, seed=seed)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# One long function on purpose: the benchmark's numbered steps read top to bottom, each saving its
# results as soon as they are measured.
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="budgets for a 2-core machine (a few minutes)"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds for distillation (default 5 quick, 8 full)"
    )
    p.add_argument("--cache", default=str(ROOT / "runs" / "teachers"), help="teacher cache folder")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    quick = args.quick
    epochs = 20 if quick else 40
    seeds = args.seeds or (5 if quick else 8)
    side_seeds = 3 if quick else 5
    t_start = time.time()
    data = load_data("digits", seed=0)
    res = Results(args.out, {
        "mode": "quick" if quick else "full",
        "data": {"name": "digits", "input_shape": list(data.input_shape), "train": len(data.train),
                 "val": len(data.val), "test": len(data.test)},
        "epochs": epochs,
        "threads": args.threads,
        "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                 "load_at_start": round(os.getloadavg()[0], 2)},
    })  # fmt: skip

    # Teacher: trained once, then cached by data source, seed and model name.
    t0 = time.time()
    tc = TeacherConfig()
    teacher, path, meta, cached = get_teacher(
        data, cache_dir=args.cache, source="digits", resize=None, config=tc
    )
    teacher_params = count_parameters(teacher)
    res["teacher"] = {
        "model": tc.model, "params": teacher_params, "size_bytes": teacher_params * 4, "cached": cached,
        "epochs": meta.get("epochs"), "accuracy": accuracy(teacher, data.val.x, data.val.y),
        "test_accuracy": accuracy(teacher, data.test.x, data.test.y), "seconds": round(time.time() - t0, 1),
    }  # fmt: skip
    say(
        f"teacher {tc.model}: test {res['teacher']['test_accuracy']:.4f} ({'cached' if cached else 'trained'})"
    )
    logits = TeacherLogits(teacher)
    kd = distillation_loss_fn(logits, temperature=4.0, alpha=0.7)
    res["distill_settings"] = {"temperature": 4.0, "alpha": 0.7}

    # 1. Distillation against none; 2a. post-training int8 of each fp32 model.
    t0 = time.time()
    dist, ptq = [], []
    for arch in ARCHS:
        spec = parse_arch(arch)
        arms = {"distilled": [], "baseline": []}
        fp32, int8 = [], []
        for s in range(seeds):
            _, m = retrain(spec, data, cfg_for(epochs, s), loss_fn=kd)
            arms["distilled"].append(m["test_accuracy"])
            model, m = retrain(spec, data, cfg_for(epochs, s))
            arms["baseline"].append(m["test_accuracy"])
            fp32.append(m["test_accuracy"])
            q = post_training_quantize(
                copy.deepcopy(model),
                calibration_batches(data.train.x, batches=8, batch_size=64, seed=s),
            )
            int8.append(accuracy(q, data.test.x, data.test.y))
        diffs = [a - b for a, b in zip(arms["distilled"], arms["baseline"], strict=True)]
        dist.append({
            "arch": arch, "params": count_params(spec, SHAPE, 10), "seeds": seeds,
            "distilled": stats(arms["distilled"]), "baseline": stats(arms["baseline"]), "paired_gain": stats(diffs),
        })  # fmt: skip
        ptq.append({"arch": arch, "fp32": stats(fp32), "int8_ptq": stats(int8),
                    "loss_points": 100 * (statistics.fmean(fp32) - statistics.fmean(int8))})  # fmt: skip
        res["distillation"] = {"per_arch": dist}  # so far; completed below
        res["int8"] = {"ptq": ptq}
        say(
            f"distill {arch[:40]}..: {statistics.fmean(arms['distilled']):.4f} vs {statistics.fmean(arms['baseline']):.4f}"
        )
    res["distillation"] = {
        "per_arch": dist,
        "mean_gain_points": 100
        * statistics.fmean(g for d in dist for g in d["paired_gain"]["values"]),
        "seconds": round(time.time() - t0, 1),
    }
    res["teacher_cache"] = {"hits": logits.hits, "misses": logits.misses}

    # 2b. 8-bit QAT of the first architecture against its fp32 runs above (same seeds, same epochs).
    t0 = time.time()
    qat = [
        retrain(parse_arch(INT8), data, cfg_for(epochs, s))[1]["test_accuracy"]
        for s in range(side_seeds)
    ]
    fp32_same = dist[0]["baseline"]["values"][:side_seeds]
    res["int8"] = {
        "ptq": ptq,
        "ptq_mean_loss_points": statistics.fmean(d["loss_points"] for d in ptq),
        "qat8": {"arch": INT8, "fp32": stats(fp32_same), "qat8": stats(qat),
                 "loss_points": 100 * (statistics.fmean(fp32_same) - statistics.fmean(qat))},
        "seconds": round(time.time() - t0, 1),
    }  # fmt: skip
    say(
        f"int8: PTQ loses {res['int8']['ptq_mean_loss_points']:.2f} points, QAT8 {res['int8']['qat8']['loss_points']:.2f}"
    )

    # 3. Pruned and fine-tuned against the pruned shape from scratch, same epochs.
    t0 = time.time()
    spec = parse_arch(PRUNED)
    tuned, scratch = [], []
    for s in range(side_seeds):
        tuned.append(retrain(spec, data, cfg_for(epochs, s))[1]["test_accuracy"])
        torch.manual_seed(s)
        small = build_pruned_model(spec, num_classes=10, in_chans=1)
        for m in small.modules():  # fresh weights, not the random-model channels pruning kept
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        train(small, data.train.x, data.train.y, cfg_for(epochs, s))
        scratch.append(accuracy(small, data.test.x, data.test.y))
    res["pruning"] = {
        "arch": PRUNED, "params": count_params(spec, SHAPE, 10),
        "dense_params": count_params(spec.without_compression(), SHAPE, 10),
        "pruned_finetuned": stats(tuned), "scratch": stats(scratch),
        "gain_points": 100 * (statistics.fmean(tuned) - statistics.fmean(scratch)),
        "seconds": round(time.time() - t0, 1),
    }  # fmt: skip
    say(
        f"pruning: fine-tuned {statistics.fmean(tuned):.4f} vs scratch {statistics.fmean(scratch):.4f}"
    )

    # 4. Compression ratio of distilled, compressed models at the accuracy they lose.
    t0 = time.time()
    ratios = []
    for arch in WINNERS:
        spec = parse_arch(arch)
        accs = [
            retrain(spec, data, cfg_for(epochs, s), loss_fn=kd)[1]["test_accuracy"]
            for s in range(side_seeds)
        ]
        nbytes = size_bytes(spec, SHAPE, 10)
        ratios.append({
            "arch": arch, "size_bytes": nbytes, "params": count_params(spec, SHAPE, 10),
            "ratio": res["teacher"]["size_bytes"] / nbytes, "test_accuracy": stats(accs),
            "loss_points": 100 * (res["teacher"]["test_accuracy"] - statistics.fmean(accs)),
        })  # fmt: skip
        res["compression_ratio"] = {"models": ratios}  # so far; completed below
        say(
            f"winner {nbytes} B ({ratios[-1]['ratio']:.0f}x): loses {ratios[-1]['loss_points']:.2f} points"
        )
    res["compression_ratio"] = {"models": ratios, "seconds": round(time.time() - t0, 1)}

    # 5. One search trial's wall time, dense and compressed (15 epochs, host latency measured).
    cfg = SearchConfig(epochs=15)
    evaluate_candidate(parse_arch(ARCHS[2]), data, cfg.replace(epochs=1), trial_number=0)  # warm-up
    times = {}
    for name, arch in (("dense", ARCHS[0]), ("compressed", WINNERS[-1])):
        t0 = time.time()
        m = evaluate_candidate(parse_arch(arch), data, cfg, trial_number=0)
        times[name] = {
            "arch": arch,
            "seconds": round(time.time() - t0, 2),
            "accuracy": m["accuracy"],
        }
    res["trial_time"] = times

    # 6. The searched keys as a search trains them.
    keys_step(res, data, epochs, side_seeds)

    # Existential target: the least lossy of the models at least 20x smaller than the teacher.
    small = [r for r in ratios if r["ratio"] >= 20]
    best = min(small, key=lambda r: r["loss_points"]) if small else None
    res["targets"] = {
        "int8_ptq_loses_at_most_1_point": {"measured": res["int8"]["ptq_mean_loss_points"],
                                           "met": res["int8"]["ptq_mean_loss_points"] <= 1.0},
        "int8_qat_loses_at_most_1_point": {"measured": res["int8"]["qat8"]["loss_points"],
                                           "met": res["int8"]["qat8"]["loss_points"] <= 1.0},
        "distillation_not_worse_on_average": {"measured": res["distillation"]["mean_gain_points"],
                                              "met": res["distillation"]["mean_gain_points"] >= 0.0},
        "20x_smaller_loses_at_most_2_points": {
            "measured": best["loss_points"] if best else None,
            "ratio": best["ratio"] if best else None,
            "arch": best["arch"] if best else None,
            "met": best is not None and best["loss_points"] <= 2.0,
        },
    }  # fmt: skip
    res["elapsed_s"] = round(time.time() - t_start, 1)
    res["host"]["load_at_end"] = round(os.getloadavg()[0], 2)
    res.finish()
    say(json.dumps(res["targets"], indent=2))
    say(f"wrote {res.path} in {res['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
