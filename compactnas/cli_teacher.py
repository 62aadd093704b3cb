"""``compactnas teacher``: the command line of compactnas.search.workflows.teacher."""

from __future__ import annotations

import argparse
from typing import Any

from compactnas.evaluators.teacher import DEFAULT_MODEL, TeacherConfig
from compactnas.search.workflows.teacher import train_teacher


def add_parser(sub: Any) -> None:
    d = TeacherConfig()
    p = sub.add_parser(
        "teacher",
        help="train the large teacher used for distillation (cached per data set)",
        description="Train a large timm model from scratch (no weights are downloaded) on a data set and "
        "cache it under --out, keyed by data source, seed and model name; a cached teacher is reused.",
    )
    p.add_argument("--data", required=True, help="digits, npz:PATH, folder:PATH or cifar10:PATH")
    p.add_argument("--out", required=True, metavar="DIR", help="cache folder for teachers")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})"
    )
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--seed", type=int, default=0, help="data split and training seed (default 0)")
    p.add_argument("--resize", type=int, default=None, metavar="PIXELS", help="resize images first")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--force", action="store_true", help="train again even if a cached teacher exists"
    )
    p.add_argument(
        "--train-device",
        default="auto",
        help="auto (default: CUDA, else MPS, else CPU), cpu, cuda...",
    )
    p.add_argument("--precision", default="auto", help="auto (default), fp32 or amp")
    p.set_defaults(func=_cmd_teacher)


def _cmd_teacher(args: argparse.Namespace) -> int:
    t = train_teacher(
        args.data, args.out, model=args.model, epochs=args.epochs, lr=args.lr, seed=args.seed,
        resize=args.resize, threads=args.threads, force=args.force,
        train_device=args.train_device, precision=args.precision,
    )  # fmt: skip
    m = t["metrics"]
    state = "cached" if t["cached"] else "trained"
    print(
        f"teacher {t['model']} ({state}, {int(m.get('params', 0))} parameters): "
        f"val acc {m.get('accuracy', float('nan')):.4f}, test acc {m.get('test_accuracy', float('nan')):.4f} -> {t['path']}"
    )
    return 0
