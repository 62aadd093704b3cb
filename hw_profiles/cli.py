"""``compactnas profile``: list, show, build, calibrate and validate device profiles.

compactnas/cli.py calls ``add_parser(subparsers)`` and dispatches ``args.func(args)``; errors a user can
cause are raised as CompactnasError subclasses, which the main CLI prints as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from compactnas.core.errors import CompactnasError, ConfigError
from compactnas.hw_profiles.calibrate import calibrate
from compactnas.hw_profiles.profile import write_profile
from compactnas.hw_profiles.registry import list_devices, load_profile, user_profile_dir
from compactnas.hw_profiles.tables import build_table_profile
from compactnas.hw_profiles.validate import validate


def _whole(minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {v}")
        return v

    return parse


_positive, _nonneg = _whole(1), _whole(0)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "profile", help="device profiles: list, show, build, calibrate, validate"
    )
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="profile_command", metavar="COMMAND")
    sub.required = True

    sub.add_parser("list", help="known devices (packaged, user-built, registered)")

    show = sub.add_parser("show", help="print one profile")
    show.add_argument("name", help="device name or profile path")
    show.add_argument("--table", action="store_true", help="include every table entry")

    build = sub.add_parser("build", help="measure a lookup-table profile on this host")
    build.add_argument("--name", required=True)
    build.add_argument("--space", default="mobile")
    build.add_argument("--image-size", type=_positive, default=8)
    build.add_argument("--in-chans", type=_positive, default=1)
    build.add_argument("--num-classes", type=_positive, default=10)
    build.add_argument("--threads", type=_positive, default=1)
    build.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    build.add_argument("--seed", type=_nonneg, default=0)
    build.add_argument("--max-archs", type=_positive, default=None,
                       help="sample only this many architectures (a partial table; default: until saturated)")  # fmt: skip
    build.add_argument(
        "--fit-archs", type=_nonneg, default=12, help="whole networks the overheads are fitted on"
    )
    build.add_argument(
        "--rounds", type=_positive, default=5, help="round-robin timing rounds (fastest kept)"
    )
    build.add_argument("--out", type=Path, default=None, help="default: the user profile folder")

    cal = sub.add_parser("calibrate", help="fit a profile's coefficients to measured latencies")
    cal.add_argument("--name", required=True)
    cal.add_argument("--measurements", required=True, type=Path, help="CSV with columns arch,ms")
    cal.add_argument("--image-size", type=_positive, default=8)
    cal.add_argument("--in-chans", type=_positive, default=1)
    cal.add_argument("--num-classes", type=_positive, default=10)
    cal.add_argument("--out", type=Path, default=None, help="default: the user profile folder")

    val = sub.add_parser(
        "validate", help="rank and error of predictions against this host's measurements"
    )
    val.add_argument("--name", required=True)
    val.add_argument("--archs", type=_positive, default=50)
    val.add_argument("--seed", type=_nonneg, default=0)
    val.add_argument("--space", default="mobile")
    val.add_argument(
        "--compress", action="store_true", help="sample the space's compressed variant"
    )
    val.add_argument("--image-size", type=_positive, default=8)
    val.add_argument("--in-chans", type=_positive, default=1)
    val.add_argument("--num-classes", type=_positive, default=10)
    val.add_argument("--rounds", type=_positive, default=7)
    val.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _progress(label: str):
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def report(stage: str, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct // 10 != last[0]:
            last[0] = pct // 10
            print(f"{label} {stage}: {pct}%", file=sys.stderr)

    return report


def _cmd_list(args: argparse.Namespace) -> int:
    for name in list_devices():
        try:
            p = load_profile(name)
            print(f"{name:<16} {p.kind:<4} {p.model:<9} v{p.version}  {p.description}")
        except CompactnasError as e:
            print(f"{name:<16} (unreadable: {e})")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    doc = load_profile(args.name).to_dict()
    if "table" in doc and not args.table:
        doc["table"] = f"{len(doc['table'])} entries (--table to list them)"
    print(json.dumps(doc, indent=2))
    return 0


def _target(out: Path | None, name: str) -> Path:
    return out if out is not None else user_profile_dir() / f"{name}.json"


def _cmd_build(args: argparse.Namespace) -> int:
    if "/" in args.name or not args.name.strip():
        raise ConfigError(
            f"bad profile name '{args.name}' (a name, not a path; use --out for the file)"
        )
    report = _progress(args.name)
    profile = build_table_profile(
        args.name,
        space=args.space,
        image_size=args.image_size,
        in_chans=args.in_chans,
        num_classes=args.num_classes,
        threads=args.threads,
        backend=args.backend,
        seed=args.seed,
        max_archs=args.max_archs,
        fit_archs=args.fit_archs,
        rounds=args.rounds,
        progress=report,
    )
    path = write_profile(profile, _target(args.out, args.name))
    m = profile.measurement
    assert profile.table is not None and m is not None
    print(
        f"wrote {path}: {len(profile.table)} units, overhead {profile.network_overhead_ms:+.4f} ms per network "
        f"{m.unit_overhead_ms:+.4f} ms per unit ({m.backend}, {m.threads} thread(s))"
    )
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    new, report = calibrate(
        args.name,
        args.measurements,
        input_shape=(args.in_chans, args.image_size, args.image_size),
        num_classes=args.num_classes,
    )
    path = write_profile(new, _target(args.out, new.name))
    print(f"wrote {path} ({new.name}, version {new.version}, from {report['calibrated_from']})")
    print(
        f"MAPE over {report['n']} measurements: {report['mape_before']:.1f}% -> {report['mape_after']:.1f}%"
    )
    for field, v in report["coefficients"].items():
        print(f"  {field:<28} {v['before']:.6g} -> {v['after']:.6g}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    result = validate(
        args.name,
        space=args.space,
        archs=args.archs,
        seed=args.seed,
        image_size=args.image_size,
        in_chans=args.in_chans,
        num_classes=args.num_classes,
        compress=args.compress,
        rounds=args.rounds,
    )
    result.pop("rows")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['profile']} on {result['n']} held-out {result['space']} architectures "
          f"(measured here: {result['backend']}, {result['threads']} thread(s))")  # fmt: skip
    print(f"{'predictor':<10} {'spearman':>9} {'kendall':>8} {'MAPE %':>8} {'within 10%':>11}")
    for key, label in (("model", "profile"), ("macs", "MACs*")):
        r = result[key]
        print(
            f"{label:<10} {r['spearman']:>9.3f} {r['kendall']:>8.3f} {r['mape']:>8.1f} {r['within_10pct']:>11.0%}"
        )
    print(f"* {result['macs']['note']}")
    if "note" in result:
        print(f"note: {result['note']}")
    return 0


_COMMANDS = {
    "list": _cmd_list,
    "show": _cmd_show,
    "build": _cmd_build,
    "calibrate": _cmd_calibrate,
    "validate": _cmd_validate,
}


def run(args: argparse.Namespace) -> int:
    return _COMMANDS[args.profile_command](args)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m compactnas.hw_profiles.cli profile ...``), same error handling as the main CLI."""
    parser = argparse.ArgumentParser(prog="compactnas")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CompactnasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
