"""``compactnas profile``: list, show, build, calibrate, validate and predict with device profiles.

compactnas/cli.py calls ``add_parser(subparsers)`` and dispatches ``args.func(args)``; errors a user can
cause are raised as CompactnasError subclasses, which the main CLI prints as one line (exit status 2).
The work itself is done by plain functions of compactnas.hw_profiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from compactnas.core.errors import CompactnasError, ConfigError
from compactnas.hw_profiles import (
    build_table_profile,
    calibrate,
    list_devices,
    load_profile,
    predict,
    user_profile_dir,
    validate,
    validate_measurements,
    write_profile,
)
from compactnas.hw_profiles.kit import write_kit


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


def _input(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x32x32, got '{text}'")
    return dims  # type: ignore[return-value]


def _shape(args: argparse.Namespace) -> tuple[int, int, int]:
    if args.input is not None:
        return args.input
    return (args.in_chans, args.image_size, args.image_size)


def _add_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", type=_input, default=None, metavar="CxHxW",
                   help="input shape of the measured networks, e.g. 3x32x32 (default: --in-chans x --image-size)")  # fmt: skip
    p.add_argument("--image-size", type=_positive, default=8)
    p.add_argument("--in-chans", type=_positive, default=1)
    p.add_argument("--classes", "--num-classes", dest="num_classes", type=_positive, default=10,
                   help="classifier width of the measured networks (default 10)")  # fmt: skip


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
    cal.add_argument("--base", default=None, help="profile to start from (default: --name)")
    cal.add_argument("--name", required=True,
                     help="the new profile's name (with --base), or the profile to start from")  # fmt: skip
    cal.add_argument("--measurements", required=True, type=Path,
                     help="CSV with columns arch,ms (our strings or NAS-Bench-201 notation)")  # fmt: skip
    _add_shape(cal)
    cal.add_argument("--method", choices=("linear", "roofline", "transfer"), default="linear",
                     help="linear: few per-kind costs, regularised (default; 10-20 rows suffice); "
                     "roofline: every roofline coefficient free; transfer: from 23 measured devices "
                     "and these rows, the best candidate by leave-one-out (for a device unlike the "
                     "base)")  # fmt: skip
    cal.add_argument("--dead-code", choices=("keep", "auto", "on", "off"), default="keep",
                     help="whether the runtime drops operators that never reach the output: keep the base "
                     "profile's statement (default), on, off, or auto (the better fit; for a base that "
                     "describes another device)")  # fmt: skip
    cal.add_argument("--out", type=Path, default=None, help="default: the user profile folder")

    val = sub.add_parser(
        "validate",
        help="rank and error of predictions against measurements (a CSV, or timed on this host)",
    )
    val.add_argument("--name", required=True)
    val.add_argument("--measurements", type=Path, default=None,
                     help="CSV with columns arch,ms; without it, networks are sampled and timed here")  # fmt: skip
    val.add_argument("--input", type=_input, default=None, metavar="CxHxW")
    val.add_argument("--classes", dest="classes", type=_positive, default=None)
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

    kit = sub.add_parser(
        "kit",
        help="probe models, a stand-alone runner and a CSV template to measure your own board",
        description="Write N probe models of a space, chosen to spread over what makes latency differ, "
        "a runner script that times them on the device with nothing of compactnas installed "
        "(onnxruntime or the LiteRT interpreter), and measured.csv for `profile calibrate`.",
    )
    kit.add_argument("--space", default="mobile")
    kit.add_argument("--n", type=_positive, default=20, help="probes (default 20)")
    kit.add_argument("--format", dest="fmt", choices=("onnx", "tflite"), default="onnx")
    kit.add_argument("--out", type=Path, required=True, metavar="DIR")
    kit.add_argument("--seed", type=_nonneg, default=0)
    _add_shape(kit)

    pre = sub.add_parser(
        "predict", help="predicted latency (and memory, energy) of one architecture"
    )
    pre.add_argument("--name", required=True)
    pre.add_argument("--arch", required=True, help="architecture string or NAS-Bench-201 notation")
    _add_shape(pre)
    pre.add_argument("--json", action="store_true", help="print the result as JSON")
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
    base = args.base or args.name
    new, report = calibrate(
        base,
        args.measurements,
        input_shape=_shape(args),
        num_classes=args.num_classes,
        method=args.method,
        dead_code=args.dead_code,
    )
    if args.base:
        if "/" in args.name or not args.name.strip():
            raise ConfigError(f"bad profile name '{args.name}' (a name, not a path)")
        new = replace(new, name=args.name)
    path = write_profile(new, _target(args.out, new.name))
    print(f"wrote {path} ({new.name}, version {new.version}, from {report['calibrated_from']})")
    print(
        f"MAPE over {report['n']} measurements: {report['mape_before']:.1f}% -> {report['mape_after']:.1f}%"
    )
    for field, v in report["coefficients"].items():
        print(f"  {field:<28} {v['before']:.6g} -> {v['after']:.6g}")
    return 0


def _print_scores(result: dict[str, Any], what: str) -> None:
    print(f"{result['profile']} on {result['n']} {what}")
    print(f"{'predictor':<10} {'spearman':>9} {'kendall':>8} {'MAPE %':>8} {'within 10%':>11}")
    for key, label in (("model", "profile"), ("macs", "MACs*")):
        r = result[key]
        print(
            f"{label:<10} {r['spearman']:>9.3f} {r['kendall']:>8.3f} {r['mape']:>8.1f} {r['within_10pct']:>11.0%}"
        )
    print(f"* {result['macs']['note']}")
    if "note" in result:
        print(f"note: {result['note']}")


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.measurements is not None:
        result = validate_measurements(
            args.name,
            args.measurements,
            input_shape=args.input or (args.in_chans, args.image_size, args.image_size),
            num_classes=args.classes or args.num_classes,
        )
        what = f"measured architectures from {result['measurements']}"
    else:
        shape = args.input or (args.in_chans, args.image_size, args.image_size)
        result = validate(
            args.name,
            space=args.space,
            archs=args.archs,
            seed=args.seed,
            image_size=shape[1],
            in_chans=shape[0],
            num_classes=args.classes or args.num_classes,
            compress=args.compress,
            rounds=args.rounds,
        )
        what = (
            f"held-out {result['space']} architectures (measured here: {result['backend']}, "
            f"{result['threads']} thread(s))"
        )
    result.pop("rows")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_scores(result, what)
    return 0


def _cmd_kit(args: argparse.Namespace) -> int:
    writer = None
    if args.fmt == "tflite":
        # lazy: only --fmt tflite needs the search layer (keeps cli_profile off optuna, onnxruntime)
        from compactnas.search.export import edge, litert

        edge.require("tflite")
        writer = litert.write_tflite
    shape = _shape(args)
    got = write_kit(args.out, space=args.space, n=args.n, fmt=args.fmt, input_shape=shape,
                    num_classes=args.num_classes, seed=args.seed, writer=writer)  # fmt: skip
    folder = got["folder"]
    print(f"wrote {got['probes']} {got['format']} probes of '{args.space}' to {folder}")
    print(f"on the device:  python {folder}/run_probes.py   (writes {folder}/measured.csv)")
    print(f"then:           compactnas profile calibrate --base BASE --name MYBOARD --measurements "
          f"{folder}/measured.csv --method transfer --input {got['input']} --classes {got['num_classes']}")  # fmt: skip
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    out = predict(args.name, args.arch, input_shape=_shape(args), num_classes=args.num_classes)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{out['profile']}: {out['latency_ms']:.4g} ms for {out['arch']} at {'x'.join(map(str, out['input_shape']))}"
    )
    for key, unit in (
        ("energy_mj", "mJ"),
        ("peak_sram_kb", "KB peak SRAM"),
        ("flash_kb", "KB flash"),
    ):
        if key in out:
            print(f"  {out[key]:.4g} {unit}")
    return 0


_COMMANDS = {
    "list": _cmd_list,
    "show": _cmd_show,
    "build": _cmd_build,
    "calibrate": _cmd_calibrate,
    "kit": _cmd_kit,
    "validate": _cmd_validate,
    "predict": _cmd_predict,
}


def run(args: argparse.Namespace) -> int:
    return _COMMANDS[args.profile_command](args)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m compactnas.cli_profile profile ...``), same error handling as the main CLI."""
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
