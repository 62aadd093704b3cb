"""``compactnas supernet train``: train a weight-sharing supernet once, then search inside it."""

from __future__ import annotations

import argparse
from typing import Any

from compactnas.search.supernet.epochs import SPACES, SupernetConfig
from compactnas.search.supernet.training import train_supernet


def add_parser(sub: Any) -> None:
    d = SupernetConfig()
    p = sub.add_parser(
        "supernet",
        help="train a weight-sharing supernet (searched with --evaluator supernet)",
        description="Weight-sharing supernets: one training, then candidates evaluated with inherited "
        "weights (compactnas search --evaluator supernet --supernet DIR).",
    )
    cmds = p.add_subparsers(dest="supernet_command", metavar="COMMAND")
    t = cmds.add_parser(
        "train",
        help="train a supernet with the sandwich rule and in-place distillation",
        description="Train an elastic supernet over a space: per step the largest sub-network on the "
        "labels, the smallest and a few random ones on the largest's soft predictions. The checkpoint "
        "OUT/supernet.pt is replaced after every epoch (--resume continues from it); curves and the "
        "checkpoint go to MLflow.",
    )
    t.add_argument(
        "--space", default=d.space, help=f"space ({', '.join(SPACES)}; default {d.space})"
    )
    t.add_argument("--data", default=d.data, help=f"data source (default {d.data})")
    t.add_argument("--resize", type=int, default=None, metavar="N", help="rescale images to N px")
    t.add_argument(
        "--subset", type=int, default=None, metavar="N", help="train on N stratified examples"
    )
    t.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    t.add_argument("--optimizer", default=d.optimizer, help=f"adamw or sgd (default {d.optimizer})")
    t.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="(default 0.1)")
    t.add_argument(
        "--augment", default=d.augment, help="auto, crop-flip, shift or off (default auto)"
    )
    t.add_argument(
        "--random-subnets",
        type=int,
        default=d.n_random,
        metavar="N",
        help=f"random sub-networks per step beside the largest and smallest (default {d.n_random})",
    )
    t.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help=f"distillation temperature (default {d.temperature:g})",
    )
    t.add_argument("--seed", type=int, default=d.seed, help="split and training seed (default 0)")
    t.add_argument("--threads", type=int, default=d.threads, help="torch threads (default 1)")
    t.add_argument(
        "--backend",
        default=d.backend,
        help="local (default) or ray: Ray Train's TorchTrainer, data-parallel workers (gloo on CPU)",
    )
    t.add_argument("--workers", type=int, default=d.workers, help="Ray Train workers (default 2)")
    t.add_argument("--address", default=None, help="Ray cluster to join (default: a local one)")
    t.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    t.add_argument("--resume", action="store_true", help="continue the supernet in --out")
    t.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (OUT/mlflow.db)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=_cmd_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = SupernetConfig(
        space=args.space, data=args.data, resize=args.resize, subset=args.subset, seed=args.seed, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        label_smoothing=args.label_smoothing, augment=args.augment, n_random=args.random_subnets,
        temperature=args.temperature, threads=args.threads, out=args.out, resume=args.resume,
        tracking_uri=args.tracking_uri, backend=args.backend, workers=args.workers,
        address=args.address,
    )  # fmt: skip
    meta = train_supernet(cfg, quiet=args.quiet)
    last = meta["history"][-1] if meta["history"] else {}
    print(
        f"supernet: {meta['epochs_done']} epoch(s), val acc largest "
        f"{last.get('val_accuracy_largest', float('nan')):.3f}, smallest "
        f"{last.get('val_accuracy_smallest', float('nan')):.3f}; {meta['checkpoint']}"
    )
    return 0
