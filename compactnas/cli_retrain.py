"""``compactnas retrain OUT --top K --epochs E [--seeds S]``: final training of the front's best models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compactnas.search.devices import device_folder
from compactnas.search.workflows.retrain import RECIPE_CHOICES, RetrainConfig, run_retrain


def add_parser(sub: Any) -> None:
    d = RetrainConfig()
    p = sub.add_parser(
        "retrain",
        help="retrain the front's most accurate models from scratch with the final budget",
        description="Train the K most accurate models of a search's front from scratch on the whole "
        "training split with the final recipe (--recipe), for E epochs and S seeds. Weights of each model's best "
        "seed go to OUT/retrained/ (found by `compactnas export`), results to OUT/retrained/retrain.json "
        "and to MLflow, nested under the search's run.",
    )
    p.add_argument("out", help="the search's output folder")
    p.add_argument("--top", type=int, default=d.top, metavar="K", help=f"models (default {d.top})")
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"epochs per model (default {d.epochs})"
    )
    p.add_argument(
        "--seeds", type=int, default=d.seeds, help=f"seeds per model (default {d.seeds})"
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default 1)")
    add_start_options(p)
    add_engine_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_retrain)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """How and where the final training runs (retrain and distill)."""
    p.add_argument(
        "--recipe",
        default="final",
        help=f"training recipe: {', '.join(RECIPE_CHOICES)} (default final; search: the search's own)",
    )
    p.add_argument(
        "--train-device",
        default="auto",
        help="auto (default: CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps",
    )
    p.add_argument(
        "--precision", default="auto", help="auto (default: AMP on an accelerator), fp32 or amp"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "recipe": args.recipe,
        "train_device": args.train_device,
        "precision": args.precision,
        "compile": args.compile,
    }


def add_start_options(p: argparse.ArgumentParser) -> None:
    """How a retrained network starts, and from which device's front (retrain and distill)."""
    p.add_argument(
        "--init",
        choices=("scratch", "inherited"),
        default="scratch",
        help="start from scratch (default) or, for a supernet search, from the supernet's weights",
    )
    p.add_argument(
        "--device",
        metavar="NAME",
        help="for a search with one front per device: that device's front",
    )


def _cmd_retrain(args: argparse.Namespace) -> int:
    cfg = RetrainConfig(
        top=args.top, epochs=args.epochs, seeds=args.seeds, threads=args.threads, init=args.init,
        **engine_settings(args),
    )  # fmt: skip
    args.out = str(device_folder(args.out, args.device))
    report = run_retrain(args.out, cfg, quiet=args.quiet)
    for m in report["models"]:
        t = m["test_accuracy"]
        print(
            f"trial {m['trial']}: test acc {t['mean']:.4f} +- {t['std']:.4f} ({cfg.seeds} seed(s); "
            f"search {m['search_accuracy']:.4f} val; {cfg.init} init)  {m['arch']}"
        )
    print(f"results in {Path(args.out).expanduser().resolve() / 'retrained' / 'retrain.json'}")
    return 0
