"""Deep-Compression-style weight sharing on a converged network: ResNet-8 on cifar10_20k.

    python benchmarks/weight_sharing.py [--data npz:PATH] [--epochs 30] [--tune 6] [--quick] [--out PATH]

1. ResNet-8 (MLPerf Tiny's, benchmarks/arena_models.py) trained dense with the final recipe on every
   training image of the file, tested on its held-out ``x_test`` (the checkpoint is kept in
   benchmarks/.cache/, so a rerun starts from it).
2. From that checkpoint, each technique alone and combined, fine-tuned at a tenth of the recipe's peak
   learning rate and distilled from the dense model (T=4, alpha=0.7; ``--no-distill``: labels only;
   variants of one sparsity share its sparsity phases): ternary weights (``wb2``: per-channel scale, levels -1/0/+1, straight-through
   estimator), binary weights (``wb1``: the sign times the channel's mean magnitude), magnitude
   sparsity (three gradual steps), k-means weight sharing with a fine-tuned codebook, sparsity +
   sharing + Huffman coding (Deep Compression's pipeline), and the same sparsity found by
   lottery-ticket rewinding: after each pruning step the whole network returns to its state at the end
   of the first tenth of dense training (kept in the cache beside the dense checkpoint) and trains
   again at the recipe's full learning rate for the same epochs, instead of being fine-tuned.
3. Per variant: test accuracy, the coded size (``evaluators.clustering.coded_size_bytes``: codebooks,
   Huffman-coded indices and zero runs, biases and batch norm at 32 bits), the ratio to the dense fp32
   size, and seconds. Deep Compression's published ratios (35x AlexNet, 49x VGG-16 on ImageNet; Han et
   al., ICLR 2016) are for networks 100-1000x larger, whose layers are far more redundant; they are
   quoted beside, not compared like for like.

Acceptance (issue: the compression toolbox): pruning + clustering + entropy coding >= 20x smaller than
fp32 at <= 1 point lost; ternary within 3 points. Results go to results/weight_sharing.json as each
variant ends, each with the commit that measured it; a rerun skips variants already there.
``--quick``: 3 dense epochs, 1 tuning epoch per phase, on 4,000 images (about 3 minutes here); the
full run about 60 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import Results, commit  # noqa: E402
from arena_models import build_baseline  # noqa: E402

from compactnas.core.data import load_data  # noqa: E402
from compactnas.evaluators import TrainConfig  # noqa: E402
from compactnas.evaluators.clustering import (  # noqa: E402
    cluster,
    coded_size_bytes,
    fix_zeros,
    model_codings,
    sparsify,
    zero_masks,
)
from compactnas.evaluators.distill import distillation_loss_fn  # noqa: E402
from compactnas.evaluators.quantization import attach_fake_quant  # noqa: E402
from compactnas.evaluators.recipes import recipe  # noqa: E402
from compactnas.evaluators.rewinding import Snapshots, rewind, rewind_epoch  # noqa: E402
from compactnas.evaluators.train import LossFn, accuracy, train  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"
CACHE = ROOT / ".cache"
PUBLISHED = {"AlexNet (ImageNet)": 35, "VGG-16 (ImageNet)": 49, "LeNet-5 (MNIST)": 39}
SPARSE_STEPS = 3
TUNE_LR = 0.1
# fine-tuning learns from the dense model's logits (Hinton et al.)
DISTILL_T, DISTILL_ALPHA = 4.0, 0.7

REWIND_SHARE = 0.1  # the rewound variants go back to the end of this share of dense training
# variant -> (sparsity, clusters, weight bits, rewound) for every conv and linear layer
VARIANTS: dict[str, tuple[float, int, int, bool]] = {
    "ternary (wb2)": (0.0, 0, 2, False),
    "binary (wb1)": (0.0, 0, 1, False),
    "sparse 0.8": (0.8, 0, 32, False),
    "sparse 0.8 rewound": (0.8, 0, 32, True),
    "clusters 16": (0.0, 16, 32, False),
    "sparse 0.8 + clusters 16 + Huffman": (0.8, 16, 32, False),
    "sparse 0.9 + clusters 16 + Huffman": (0.9, 16, 32, False),
    "sparse 0.8 + clusters 8 + Huffman": (0.8, 8, 32, False),
    "sparse 0.8 rewound + clusters 8 + Huffman": (0.8, 8, 32, True),
}
SETTING_KEYS = ("sparsity", "clusters", "wbits", "rewound")


def compress_variant(
    model: torch.nn.Module,
    setting: tuple[float, int, int, bool],
    x: torch.Tensor,
    y: torch.Tensor,
    tc: TrainConfig,
    tune: int,
    *,
    loss_fn: LossFn | None = None,
    sparse_cache: dict[tuple[float, bool], dict[str, torch.Tensor]] | None = None,
    early: dict[str, dict[str, torch.Tensor]] | None = None,
) -> int:
    """Compress ``model`` in place to ``setting``; returns the fine-tuning epochs spent.

    ``sparse_cache`` (sparsity -> state dict after the sparsity phases) lets variants that share a
    sparsity start from one sparse model: the phases are deterministic under the seed, so a second run
    of them would only repeat the first. Epochs taken from the cache are counted as spent. A rewound
    setting puts the whole network back to ``early`` (``Snapshots.state`` of the dense training) after
    each pruning step and trains it at the full learning rate.
    """
    sparsity, clusters, wbits, rewound = setting
    if rewound and not early:
        raise ValueError("a rewound variant needs the dense training's early state")
    coding = lambda _name: (sparsity, clusters)  # noqa: E731
    spent = 0
    if sparsity:
        key = (sparsity, rewound)
        if sparse_cache is not None and key in sparse_cache:
            model.load_state_dict(sparse_cache[key])  # plain weights: the zeros are fixed
        else:
            for k in range(1, SPARSE_STEPS + 1):
                sparsify(model, coding, fraction=k / SPARSE_STEPS)
                if rewound and early:
                    rewind(model, early)
                train(model, x, y, dataclasses.replace(tc, seed=tc.seed + k), epochs=tune,
                      lr_scale=1.0 if rewound else TUNE_LR, loss_fn=loss_fn)  # fmt: skip
            zero_masks(model)  # the zeros are fixed; clustering keeps them at its zero entry
            if sparse_cache is not None:
                sparse_cache[key] = copy.deepcopy(model.state_dict())
        spent += SPARSE_STEPS * tune
    if wbits < 32:
        attach_fake_quant(model, lambda _name: (wbits, 32))
    if clusters:
        cluster(model, coding, seed=tc.seed)
    if wbits < 32 or clusters:
        train(model, x, y, dataclasses.replace(tc, seed=tc.seed + 100), epochs=tune,
              lr_scale=TUNE_LR, loss_fn=loss_fn)  # fmt: skip
        spent += tune
    fix_zeros(model)
    return spent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=f"npz:{SHARED / 'cifar10_20k.npz'}")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--tune", type=int, default=6, help="fine-tuning epochs per phase")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--no-distill",
        action="store_true",
        help="fine-tune on the labels alone, not distilled from the dense model",
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    path = args.data.split(":", 1)[-1]
    if args.data.startswith("npz:") and not Path(path).is_file():
        print(f"weight_sharing: no data at {path} (../shared/data is absent): skipped")
        return 0
    if args.quick:
        args.epochs, args.tune = 3, 1
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        print(f"weight_sharing: unknown variant(s) {unknown} (known: {', '.join(VARIANTS)})")
        return 2
    out = args.out or ROOT / "results" / f"weight_sharing{'_quick' if args.quick else ''}.json"
    torch.set_num_threads(args.threads)
    data = load_data(args.data, seed=0)
    x = torch.cat([data.train.x, data.val.x])
    y = torch.cat([data.train.y, data.val.y])
    if args.quick:
        x, y = x[:4000], y[:4000]
    tc = TrainConfig(**recipe("final"), epochs=args.epochs, seed=0, train_device="cpu")
    # The file's commit becomes this run's: variants an earlier run measured keep the earlier one.
    before = json.loads(out.read_text()).get("commit") if out.is_file() else None
    res = Results(out, resume=True, initial={
        "data": args.data, "train_images": len(y), "test_images": len(data.test.y),
        "epochs": args.epochs, "tune_epochs": args.tune, "tune_lr_scale": TUNE_LR,
        "published_ratios": PUBLISHED, "codebook_gradient": "mean",
        "distill": None if args.no_distill else {"temperature": DISTILL_T, "alpha": DISTILL_ALPHA},
    })  # fmt: skip
    CACHE.mkdir(exist_ok=True)
    ckpt = CACHE / f"weight_sharing_resnet8_e{args.epochs}_n{len(y)}.pt"
    r_epoch = rewind_epoch(REWIND_SHARE, args.epochs)
    early_path = ckpt.with_name(f"{ckpt.stem}_epoch{r_epoch}.pt")
    torch.manual_seed(0)
    dense, _ = build_baseline("resnet8", num_classes=data.num_classes, in_chans=3)
    early = None
    if ckpt.is_file():
        dense.load_state_dict(torch.load(ckpt, weights_only=True))
        print(f"dense model from {ckpt}")
        if early_path.is_file():
            early = torch.load(early_path, weights_only=True)
    else:
        t0 = time.time()
        snaps = Snapshots(dense, lambda _name: REWIND_SHARE, args.epochs)
        train(dense, x, y, tc, on_epoch=snaps.after_epoch)
        torch.save(dense.state_dict(), ckpt)
        early = snaps.state
        torch.save(early, early_path)
        res["dense_seconds"] = round(time.time() - t0, 1)
    res["rewind_epoch"] = r_epoch
    fp32 = coded_size_bytes(dense)
    base = accuracy(dense, data.test.x, data.test.y, tc)
    res["dense"] = {"test_accuracy": round(base, 4), "size_bytes": fp32}
    print(f"dense: test {base:.4f}, {fp32:,} bytes", flush=True)
    variants = res.setdefault("variants", {})
    for v in variants.values():
        v.setdefault("commit", before)
    loss_fn = None if args.no_distill else distillation_loss_fn(
        dense, temperature=DISTILL_T, alpha=DISTILL_ALPHA)  # fmt: skip
    sparse_cache: dict[tuple[float, bool], dict[str, torch.Tensor]] = {}
    for name in args.variants.split(","):
        if name in variants:
            print(f"{name}: kept from an earlier run")
            continue
        if VARIANTS[name][3] and early is None:
            print(
                f"{name}: skipped, {early_path} is missing (the dense model was trained before "
                f"rewinding was measured; delete {ckpt} to train it again with its early state)"
            )
            continue
        model = copy.deepcopy(dense)
        t0 = time.time()
        spent = compress_variant(model, VARIANTS[name], x, y, tc, args.tune, loss_fn=loss_fn,
                                 sparse_cache=sparse_cache, early=early)  # fmt: skip
        acc = accuracy(model, data.test.x, data.test.y, tc)
        size = coded_size_bytes(model)
        layers = [dataclasses.asdict(c) for c in model_codings(
            model, lambda n, m=model: int(getattr(m.get_submodule(n), "weight_bits", 32)))]  # fmt: skip
        variants[name] = {
            "setting": dict(zip(SETTING_KEYS, VARIANTS[name], strict=True)),
            "test_accuracy": round(acc, 4), "lost_points": round(100 * (base - acc), 2),
            "size_bytes": size, "ratio": round(fp32 / size, 2), "tune_epochs": spent,
            "seconds": round(time.time() - t0, 1), "layers": layers, "commit": commit(),
        }  # fmt: skip
        res.save()
        print(f"{name}: test {acc:.4f} ({100 * (base - acc):+.2f} pt lost), {size:,} bytes, "
              f"{fp32 / size:.1f}x", flush=True)  # fmt: skip
    res.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def render(ctx: object) -> list[str]:
    """The REPORT.md section, from results/weight_sharing.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("weight_sharing")  # type: ignore[attr-defined]
    out = ["## Weight sharing and entropy coding (ResNet-8, cifar10_20k)", ""]
    if not d:
        return out + ["Not run (no `weight_sharing.json`).", ""]
    dense = d.get("dense") or {}
    out.append(
        f"{d['data'].rsplit('/', 1)[-1]}: dense ResNet-8 trained {d['epochs']} epochs on "
        f"{d['train_images']:,} images; each variant fine-tuned {d['tune_epochs']} epochs per phase; "
        f"commit {str(d.get('commit', 'unknown'))[:12]}."
    )
    if d.get("distill"):
        out.append(
            f"Fine-tuning was distilled from the dense model (T={d['distill']['temperature']}, "
            f"alpha={d['distill']['alpha']})."
        )
    if d.get("codebook_gradient") != "mean":
        out.append(
            "This run predates the mean codebook gradient: each shared value took the sum of its "
            "weights' gradients, which is why 16 clusters alone collapse; rerun to replace it."
        )
    if dense:
        out.append(
            f"Dense fp32: {100 * dense['test_accuracy']:.2f}%, {dense['size_bytes']:,} bytes."
        )
    out += ["", "| variant | test accuracy | points lost | coded bytes | ratio to fp32 | commit |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, v in (d.get("variants") or {}).items():
        # a variant measured by a later run carries its own commit; the others the file's
        at = str(v.get("commit") or d.get("commit", "unknown"))[:12]
        out.append(f"| {name} | {100 * v['test_accuracy']:.2f}% | {v['lost_points']:+.2f} | "
                   f"{v['size_bytes']:,} | {v['ratio']:.1f}x | {at} |")  # fmt: skip
    published = ", ".join(f"{k} {v}x" for k, v in (d.get("published_ratios") or {}).items())
    out += ["", f"Deep Compression's published ratios, on far larger networks: {published}.", ""]
    return out
