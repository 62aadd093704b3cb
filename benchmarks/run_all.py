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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="budgets for a 2-core machine")
    p.add_argument("--only", nargs="*", default=None, help="benchmark names (file stems) to run")
    args = p.parse_args()
    # Modules starting with "_" are shared code, not benchmarks.
    scripts = sorted(
        s for s in HERE.glob("*.py")
        if s.name not in ("run_all.py", "report.py") and not s.name.startswith("_")
    )  # fmt: skip
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only]
    failed = []
    for script in scripts:
        t0 = time.time()
        print(f"== {script.stem}", flush=True)
        rc = subprocess.call([sys.executable, str(script), *(["--quick"] if args.quick else [])])
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
