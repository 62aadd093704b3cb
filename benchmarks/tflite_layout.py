"""How many bytes a .tflite file spends beyond its tensors' data: the structure figures of
spaces/storage.py, measured on probe architectures and checked on others.

    python benchmarks/tflite_layout.py [--probes 16] [--out results/tflite_layout.json] [--resume]

Probes are drawn at random from the mobile and squeeze spaces (pruning included) on 1x8x8 and 3x32x32
inputs; each is made uniformly int8 (w8/a8 everywhere) or left fp32, exported untrained as ``tflite`` and
``tflite-int8`` by the project's own writers, and its file measured. For each format, the bytes beyond
the exact payload (spaces.storage.payload_bytes) are fitted by least squares on the even-numbered probes
as bytes per weighted layer, per other layer and per file; the odd-numbered ones check
spaces.storage.file_bytes with the fitted figures. Each probe is written as it is measured. About
10 minutes here for 16 probes (the converter takes 5-10 s a file).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results  # noqa: E402

FORMATS = ("tflite", "tflite-int8")


def probe_archs(n: int, seed: int) -> list[tuple[str, tuple[int, int, int], bool]]:
    import optuna

    from compactnas.spaces import create_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (1, 8, 8) if i % 4 < 2 else (3, 32, 32)
        space = create_space(
            "mobile" if i % 2 == 0 else "squeeze", image_size=shape[1], compress=True
        )
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed * 1000 + i))
        spec = space.sample(study.ask())
        bits = 8 if rng.random() < 0.5 else 32
        spec = dataclasses.replace(
            spec,
            stem=dataclasses.replace(spec.stem, wbits=bits, abits=bits),
            stages=tuple(dataclasses.replace(b, wbits=bits, abits=bits) for b in spec.stages),
            head=dataclasses.replace(spec.head, wbits=bits, abits=bits),
        )
        out.append((str(spec), shape, bits == 8))
    return out


def measure(arch: str, shape: tuple[int, int, int], classes: int) -> dict[str, int]:
    import torch

    from compactnas.search.export import litert
    from compactnas.search.export.formats import build_model, deployable, without_activation_quant

    torch.manual_seed(0)
    model = build_model(arch, num_classes=classes, in_chans=shape[0]).eval()  # pruned shapes
    calib = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    with torch.no_grad():
        model(torch.from_numpy(calib))  # activation observers see data before they are frozen
    model = deployable(model)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            path = Path(tmp) / f"m.{fmt}"
            if fmt == "tflite":
                litert.write_tflite(model, shape, path)
            else:  # as the export writes it: the int8 path quantizes activations itself
                litert.write_tflite_int8(without_activation_quant(model), shape, path, calib)
            sizes[fmt] = path.stat().st_size
    return sizes


def measure_apart(arch: str, shape: tuple[int, int, int], classes: int) -> dict:
    """``measure`` in a process of its own: LiteRT's XNNPACK delegate aborts the process on some
    untrained int8 graphs (a double free in allocate_tensors), which is recorded, not fatal."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(1, mp.get_context("spawn")) as pool:
            return {"bytes": pool.submit(measure, arch, shape, classes).result()}
    except BrokenProcessPool:
        return {"error": "the process died (LiteRT aborted while preparing the int8 model)"}
    except Exception as e:  # noqa: BLE001 - a converter failure is a result of its own
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def fit(probes: list[dict], fmt: str) -> dict[str, float]:
    from compactnas.spaces.storage import LAYOUTS, layer_counts, payload_bytes

    rows, rest = [], []
    for p in probes:
        shape = tuple(p["shape"])
        c = layer_counts(p["arch"], shape, 10)
        rows.append([c["weighted"], c["other"], 1.0])
        rest.append(p["bytes"][fmt] - payload_bytes(p["arch"], shape, 10, LAYOUTS[fmt].int8))
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(rest, dtype=float), rcond=None)
    return {
        "per_weighted_layer": round(float(coef[0])),
        "per_other_layer": round(float(coef[1])),
        "per_file": round(float(coef[2])),
    }


def check(probes: list[dict], fmt: str, figures: dict[str, float]) -> list[dict]:
    from compactnas.spaces import storage

    layout = dataclasses.replace(storage.LAYOUTS[fmt], **figures)
    out = []
    for p in probes:
        est = storage.file_bytes(p["arch"], tuple(p["shape"]), 10, fmt, layout)
        out.append({"probe": p["index"], "bytes": p["bytes"][fmt], "estimate": round(est),
                    "error": round(est / p["bytes"][fmt] - 1, 4)})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "tflite_layout.json"
    )
    ap.add_argument("--resume", action="store_true", help="keep the probes already measured")
    args = ap.parse_args(argv)
    res = Results(args.out, {"benchmark": "tflite_layout", "probes_total": args.probes,
                             "seed": args.seed}, resume=args.resume)  # fmt: skip
    done = {p["index"]: p for p in res.get("probes", []) if p.get("seed", args.seed) == args.seed}
    probes = []
    for i, (arch, shape, int8) in enumerate(probe_archs(args.probes, args.seed)):
        if i in done and done[i]["arch"] == arch:
            probes.append(done[i])
            continue
        t0 = time.time()
        sizes = measure_apart(arch, shape, 10)
        probes.append({"index": i, "seed": args.seed, "arch": arch, "shape": list(shape),
                       "int8_model": int8, **sizes})  # fmt: skip
        res["probes"] = probes
        print(f"probe {i}: {sizes} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    res["failed"] = [p["index"] for p in probes if "bytes" not in p]
    res["probes"] = probes
    fitted, checked = {}, {}
    for fmt in FORMATS:
        # a w8/a8 model goes to the int8 file: the float layout is fitted and checked on float models
        ok = [p for p in probes if "bytes" in p and (fmt == "tflite-int8" or not p["int8_model"])]
        fitted[fmt] = fit([p for p in ok if p["index"] % 2 == 0], fmt)
        checked[fmt] = check([p for p in ok if p["index"] % 2 == 1], fmt, fitted[fmt])
        errs = [abs(c["error"]) for c in checked[fmt]]
        print(f"{fmt}: {fitted[fmt]}; held-out error max {max(errs):.1%}, mean {np.mean(errs):.1%}")
    res["fitted"] = fitted
    res["held_out"] = checked
    res["held_out_max_abs_error"] = {f: max(abs(c["error"]) for c in checked[f]) for f in FORMATS}
    res.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
