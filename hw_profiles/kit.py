"""A measurement kit for one's own board: probe models that cover a space, a runner that needs nothing
of compactnas, and the CSV that ``profile calibrate`` reads back.

``write_kit`` picks ``n`` probes out of a pool of random candidates by farthest-point sampling on their
latency features (hw_profiles/transfer.py, log-scaled and standardised): the probes spread over what
makes networks differ in cost (convolution kinds, MACs, bytes, depth) instead of clustering where random
draws fall. It writes, under the kit folder:

- ``models/probe_NN.onnx`` (or ``.tflite``): each probe with random weights (latency does not depend on
  them), batch 1;
- ``probes.csv``: file and architecture string of every probe;
- ``run_probes.py``: a stand-alone runner (onnxruntime, or the LiteRT / TF Lite interpreter for .tflite),
  one thread, batch 1, warm-up then the median of timed repeats, writing ``measured.csv`` (columns
  ``arch,ms``) beside itself;
- ``measured.csv``: the template the runner fills (``ms`` empty until it has run).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compactnas.core.errors import ConfigError
from compactnas.hw_profiles.transfer import feature_matrix
from compactnas.spaces import create_model, create_space
from compactnas.spaces.arch import format_arch
from compactnas.spaces.sampling import sample_archs

FORMATS = ("onnx", "tflite")
Writer = Callable[[nn.Module, tuple[int, int, int], Path], None]


def choose_probes(
    space: str, n: int, *, input_shape: tuple[int, int, int], num_classes: int, seed: int = 0,
    pool: int = 400,
) -> list[Any]:  # fmt: skip
    """``n`` architectures of ``space`` spread over the latency features (farthest-point sampling)."""
    if n < 4:
        raise ConfigError(f"a kit needs at least 4 probes (calibration needs 4), got {n}")
    specs = sample_archs(create_space(space), max(pool, n), seed=seed)
    if len(specs) <= n:
        return specs
    x = np.log1p(feature_matrix(specs, input_shape, num_classes))
    spread = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    macs = x[:, :4].sum(axis=1)
    chosen = [int(np.argmin(macs)), int(np.argmax(macs))]  # the cheapest and the dearest first
    dist = np.minimum(
        np.linalg.norm(x - x[chosen[0]], axis=1), np.linalg.norm(x - x[chosen[1]], axis=1)
    )
    while len(chosen) < n:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(x - x[i], axis=1))
    return [specs[i] for i in chosen]


def write_onnx_probe(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> None:
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, *input_shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=17)  # fmt: skip


def write_kit(
    out: str | Path,
    *,
    space: str = "mobile",
    n: int = 20,
    fmt: str = "onnx",
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    seed: int = 0,
    writer: Writer | None = None,
) -> dict[str, Any]:
    """Write the kit to ``out`` (see the module docstring); ``writer`` converts one model for ``fmt``
    other than onnx (the CLI passes LiteRT's for tflite)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown kit format '{fmt}' (use one of: {', '.join(FORMATS)})")
    if fmt != "onnx" and writer is None:
        raise ConfigError(f"a {fmt} kit needs its converter (compactnas profile kit provides it)")
    folder = Path(out).expanduser()
    if (folder / "probes.csv").exists():
        raise ConfigError(f"{folder} already holds a kit (choose another --out)")
    specs = choose_probes(space, n, input_shape=input_shape, num_classes=num_classes, seed=seed)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    write = writer or write_onnx_probe
    rows = []
    for i, spec in enumerate(specs):
        torch.manual_seed(seed * 1000 + i)
        model = create_model(spec, num_classes=num_classes, in_chans=input_shape[0])
        name = f"models/probe_{i:02d}.{fmt}"
        write(model, input_shape, folder / name)
        rows.append({"file": name, "arch": format_arch(spec)})
    with open(folder / "probes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "arch"])
        w.writeheader()
        w.writerows(rows)
    with open(folder / "measured.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["arch", "ms"])
        w.writeheader()
        w.writerows({"arch": r["arch"], "ms": ""} for r in rows)
    shape = "x".join(map(str, input_shape))
    (folder / "run_probes.py").write_text(RUNNER.replace("@SHAPE@", shape))
    return {"folder": str(folder), "probes": len(rows), "format": fmt, "input": shape,
            "num_classes": num_classes}  # fmt: skip


RUNNER = '''"""Time every probe of this kit on this device: batch 1, one thread, warm-up, median of repeats.

    python run_probes.py [--warmup 10] [--repeats 50]

Needs numpy and onnxruntime for .onnx probes (pip install onnxruntime), or the LiteRT interpreter
(pip install ai-edge-litert; tflite_runtime also works) for .tflite ones. Writes measured.csv (arch,ms)
beside this file, for `compactnas profile calibrate --measurements measured.csv --input @SHAPE@`.
"""

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE = tuple(int(d) for d in "@SHAPE@".split("x"))


def onnx_runner(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.random.rand(1, *SHAPE).astype(np.float32)}
    return lambda: sess.run(None, feed)


def tflite_runner(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.random.rand(*inp["shape"]).astype(inp["dtype"]))
    return interp.invoke


def main():
    p = argparse.ArgumentParser(description="time this kit's probes")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    with open(HERE / "probes.csv") as f:
        probes = list(csv.DictReader(f))
    rows = []
    for i, probe in enumerate(probes, 1):
        path = HERE / probe["file"]
        run = tflite_runner(path) if path.suffix == ".tflite" else onnx_runner(path)
        for _ in range(args.warmup):
            run()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1000)
        ms = statistics.median(times)
        rows.append({"arch": probe["arch"], "ms": f"{ms:.6g}"})
        print(f"{i}/{len(probes)} {probe['file']}: {ms:.4g} ms", flush=True)
    with open(HERE / "measured.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["arch", "ms"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {HERE / 'measured.csv'}")


if __name__ == "__main__":
    main()
'''
