"""The ``compactnas`` command. Every error a user can cause ends in one line on stderr and status 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from compactnas import __version__
from compactnas.core.errors import CompactnasError, ConfigError
from compactnas.evaluators.recipes import RECIPES
from compactnas.search.config import config_from_mapping, load_config_file
from compactnas.search.export.mlflow_model import relocate_store
from compactnas.search.results import load_summary
from compactnas.search.strategies import STRATEGIES
from compactnas.search.study import run_search
from compactnas.search.tracking import search_ui_url

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# Long but flat: one add_argument per search setting, grouped as `compactnas search --help` shows them.
def _search_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search",
        help="run (or resume) an architecture search",
        description="Search architectures (and compression) for accuracy, latency and size. "
        "Settings come from --config FILE.yaml, then from flags, which win.",
    )
    S = argparse.SUPPRESS
    p.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file with any of the settings below (flags win)"
    )
    g = p.add_argument_group("what to search")
    g.add_argument("--space", default=S, help="search space: mobile (default), squeeze or nb201")
    g.add_argument(
        "--data",
        default=S,
        help="digits (default), npz:PATH, folder:PATH, cifar10:PATH or table:PATH (a CSV of measured "
        "architectures: candidates are looked up, not trained)",
    )
    g.add_argument(
        "--table-accuracy", default=S, metavar="COLUMN", help="table:PATH column holding accuracy"
    )
    g.add_argument(
        "--table-latency",
        default=S,
        metavar="COLUMN",
        help="table:PATH column holding measured latency (ms); replaces the device prediction",
    )
    g.add_argument(
        "--resize", type=int, default=S, metavar="PIXELS", help="resize images to PIXELS x PIXELS"
    )
    g.add_argument(
        "--compress",
        action="store_true",
        default=S,
        help="also search pruning ratios and bit-widths",
    )
    g.add_argument(
        "--share-weights",
        action="store_true",
        default=S,
        help="also search magnitude sparsity and k-means weight sharing per stage (sp/cl keys; "
        "the size objective counts the Huffman-coded weights)",
    )
    g.add_argument(
        "--exits",
        action="store_true",
        default=S,
        help="also search early exits after stages (ex keys, confidence thresholds), scored at the "
        "device's expected latency over where validation images leave (needs --device)",
    )
    g = p.add_argument_group("how to score and search")
    g.add_argument(
        "--objectives",
        default=S,
        help="comma-separated: accuracy,latency,size (default), params, macs, energy, sram",
    )
    g.add_argument("--trials", type=int, default=S, help="number of candidates (default 30)")
    g.add_argument(
        "--screen",
        type=int,
        default=S,
        metavar="N",
        help="zero-cost screening: the sampler proposes N candidates per trained one and proxies "
        "pick it (default 0: off)",
    )
    g.add_argument(
        "--screen-proxies",
        default=S,
        help="comma-separated zero-cost proxies that vote (default synflow,naswot,meco; also jacov, "
        "grad_norm, snip, params)",
    )
    g.add_argument(
        "--screen-data",
        default=S,
        help="images for the proxies when --data is a table (npz:PATH, cifar10:DIR, ...)",
    )
    g.add_argument(
        "--screen-batch", type=int, default=S, help="images in the proxies' minibatch (default 64)"
    )
    g.add_argument(
        "--screen-pick",
        choices=("front", "sampler"),
        default=S,
        help="which proposal is trained: the one predicted to add most to the front (front, "
        "default) or the sampler's first non-dominated one (sampler)",
    )
    g.add_argument(
        "--time-budget",
        type=float,
        default=S,
        metavar="MIN",
        help="start no new candidate after this many minutes; running ones finish (default: none)",
    )
    g.add_argument(
        "--sampler",
        default=S,
        help=f"one of {', '.join(STRATEGIES)} (default guided: a surrogate model proposes); "
        "nsga2-p16 / nsga3-p16 set the population",
    )
    g.add_argument("--population", type=int, default=S, help="NSGA-II population size (default 8)")
    g.add_argument(
        "--seed", type=int, default=S, help="seed for data split, sampler and training (default 0)"
    )
    g.add_argument(
        "--device", default=S, help="target device profile (default: latency measured on this host)"
    )
    g.add_argument(
        "--max-latency-ms",
        type=float,
        default=S,
        help="reject candidates slower than this, untrained",
    )
    g.add_argument(
        "--max-size-kb", type=float, default=S, help="reject candidates larger than this, untrained"
    )
    g.add_argument(
        "--max-params",
        type=int,
        default=S,
        help="reject candidates with more parameters, untrained",
    )
    g = p.add_argument_group("proxy training")
    g.add_argument(
        "--recipe",
        default=S,
        help=f"named training recipe: {', '.join(RECIPES)} (default proxy); flags below override it",
    )
    g.add_argument(
        "--train-device",
        default=S,
        help="where candidates train: auto (default: CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps",
    )
    g.add_argument(
        "--precision",
        default=S,
        help="auto (default: mixed precision on an accelerator, fp32 on the CPU), fp32 or amp",
    )
    g.add_argument(
        "--compile", action="store_true", default=S, help="torch.compile each candidate's training"
    )
    g.add_argument(
        "--epochs", type=int, default=S, help="training epochs per candidate (default 15)"
    )
    g.add_argument("--batch-size", type=int, default=S, help="batch size (default 64)")
    g.add_argument("--lr", type=float, default=S, help="peak learning rate (default 0.005)")
    g.add_argument("--optimizer", default=S, help="adamw (default) or sgd")
    g.add_argument("--threads", type=int, default=S, help="torch threads for training (default 1)")
    g.add_argument(
        "--workers",
        type=int,
        default=S,
        help="candidates evaluated at once, each in its own process (default: one per core)",
    )
    g.add_argument(
        "--evaluator",
        default=S,
        help="how candidates get their accuracy: auto (default), proxy, compress or another registered name",
    )
    g.add_argument(
        "--supernet",
        default=S,
        metavar="DIR",
        help="a trained supernet (compactnas supernet train): candidates inherit its weights "
        "(--evaluator supernet); --device may then list several devices, one front each",
    )
    g.add_argument("--label-smoothing", type=float, default=S, help="label smoothing (default 0.1)")
    g.add_argument(
        "--augment",
        default=S,
        help="auto (default: crop-flip for colour images >= 32 px, else shift), crop-flip, shift, off",
    )
    g.add_argument(
        "--subset", type=int, default=S, metavar="N", help="train candidates on N examples"
    )
    g.add_argument(
        "--val-subset", type=int, default=S, metavar="N", help="validate candidates on N examples"
    )
    g.add_argument(
        "--host-runtime",
        default=S,
        help="host latency in onnxruntime (default; one thread, batch 1) or torch (eager)",
    )
    g = p.add_argument_group("output and tracking")
    g.add_argument("--out", default=S, help="output folder (default runs/search)")
    g.add_argument("--study-name", default=S, help="Optuna study name (default compactnas)")
    g.add_argument(
        "--resume", action="store_true", default=S, help="continue the study already in --out"
    )
    g.add_argument(
        "--tracking-uri", default=S, help="MLflow tracking URI (default: SQLite file in --out)"
    )
    g.add_argument("--experiment", default=S, help="MLflow experiment name (default compactnas)")
    g = p.add_argument_group("early stopping and Ray")
    g.add_argument(
        "--early-stop",
        action="store_true",
        default=S,
        help="successive halving on accuracy while training",
    )
    g.add_argument(
        "--grace-epochs",
        type=int,
        default=S,
        help="first successive-halving rung, in epochs (default 3)",
    )
    g.add_argument(
        "--halving-rate", type=int, default=S, help="keep the best 1/RATE at each rung (default 3)"
    )
    g.add_argument("--backend", default=S, help="local (default) or ray")
    g.add_argument(
        "--address", default=S, help="Ray cluster to join (default: start a local Ray instance)"
    )
    g.add_argument(
        "--concurrency", type=int, default=S, help="trials running at once on Ray (default 2)"
    )
    g.add_argument("--cpus-per-trial", type=float, default=S, help="CPUs per Ray trial (default 1)")
    g.add_argument("--gpus-per-trial", type=float, default=S, help="GPUs per Ray trial (default 0)")
    g.add_argument(
        "--max-retries",
        type=int,
        default=S,
        help="retries of a trial whose worker died (default 2)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_search)


def _cmd_search(args: argparse.Namespace) -> int:
    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    skip = {"config", "quiet", "func", "command"}
    values.update({k: v for k, v in vars(args).items() if k not in skip})
    cfg = config_from_mapping(values, source="flags")
    result = run_search(cfg, quiet=args.quiet)
    s = result.summary
    if "devices" in s:
        print(f"{s['n_complete']} complete of {s['n_trials']} trials; results in {result.out_dir}")
        print_device_fronts(s)
        return 0
    print(
        f"{s['n_complete']} complete, {s['n_failed']} failed, {s['n_infeasible']} infeasible, "
        f"{s['n_stopped_early']} stopped early of {s['n_trials']} trials; "
        f"hypervolume {s['hypervolume']:.4f}; results in {result.out_dir}"
    )
    print_front(s)
    return 0


def print_device_fronts(summary: dict[str, Any]) -> None:
    """One front per device (a search with --device A,B,C)."""
    for device, d in summary["devices"].items():
        print(
            f"device {device}: {d['n_complete']} complete of {d['n_trials']} trials; "
            f"hypervolume {d['hypervolume']:.4f}; {d['folder']}/"
        )
        print_front(d)


def print_front(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Pareto front ({len(summary['pareto'])} models)")
    cols = [
        ("trial", "trial", "{}"), ("accuracy", "val acc", "{:.4f}"), ("test_accuracy", "test acc", "{:.4f}"),
        ("latency_ms", "latency ms", "{:.4f}"), ("size_bytes", "size KB", None), ("params", "params", "{}"),
        ("macs", "MACs", "{}"), ("energy_mj", "energy mJ", "{:.4f}"), ("peak_sram_kb", "SRAM KB", "{:.1f}"),
        ("arch", "architecture", "{}"),
    ]  # fmt: skip
    present = [c for c in cols if any(c[0] in r for r in summary["pareto"])]
    for _, title, _ in present:
        table.add_column(title, overflow="fold")
    for r in summary["pareto"]:
        cells = []
        for key, _, fmt in present:
            v = r.get(key)
            if v is None:
                cells.append("")
            elif key == "size_bytes":
                cells.append(f"{v / 1024:.1f}")
            else:
                cells.append(fmt.format(v))
        table.add_row(*cells)
    Console(width=max(160, Console().width)).print(table)


def _show_parser(sub: Any) -> None:
    p = sub.add_parser(
        "show", help="print a search's Pareto front", description="Print the front of a search."
    )
    p.add_argument("out", help="the search's output folder")
    p.add_argument("--json", action="store_true", help="print summary.json instead of a table")
    p.set_defaults(func=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    import json

    s = load_summary(Path(args.out))
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    if "devices" in s:
        print_device_fronts(s)
        return 0
    print(
        f"{s['n_complete']} complete, {s['n_failed']} failed of {s['n_trials']} trials; hypervolume {s['hypervolume']:.4f}"
    )
    print_front(s)
    return 0


def _ui_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="open the MLflow UI on a search's tracking store")
    p.add_argument("out", help="the search's output folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=_cmd_ui)


def _cmd_ui(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().resolve()
    db = out / "mlflow.db"
    if not db.is_file():
        raise ConfigError(
            f"{out} holds no MLflow store (no mlflow.db); was it searched with --tracking-uri?"
        )
    relocate_store(db, out / "mlartifacts")  # a copied or moved folder lists its own artifacts
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}",
        "--default-artifact-root", (out / "mlartifacts").as_uri(), "--host", args.host, "--port", str(args.port),
    ]  # fmt: skip
    url = search_ui_url(out, f"http://{args.host}:{args.port}")
    print(f"MLflow UI for {out}: open {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    os.execv(sys.executable, cmd)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="compactnas",
        description="Neural-architecture search for compact models: architecture and compression searched "
        "jointly for accuracy, device latency and size.",
    )
    parser.add_argument("--version", action="version", version=f"compactnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _search_parser(sub)
    _show_parser(sub)
    _ui_parser(sub)
    for module in _EXTENSIONS:
        # Every command is part of the package: a module that fails to import is a defect to see,
        # never a command to leave out quietly.
        importlib.import_module(module).add_parser(sub)
    return parser


# One module per command group, each with add_parser(subparsers); a new command adds one line here.
_EXTENSIONS = (
    "compactnas.cli_profile",
    "compactnas.cli_export",
    "compactnas.cli_teacher",
    "compactnas.cli_distill",
    "compactnas.cli_jobs",
    "compactnas.cli_track",
    "compactnas.cli_dashboard",
    "compactnas.cli_retrain",
    "compactnas.cli_supernet",
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except CompactnasError as e:
        print(f"compactnas: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "compactnas: interrupted; completed trials are saved (continue with --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
