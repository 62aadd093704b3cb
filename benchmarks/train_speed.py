"""How fast the training engine trains: images/s and achieved GFLOP/s against this host's measured peak.

    python benchmarks/train_speed.py [--quick] [--devices cpu,cuda] [--batch 128] [--steps N] [--out PATH]

For ResNet-8 (MLPerf Tiny's CIFAR-10 network), mobilenetv2_035 in its small-input form (first stride 1)
and a found model (an architecture string of the arena's front), on 32x32 RGB inputs at batch 128,
channels-last, the crop-flip augmentation of ``train()`` included: training steps per second in four
modes (eager or ``torch.compile``, fp32 or mixed precision: bf16 autocast on the CPU, the engine's
choice on CUDA), on the CPU and, where present, on CUDA. FLOPs per step are the forward pass's, counted by
torch.utils.flop_counter, times 3 (forward and backward); the peak is a 2048x2048 matrix multiply timed in the
same run, fp32 and bf16. Compile time (the first steps of a compiled model, with a cold compiler cache of the run's own)
is reported apart from the steady rate. Each measurement is written to results/train_speed.json as it is taken; a rerun keeps
those already there (delete the file to measure anew). Quick settings (CPU, 12 timed steps): about
6 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# A cold compiler cache of this run's own: compile time as a user's first search meets it, not what an
# earlier run left in /tmp/torchinductor_<user>.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="train-speed-inductor-"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _results import Results  # noqa: E402
from arena_models import build_baseline  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from compactnas.evaluators import TrainConfig  # noqa: E402
from compactnas.evaluators.device import autocast, resolve_precision  # noqa: E402
from compactnas.evaluators.train import augment_batch, backward_step, make_optimizer  # noqa: E402
from compactnas.spaces import create_model  # noqa: E402

ROOT = Path(__file__).resolve().parent
# The most accurate model of the arena's quick front (results/arena_cifar10_20k.json, trial 14).
FOUND = (
    "stem_k3_s2_c16-ds_r2_k5_s1_e1_c32-cn_r1_k7_s2_c48-ds_r1_k3_s2_e1_c64-"
    "ir_r1_k7_s1_e6_c192_se0.25-head_c0"
)
MODELS = ("resnet8", "mobilenetv2_035@s1", "found")
MODES = ("eager-fp32", "eager-amp", "compiled-fp32", "compiled-amp")


def build(name: str) -> torch.nn.Module:
    if name == "found":
        return create_model(FOUND, num_classes=10, in_chans=3)
    return build_baseline(name, num_classes=10, in_chans=3)[0]


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_gflops(dev: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Forward FLOPs x 3 (the backward pass costs about twice the forward). The counter's own count of
    the backward pass is not used: it ignores the groups of a grouped convolution's backward, which
    counts a depthwise layer's gradient as a dense one (19x the forward on a mobile network)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return 3 * counter.get_total_flops()


def time_training(name: str, mode: str, dev: torch.device, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = build(name).to(dev).to(memory_format=torch.channels_last).train()
    tc = TrainConfig(optimizer="sgd", lr=0.05, precision="amp" if mode.endswith("amp") else "fp32")
    prec = resolve_precision(tc.precision, dev)
    opt = make_optimizer(model, tc, tc.lr)
    scaler = torch.amp.GradScaler(dev.type) if prec.scaled else None
    x = torch.randn(batch * 4, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch * 4,), device=dev)
    flops = step_flops(model, x[:batch].contiguous(memory_format=torch.channels_last), y[:batch])
    run = torch.compile(model) if mode.startswith("compiled") else model
    gen = torch.Generator().manual_seed(0)

    def one(i: int) -> None:
        sl = slice((i % 4) * batch, (i % 4 + 1) * batch)
        xb = augment_batch(x[sl], "crop-flip", gen).contiguous(memory_format=torch.channels_last)
        with autocast(dev, prec):
            loss = F.cross_entropy(run(xb).float(), y[sl])
        backward_step(loss, opt, scaler)  # the engine's own step

    t0 = time.perf_counter()
    for i in range(3):  # warm-up; for a compiled model, the compilation
        one(i)
    sync(dev)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    sync(dev)
    dt = (time.perf_counter() - t0) / steps
    return {
        "images_per_s": round(batch / dt, 1),
        "step_ms": round(dt * 1000, 2),
        "gflop_per_step": round(flops / 1e9, 3),
        "gflops": round(flops / dt / 1e9, 1),
        "first_3_steps_s": round(warm, 2),
        "precision": prec.name,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU only, 12 timed steps")
    p.add_argument(
        "--devices", help="comma-separated: cpu, cuda (default: cpu and cuda if present)"
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, help="timed steps per mode (default 12 quick, 30 full)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: all cores)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "train_speed.json")
    args = p.parse_args(argv)
    steps = args.steps or (12 if args.quick else 30)
    devices = (args.devices or ("cpu" if args.quick else "cpu,cuda")).split(",")
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    if args.threads:
        torch.set_num_threads(args.threads)
    res = Results(args.out, {"benchmark": "train_speed", "batch": args.batch, "steps": steps,
                             "threads": torch.get_num_threads()}, resume=True)  # fmt: skip
    peaks = res.setdefault("peak_gflops", {})
    rows = res.setdefault("rows", {})
    for d in devices:
        dev = torch.device(d)
        if d not in peaks:
            peaks[d] = {"fp32": round(peak_gflops(dev, torch.float32), 1),
                        "bf16": round(peak_gflops(dev, torch.bfloat16), 1)}  # fmt: skip
            res.save()
            print(f"{d}: matmul peak fp32 {peaks[d]['fp32']} GFLOP/s, bf16 {peaks[d]['bf16']}")
        for name in args.models.split(","):
            for mode in MODES:
                key = f"{d}/{name}/{mode}"
                if key in rows:
                    continue
                try:
                    r = time_training(name, mode, dev, args.batch, steps)
                except Exception as e:  # noqa: BLE001 - a mode that cannot run here is a row saying so
                    r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                if "gflops" in r:  # against the faster of the two matmul rates: the host's best
                    r["share_of_peak"] = round(r["gflops"] / max(peaks[d].values()), 3)
                rows[key] = r
                res.save()
                print(f"{key}: {r}", flush=True)
    res.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def render(ctx: object) -> list[str]:
    """The REPORT.md section, from results/train_speed.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("train_speed")  # type: ignore[attr-defined]
    out = ["## Training speed", ""]
    if not d:
        return out + ["Not run (no `train_speed.json`).", ""]
    peaks = d.get("peak_gflops", {})
    out.append(
        f"Batch {d['batch']}, {d['steps']} timed steps per mode, {d.get('threads')} CPU thread(s), "
        "32x32 RGB, channels-last, crop-flip included; commit "
        f"{str(d.get('commit', 'unknown'))[:12]}. Matmul peak (2048x2048): "
        + "; ".join(f"{k} fp32 {v['fp32']} GFLOP/s, bf16 {v['bf16']}" for k, v in peaks.items())
        + "."
    )
    out += ["", "| device / model / mode | images/s | GFLOP/s | share of peak | first 3 steps s |",
            "|---|---|---|---|---|"]  # fmt: skip
    for key, r in d.get("rows", {}).items():
        if "error" in r:
            out.append(f"| {key} | {r['error']} | | | |")
        else:
            out.append(f"| {key} ({r['precision']}) | {r['images_per_s']:.0f} | {r['gflops']:.1f} | "
                       f"{100 * r['share_of_peak']:.1f}% | {r['first_3_steps_s']:.1f} |")  # fmt: skip
    return [*out, ""]
