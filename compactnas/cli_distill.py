"""``compactnas distill``: the command line of compactnas.search.workflows.distill."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compactnas.cli_retrain import add_engine_options, add_start_options, engine_settings
from compactnas.search.devices import device_folder
from compactnas.search.workflows.distill import DistillConfig, run_distill


def add_parser(sub: Any) -> None:
    d = DistillConfig()
    p = sub.add_parser(
        "distill",
        help="retrain the front's best models from a large teacher, against the same models without one",
        description="Retrain the K most accurate models of a search's front with knowledge distillation "
        "and, side by side, without a teacher at the same budget, over several seeds; results go to "
        "OUT/distill.json and to the search's MLflow run.",
    )
    p.add_argument("out", help="the search's output folder")
    p.add_argument(
        "--top", type=int, default=d.top, metavar="K", help=f"how many models (default {d.top})"
    )
    p.add_argument(
        "--teacher",
        metavar="PATH",
        help="teacher checkpoint (default: train one, cached in OUT/teachers)",
    )
    p.add_argument(
        "--teacher-model", default=d.teacher_model, help=f"timm teacher (default {d.teacher_model})"
    )
    p.add_argument(
        "--teacher-epochs", type=int, default=d.teacher_epochs, help="epochs for a new teacher"
    )
    p.add_argument(
        "--seeds", type=int, default=d.seeds, help=f"seeds per model and arm (default {d.seeds})"
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"training epochs per run (default {d.epochs})"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help=f"softmax temperature T (default {d.temperature:g})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=d.alpha,
        help=f"weight of the teacher term (default {d.alpha:g})",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default 1)")
    add_start_options(p)
    add_engine_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_distill)


def _cmd_distill(args: argparse.Namespace) -> int:
    cfg = DistillConfig(
        top=args.top, seeds=args.seeds, epochs=args.epochs, temperature=args.temperature, alpha=args.alpha,
        teacher=args.teacher, teacher_model=args.teacher_model, teacher_epochs=args.teacher_epochs,
        threads=args.threads, init=args.init, **engine_settings(args),
    )  # fmt: skip
    args.out = str(device_folder(args.out, args.device))
    report = run_distill(args.out, cfg, quiet=args.quiet)
    t = report["teacher"]
    print(f"teacher {t['model']} ({t['params']} parameters): test acc {t['test_accuracy']:.4f}")
    for m in report["models"]:
        dm, bm = m["distilled"]["test_accuracy"], m["baseline"]["test_accuracy"]
        print(
            f"trial {m['trial']}: test acc distilled {dm['mean']:.4f} +- {dm['std']:.4f}, without teacher "
            f"{bm['mean']:.4f} +- {bm['std']:.4f} ({cfg.seeds} seeds)  {m['arch']}"
        )
    print(f"results in {Path(args.out).expanduser().resolve() / 'distill.json'}")
    return 0
