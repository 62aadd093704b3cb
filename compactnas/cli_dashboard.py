"""``compactnas dashboard OUT``: optuna-dashboard on a search's study."""

from __future__ import annotations

import argparse
from typing import Any

from compactnas.search.dashboard import serve_dashboard


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a search's study (Pareto front, history, importance)",
    )
    p.add_argument("out", help="the search's output folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_cmd_dashboard)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    serve_dashboard(args.out, host=args.host, port=args.port)
    return 0
