"""Run every benchmark in this folder (each writes its JSON to benchmarks/results/).

python benchmarks/run_all.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
CIFAR = HERE.parent.parent / "shared" / "data" / "cifar10_20k.npz"


def extra_args(stem: str) -> list[str] | None:
    """Arguments a benchmark needs beyond --quick; None: it cannot run here (said why)."""
    if stem == "arena":
        if not CIFAR.is_file():
            print(f"== arena: skipped, {CIFAR} is absent (run arena.py --data SOURCE yourself)")
            return None
        return ["--data", f"npz:{CIFAR}"]
    if stem == "supernet" and not CIFAR.is_file():
        print(f"== supernet: {CIFAR} is absent; measuring on digits")
        return ["--data", "digits"]
    return []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="budgets for a 2-core machine")
    p.add_argument("--only", nargs="*", default=None, help="benchmark names (file stems) to run")
    args = p.parse_args()
    # A benchmark is a script with a main guard; the other modules here are code they share.
    scripts = sorted(
        s for s in HERE.glob("*.py")
        if s.name not in ("run_all.py", "report.py") and '__name__ == "__main__"' in s.read_text()
    )  # fmt: skip
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only]
    failed = []
    for script in scripts:
        extra = extra_args(script.stem)
        if extra is None:
            continue
        t0 = time.time()
        print(f"== {script.stem}", flush=True)
        quick = ["--quick"] if args.quick else []
        rc = subprocess.call([sys.executable, str(script), *quick, *extra])
        print(
            f"== {script.stem}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.time() - t0:.0f} s",
            flush=True,
        )
        if rc:
            failed.append(script.stem)
    report = HERE / "report.py"
    if report.exists():
        subprocess.call([sys.executable, str(report)])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
