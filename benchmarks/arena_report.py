"""REPORT.md section for benchmarks/arena.py: the headline table, verdicts, step times and a plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEVICES = ("rpi4", "cortex-a76", "stm32f746")


def _pct(st: dict | None) -> str:
    if not st:
        return "n/a"
    return f"{100 * st['mean']:.1f} ± {100 * st['std']:.1f}"


def _ms(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _rows(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(f"found trial {f['trial']}", f) for f in doc.get("found", [])]
    return found + [(n, b) for n, b in doc.get("baselines", {}).items()]


def plot(doc: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    groups = {"found": [], "as built": [], "small-input": [], "other": []}
    for label, e in _rows(doc):
        lat = (e.get("timing") or {}).get("ort_median_ms")
        acc = (e.get("test_accuracy") or {}).get("mean")
        if lat is None or acc is None:
            continue
        key = (
            "found"
            if label.startswith("found")
            else "small-input"
            if label.endswith("@s1")
            else "as built"
            if e.get("family") == "timm"
            else "other"
        )
        groups[key].append((lat, 100 * acc, label))
    marks = {"found": "o", "as built": "s", "small-input": "^", "other": "D"}
    for key, pts in groups.items():
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marks[key], label=key)
            for lat, acc, label in pts:
                ax.annotate(label.replace("found trial ", "#"), (lat, acc), fontsize=6)
    if not any(groups.values()):
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("latency, ONNX Runtime, 1 thread, batch 1 (ms, median)")
    ax.set_ylabel("test accuracy (%), mean over seeds")
    ax.set_title(f"{doc.get('data_name')}: found models and hand-designed baselines")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(ctx: Any) -> list[str]:
    """benchmarks/report.py's hook: every results/arena_*.json, one subsection each."""
    return section(ctx.results, ctx.out)


def section(results: Path, report_path: Path) -> list[str]:
    docs = sorted(results.glob("arena_*.json"))
    out = ["## Arena: found models against hand-designed ones", ""]
    if not docs:
        return out + ["Not run: `python benchmarks/arena.py --data SOURCE --quick`.", ""]
    for p in docs:
        out += render_one(json.loads(p.read_text()), results, report_path)
    return out


def render_one(doc: dict[str, Any], results: Path, report_path: Path) -> list[str]:
    s = doc.get("settings", {})
    out = [
        f"### {doc.get('data_name')} ({doc.get('status')})",
        "",
        f"Data `{doc.get('data')}` at {'x'.join(str(d) for d in doc.get('input_shape', []))}"
        f" ({doc.get('train_examples')} training, {doc.get('test_examples')} test examples). Search: "
        f"{s.get('trials')} trials x {s.get('search_epochs')} epochs"
        f"{' on ' + str(s['subset']) + ' examples' if s.get('subset') else ''}; every model then "
        f"trained from scratch with the same recipe on {doc.get('final_train_examples')} examples "
        f"for {s.get('final_epochs')} epochs x "
        f"{s.get('seeds')} seed(s). Host: {doc.get('host')}.",
        "",
        "Step times: "
        + ", ".join(
            f"{k.removesuffix('_s')} {v / 60:.1f} min" for k, v in doc.get("steps", {}).items()
        )
        + (f"; total {doc['elapsed_s'] / 60:.1f} min." if "elapsed_s" in doc else "."),
        "",
        "| model | test acc % | train loss | ORT ms (p10) | eager ms | rpi4 ms | a76 ms | "
        "stm32f746 ms (int8, fits) | params | MACs | dominated (measured / rpi4 / a76 / stm32) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in _rows(doc):
        t = e.get("timing") or {}
        preds = [e.get(f"predicted_{d}") or {} for d in DEVICES]
        mcu = preds[2]
        dom = (
            ""
            if label.startswith("found")
            else " / ".join(
                {True: "yes", False: "no"}.get(e.get(f"dominated_{w}"), "n/a")
                for w in ("measured", "rpi4", "cortex_a76", "stm32f746")
            )
        )
        loss = (e.get("train_loss") or {}).get("mean")
        out.append(
            f"| {label} | {_pct(e.get('test_accuracy'))} | {_ms(loss, 2)} | "
            f"{_ms(t.get('ort_median_ms'))} ({_ms(t.get('ort_p10_ms'))}) | {_ms(t.get('torch_median_ms'))} | "
            f"{_ms(preds[0].get('latency_ms'))} | {_ms(preds[1].get('latency_ms'))} | "
            f"{_ms(mcu.get('latency_ms'), 1)} ({'yes' if mcu.get('fits') else 'no'}) | "
            f"{e.get('params', 'n/a')} | {e.get('macs', 'n/a')} | {dom} |"
        )
    out.append("")
    notes = [
        f"- {n}: `{b['arch']}`"
        + (f"; {'; '.join(b['grammar_notes'])}" if b.get("grammar_notes") else "")
        for n, b in doc.get("baselines", {}).items()
        if b.get("arch")
    ]
    if notes:
        out += ["MCU reference networks as architecture strings of our grammar:", "", *notes, ""]
    png = results / f"arena_{doc.get('data_name')}.png"
    if plot(doc, png):
        out += [f"![accuracy against latency]({os.path.relpath(png, report_path.parent)})", ""]
    return out
