"""What every report section uses: number formatting, Markdown tables, images, the context."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pct(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def kb(v: Any) -> str:
    return "n/a" if v is None else f"{v / 1024:,.1f} KB"


def pm(stats: dict | None, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of a {'mean','std'} dict, scaled (accuracies to percent by default)."""
    if not stats:
        return "n/a"
    return f"{scale * stats['mean']:.{digits}f} ± {scale * stats.get('std', 0.0):.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def settings_line(settings: dict[str, Any] | None) -> str:
    if not settings:
        return "Settings: not recorded."
    parts = []
    for k, v in settings.items():
        if v is None:
            v = "none"
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list | tuple):
            v = ", ".join(str(x) for x in v)
        parts.append(f"{k}: {v}")
    return "Settings: " + "; ".join(parts) + "."


def short_arch(arch: str, limit: int = 60) -> str:
    return arch if len(arch) <= limit else arch[: limit - 3] + "..."


class Ctx:
    def __init__(self, results: Path, out: Path, data: dict[str, dict | None]):
        self.results, self.out, self.data = results, out, data

    def img(self, path: Path, alt: str) -> str:
        return f"![{alt}]({os.path.relpath(path, self.out.parent)})"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
