"""``compactnas track``: log a search's missing MLflow runs again (compactnas.search.relog)."""

from __future__ import annotations

import argparse
from typing import Any

from compactnas.search.relog import track


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "track",
        help="log a search's missing MLflow runs again (after a tracking-server failure)",
        description="Log every trial of OUT's study that its MLflow store lacks, under the search's run.",
    )
    p.add_argument("out", help="the search's output folder")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the search's own)")
    p.set_defaults(func=_cmd_track)


def _cmd_track(args: argparse.Namespace) -> int:
    parent, n = track(args.out, tracking_uri=args.tracking_uri)
    print(f"logged {n} trial run(s) under MLflow run {parent}")
    return 0
