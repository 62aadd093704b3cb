"""Render benchmarks/REPORT.md and its plots from the JSON files the benchmarks wrote.

    python benchmarks/report.py [--results DIR] [--out FILE]

Reads whichever results files the sections below name (``--results``/NAME.json; a missing one is
reported as not run), writes the plots next to them and the report to ``--out``. Every number in the
report is read from those files; the machine and library versions are those of the host rendering it.

This module only assembles: each section lives in its own module and is one line of ``SECTIONS``.
Adding a benchmark's section is that one line, ``("NAME", "module:function")``, where NAME is the
results file it reads (results/NAME.json, loaded into ``ctx.data["NAME"]``, None when absent) and
``module:function`` is importable from this folder (the benchmark script itself, or a module of
report_sections/); the function takes a ``report_sections.common.Ctx`` and returns Markdown lines.
A section that raises costs only itself: it is replaced by a one-line note.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the section modules sit beside this file, also when loaded by path
    sys.path.insert(0, str(HERE))

from report_sections.common import Ctx  # noqa: E402

from compactnas.core.host import cpu_name  # noqa: E402

# The report's sections in order: (results file stem, "module:function"), one line each.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("arena_cifar10_20k", "arena_report:render"),
    ("recipe_convergence", "recipe_convergence:render"),
    ("train_speed", "train_speed:render"),
    ("device_transfer", "device_transfer:render"),
    ("search_quality", "report_sections.search_quality:render"),
    ("compression", "report_sections.teacher:render"),
    ("latency_fidelity", "report_sections.latency:render"),
    ("compression", "report_sections.compression:render"),
    ("weight_sharing", "weight_sharing:render"),
    ("early_exit", "early_exit:render"),
    ("export_at_size", "export_at_size:render"),
    ("signal_fidelity", "signal_fidelity:render"),
    ("screening", "screening:render"),
    ("nb201_oneshot", "nb201_oneshot:render"),
    ("ray_scaling", "report_sections.ray:render"),
    ("device_fidelity", "device_fidelity:render"),
    ("search_strategies", "search_strategies:render"),
    ("parallel_workers", "parallel_workers:render"),
    ("supernet", "supernet:render"),
    ("baselines", "report_sections.baselines:render"),  # the 8x8 comparison, kept as a note
)
BENCHMARKS = tuple(dict.fromkeys(name for name, _ in SECTIONS))
PACKAGES = ("torch", "timm", "optuna", "ray", "mlflow", "compactnas")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _section(target: str) -> Callable[[Ctx], list[str]]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _safe(target: str, ctx: Ctx) -> list[str]:
    """A results file whose layout changed costs its own section, not the whole report."""
    try:
        return _section(target)(ctx)
    except Exception as e:  # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        title = target.partition(":")[0].rpartition(".")[2].replace("_", " ")
        return [
            f"## {title}",
            "",
            f"Could not render this section: {type(e).__name__}: {e} "
            f"({Path(where.filename).name} line {where.lineno}).",
            "",
        ]


def run_times(data: dict[str, dict | None]) -> dict[str, float]:
    """Seconds each benchmark recorded for itself, where its file says (layouts differ per benchmark)."""
    out: dict[str, float] = {}
    for name, d in data.items():
        if d is None:
            continue
        if isinstance(d.get("elapsed_s"), int | float):
            out[name] = float(d["elapsed_s"])
        elif name == "search_quality" and d.get("runs"):
            out[name] = float(sum(r.get("elapsed_s", 0.0) for r in d["runs"]))
        elif name == "ray_scaling" and isinstance(d.get("wall_s"), dict):
            out[name] = float(sum(d["wall_s"].values()))
        elif name == "latency_fidelity" and d.get("profiles"):
            out[name] = float(
                sum(
                    p.get("build_s", 0.0) + p.get("validate_s", 0.0) for p in d["profiles"].values()
                )
            )
    return out


def load(results: Path) -> dict[str, dict | None]:
    data: dict[str, dict | None] = {}
    for name in BENCHMARKS:
        p = results / f"{name}.json"
        try:
            data[name] = json.loads(p.read_text()) if p.is_file() else None
        except json.JSONDecodeError as e:
            print(f"report: {p} is not valid JSON ({e}); treated as not run", file=sys.stderr)
            data[name] = None
    return data


def render(results: Path, out: Path) -> str:
    data = load(results)
    ctx = Ctx(results, out, data)
    v = versions()
    ran = [n for n in BENCHMARKS if data[n] is not None]
    lines = [
        "# compactnas benchmark report",
        "",
        f"Rendered {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `benchmarks/report.py` "
        f"from `{os.path.relpath(results, out.parent)}/*.json`; every number below is read from those "
        "files. Present: " + (", ".join(ran) or "none") + ".",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "How to run: `make bench` (= `python benchmarks/run_all.py --quick`) runs every benchmark at "
        "the reduced budgets meant for a 2-core machine, then this report. The full settings "
        "(more trials, epochs, seeds and baselines) are `python benchmarks/run_all.py` without "
        "`--quick`, for a cluster or a bigger machine; one benchmark alone is `python "
        "benchmarks/NAME.py [--quick]`, then `python benchmarks/report.py`.",
        "",
    ]
    times = run_times(data)
    if times:
        lines += [
            "Recorded run times: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
            + f" ({sum(times.values()) / 60:.1f} min in all).",
            "",
        ]
    for _, target in SECTIONS:
        lines += _safe(target, ctx)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=HERE / "results", help="folder of *.json")
    p.add_argument("--out", type=Path, default=HERE / "REPORT.md")
    args = p.parse_args(argv)
    results, out = args.results.resolve(), args.out.resolve()
    if not results.is_dir():
        print(f"report: no results folder {results}", file=sys.stderr)
        return 2
    text = render(results, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
