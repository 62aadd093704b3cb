"""Do a search's front models export at the size it counted? For each pick (accuracy, latency, size,
knee), export with ``--device`` (the format the device's runtime loads, chosen by the model's
bit-widths), run the file back in its runtime on the test split, and compare its size with the trial's
``size_bytes``.

    make demo && python benchmarks/export_at_size.py [--search runs/demo] [--device rpi4]

Then each pick's int8 formats (tflite-int8, executorch-int8): written, run in their runtimes, with
their agreement. Writes results/export_at_size.json as each is measured. About 6 minutes after the
demo (LiteRT 5-15 s a model, ExecuTorch's int8 path about 40 s). The goal: every file within 10% of ``size_bytes`` and at least
98% top-1 agreement with the evaluated model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results  # noqa: E402

ROOT = Path(__file__).resolve().parent
PICKS = ("accuracy", "latency", "size", "knee")
INT8_FORMATS = ("tflite-int8", "executorch-int8")


def main(argv: list[str] | None = None) -> int:
    import compactnas
    from compactnas.core.errors import CompactnasError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", type=Path, default=ROOT.parent / "runs" / "demo")
    ap.add_argument("--device", default="rpi4")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "export_at_size.json")
    args = ap.parse_args(argv)
    if not (args.search / "summary.json").is_file():
        print(
            f"export_at_size: {args.search} holds no finished search (run `make demo`)",
            file=sys.stderr,
        )
        return 2
    res = Results(args.out, {"benchmark": "export_at_size", "search": str(args.search),
                             "device": args.device, "goal": {"size_ratio": [0.9, 1.1],
                                                             "top1_agreement": 0.98}})  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pick in PICKS:
            t0 = time.time()
            try:
                r = compactnas.export(args.search, pick=pick, formats=(), device=args.device,
                                      dest=str(Path(tmp) / pick), mlflow=False)  # fmt: skip
            except CompactnasError as e:
                rows.append({"pick": pick, "error": str(e)})
                res["picks"] = rows
                continue
            ((fmt, entry),) = r.card["exports"].items()
            searched = r.card["search_metrics"]["size_bytes"]
            rows.append({
                "pick": pick, "trial": r.trial, "arch": r.arch, "format": fmt,
                "file_bytes": entry["size_bytes"], "size_bytes": searched,
                "ratio": round(entry["size_bytes"] / searched, 4),
                "top1_agreement": entry["top1_agreement"], "test_accuracy": entry["test_accuracy"],
                "pytorch_test_accuracy": r.card["pytorch"]["test_accuracy"],
                "passed": bool(abs(entry["size_bytes"] / searched - 1) <= 0.1
                               and entry["top1_agreement"] >= 0.98),
                "seconds": round(time.time() - t0, 1),
            })  # fmt: skip
            res["picks"] = rows
            row = rows[-1]
            print(f"{pick:<9} trial {row['trial']:>3} {fmt:<12} {row['file_bytes']:>8,} B / searched "
                  f"{searched:>8,} B = {row['ratio']:.3f}x  agreement {row['top1_agreement']:.4f}")  # fmt: skip
        # The int8 formats of the same models: each exports and runs in its runtime, or is refused
        # because of a key the device's search would not have offered (then the error says which).
        int8 = []
        for row in [r for r in rows if "trial" in r]:
            for fmt in INT8_FORMATS:
                t0 = time.time()
                try:
                    r = compactnas.export(args.search, trial=row["trial"], formats=fmt,
                                          dest=str(Path(tmp) / f"{row['pick']}_{fmt}"), mlflow=False)  # fmt: skip
                except CompactnasError as e:
                    int8.append({"pick": row["pick"], "trial": row["trial"], "format": fmt,
                                 "error": str(e)})  # fmt: skip
                    res["int8_formats"] = int8
                    continue
                entry = r.card["exports"][fmt]
                int8.append({
                    "pick": row["pick"], "trial": row["trial"], "format": fmt,
                    "file_bytes": entry["size_bytes"], "top1_agreement": entry["top1_agreement"],
                    "test_accuracy": entry["test_accuracy"], "runtime": entry.get("runtime"),
                    "passed": bool(entry["checks"]["passed"]), "seconds": round(time.time() - t0, 1),
                })  # fmt: skip
                res["int8_formats"] = int8
                e = int8[-1]
                print(f"{row['pick']:<9} trial {row['trial']:>3} {fmt:<16} {e['file_bytes']:>8,} B  "
                      f"agreement {e['top1_agreement']:.4f}")  # fmt: skip
    res["all_passed"] = all(r.get("passed") for r in rows)
    res["int8_all_ran"] = all("error" not in r for r in res.get("int8_formats", []))
    res.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def render(ctx: object) -> list[str]:
    """The REPORT.md section, from results/export_at_size.json (benchmarks/report.py calls it)."""
    d = ctx.data.get("export_at_size")  # type: ignore[attr-defined]
    out = ["## Exports at the searched size", ""]
    if not d:
        return out + ["Not run (no `export_at_size.json`).", ""]
    out.append(
        f"The front picks of `{Path(d['search']).name}` exported with `--device {d['device']}`, run in "
        f"their runtimes on the test split; commit {str(d.get('commit', 'unknown'))[:12]}."
    )
    out += ["", "| pick | trial | format | file bytes | searched size_bytes | ratio | top-1 agreement |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in d.get("picks", []):
        if "error" in r:
            out.append(f"| {r['pick']} | | | {r['error']} | | | |")
            continue
        out.append(f"| {r['pick']} | {r['trial']} | {r['format']} | {r['file_bytes']:,} | "
                   f"{r['size_bytes']:,} | {r['ratio']:.3f} | {r['top1_agreement']:.4f} |")  # fmt: skip
    if d.get("int8_formats"):
        out += ["", "| pick | trial | int8 format | file bytes | top-1 agreement | check |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for r in d["int8_formats"]:
            if "error" in r:
                out.append(f"| {r['pick']} | {r['trial']} | {r['format']} | {r['error']} | | |")
                continue
            out.append(f"| {r['pick']} | {r['trial']} | {r['format']} | {r['file_bytes']:,} | "
                       f"{r['top1_agreement']:.4f} | {'passed' if r['passed'] else 'failed'} |")  # fmt: skip
    return [*out, ""]
