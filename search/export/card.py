"""The model card of an export: where the model came from, what it expects as input, how each format
compares with PyTorch, and the host that measured it; as JSON (card.json) and as Markdown (card.md)."""

from __future__ import annotations

import datetime as dt
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from compactnas.core.host import cpu_name
from compactnas.search.export.checkpoint import Rebuilt
from compactnas.search.export.edge import card_lines
from compactnas.search.export.formats import INPUT_NAME, OUTPUT_NAME


# Long but flat: one literal in the order card.json reads, easier to check against the file than pieces.
def build_card(
    previous: dict[str, Any],
    dest: Path,
    out: Path,
    summary: dict[str, Any],
    rebuilt: Rebuilt,
    pytorch: dict[str, float],
    entries: dict[str, dict[str, Any]],
    pick: str | None,
) -> dict[str, Any]:
    """The card of an export into ``dest``; formats in ``previous`` whose files remain stay listed."""
    import onnxruntime

    frozen, number, arch, data = rebuilt.frozen, rebuilt.number, rebuilt.arch, rebuilt.data
    weights, ckpt_path, ckpt = rebuilt.weights, rebuilt.checkpoint, rebuilt.blob
    metrics = dict(frozen.user_attrs.get("metrics") or ckpt.get("metrics") or {})
    scfg = summary.get("config", {})
    exports = {
        fmt: e
        for fmt, e in (previous.get("exports") or {}).items()
        # Earlier exports of the same trial stay listed while their files are there.
        if fmt not in entries and e.get("file") and (dest / e["file"]).is_file()
    }
    exports.update(entries)
    device = summary.get("device") or scfg.get("device") or "host"
    return {
        "compactnas_version": version("compactnas"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "trial": number,
        "arch": arch,
        "dest": str(dest),
        "source": {
            "search": str(out),
            "trial": number,
            "duplicate_of": frozen.user_attrs.get("duplicate_of"),
            "picked_by": pick,
            "weights": weights,
            "checkpoint": str(ckpt_path),
        },
        "model": {
            "input_name": INPUT_NAME,
            "input_shape": ["batch", *data.input_shape],
            "input_dtype": "float32",
            "output_name": OUTPUT_NAME,
            "num_classes": data.num_classes,
            "classes": list(data.classes),
            "preprocessing": (
                f"as compactnas.load_data({scfg.get('data', 'digits')!r}, seed={scfg.get('seed', 0)}, "
                f"resize={scfg.get('resize')!r}): pixels in [0, 1], standardised per channel with the training "
                "split's mean and standard deviation"
            ),
            "normalize": {
                "scale": "pixels to [0, 1]",
                "mean": list(data.mean),
                "std": list(data.std),
            },
            "params": _int_or_none(metrics.get("params")),
            "macs": _int_or_none(metrics.get("macs")),
        },
        "data": {
            "source": scfg.get("data"),
            "name": data.name,
            "seed": scfg.get("seed"),
            "resize": scfg.get("resize"),
            "test_examples": len(data.test),
        },  # fmt: skip
        "search_metrics": {
            "val_accuracy": metrics.get("accuracy"),
            "test_accuracy": metrics.get("test_accuracy"),
            "size_bytes": _int_or_none(metrics.get("size_bytes")),
        },
        "predicted": {
            "device": device,
            "latency_ms": metrics.get("latency_ms"),
            "basis": "measured on the search's host during the search"
            if device == "host"
            else f"device profile '{device}'",
            "energy_mj": metrics.get("energy_mj"),
            "peak_sram_kb": metrics.get("peak_sram_kb"),
        },
        "pytorch": pytorch,
        "host": {
            "machine": platform.machine(),
            "processor": cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": 1,
        },
        "exports": exports,
    }


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, for people."""
    p, pred, src = card["pytorch"], card["predicted"], card["source"]
    lines = [
        f"# Model card: trial {card['trial']}",
        "",
        f"Architecture: `{card['arch']}`",
        "",
        f"From the search in `{src['search']}` (trial {src['trial']}, {src['weights']} weights"
        + (f", picked by {src['picked_by']}" if src.get("picked_by") else "")
        + (
            "; retrained from scratch with the final budget by `compactnas retrain`"
            if src["weights"] == "retrained"
            else ""
        )
        + f"); data `{card['data']['source']}`, {card['data']['test_examples']} held-out test images.",
        "",
        f"Input `{card['model']['input_name']}`: float32 {' x '.join(str(d) for d in card['model']['input_shape'])}, "
        f"{card['model']['preprocessing']} (mean {_fmt_stats(card['model']['normalize']['mean'])}, "
        f"std {_fmt_stats(card['model']['normalize']['std'])}). Output `{card['model']['output_name']}`: "
        f"{card['model']['num_classes']} logits.",
        "",
        "| format | file | size (bytes) | test accuracy | max abs diff vs PyTorch | top-1 agreement | latency here (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| PyTorch (reference) | | | {p['test_accuracy']:.4f} | 0 | 100.00% | {p['latency_ms_host']:.3f} |",
    ]
    for fmt, e in card["exports"].items():
        if "max_abs_diff" in e:
            lines.append(
                f"| {fmt} | `{e['file']}` | {e['size_bytes']:,} | {e['test_accuracy']:.4f} | {e['max_abs_diff']:.2e} | "
                f"{100 * e['top1_agreement']:.2f}% | {e['latency_ms_host']:.3f} |"
            )
        else:
            lines.append(f"| {fmt} | `{e['file']}` | {e['size_bytes']:,} | | | | |")
    latency = pred.get("latency_ms")
    searched = card.get("search_metrics", {}).get("size_bytes")
    if searched:
        sizes = ", ".join(
            f"{fmt} {e['size_bytes'] / searched:.2f}x"
            for fmt, e in card["exports"].items()
            if e.get("size_bytes")
        )
        lines += [
            "",
            f"The search counted {searched:,} bytes (`size_bytes`); files to that: {sizes}.",
        ]
    lines += [
        "",
        f"Predicted latency: {latency:.3f} ms ({pred['basis']})."
        if latency is not None
        else "Predicted latency: unknown.",
        f"Latencies 'here' are batch-1 medians on this host ({card['host']['processor']}, 1 thread).",
    ]
    cal = card["exports"].get("onnx-int8", {}).get("calibration")
    if cal:
        lines.append(
            f"int8: static QDQ quantization, per-channel int8 weights, {cal['method']} calibration on "
            f"{cal['samples']} training images"
            + (" (chosen on the validation split)." if cal.get("selection") else ".")
        )

    lines += card_lines(card["exports"])
    logged = {
        f: e["mlflow"].get("model_uri") or e["mlflow"].get("artifact")
        for f, e in card["exports"].items()
        if "mlflow" in e
    }
    if logged:
        lines += ["", "MLflow models: " + ", ".join(f"{f} `{u}`" for f, u in logged.items()) + "."]
    if card.get("warnings"):
        lines += ["", "Warnings:", *(f"- {w}" for w in card["warnings"])]
    lines += [
        "",
        "Load it back:",
        "",
        "```python",
        "import compactnas",
        f"model = compactnas.load_exported({str(card['dest'])!r})  # or one file of this folder",
        "```",
        "",
    ]
    return "\n".join(lines)


def _fmt_stats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"
