"""REPORT.md section for benchmarks/arena.py: the headline table, verdicts, step times and a plot."""

from __future__ import annotations

import json
import math
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
        f"trained from scratch with the same recipe on "
        f"{doc.get('final_train_examples') or s.get('final_subset') or 'all training'} examples "
        f"for {s.get('final_epochs')} epochs x "
        f"{s.get('seeds')} seed(s). Host: {doc.get('host')}.",
        "",
        "Step times: "
        + (
            ", ".join(
                f"{k.removesuffix('_s')} {v / 60:.1f} min"
                for k, v in doc.get("steps", {}).items()
                if v is not None
            )
            or "none finished yet"
        )
        + (f"; total {doc['elapsed_s'] / 60:.1f} min." if "elapsed_s" in doc else ".")
        + (
            f" {doc['baselines_reused']} baseline trainings were kept from an earlier run with the "
            f"same data, recipe and examples (`--resume`), where training the baselines took "
            f"{(doc.get('earlier_baselines_s') or 0) / 60:.1f} min."
            if doc.get("baselines_reused")
            else ""
        ),
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
    out += summary_lines(doc)
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


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """How many baselines are dominated where, which did not converge, the best found model against
    the most accurate baseline, and by how much each undominated baseline wins."""
    base = doc.get("baselines", {})
    found = [f for f in doc.get("found", []) if f.get("test_accuracy") and f.get("timing")]
    if not base or not found:
        return []
    out = ["Verdicts (a baseline is dominated when a found model is at least as accurate, mean test "
           "accuracy over seeds, and at least as fast):", ""]  # fmt: skip
    for where, label in (("measured", "ONNX Runtime on this host"), ("rpi4", "rpi4 predicted"),
                         ("cortex_a76", "cortex-a76 predicted"), ("stm32f746", "stm32f746 predicted")):  # fmt: skip
        got = [b.get(f"dominated_{where}") for b in base.values()]
        known = [g for g in got if g is not None]
        out.append(f"- {label}: {sum(known)} of {len(known)} baselines dominated.")
    chance = math.log(doc.get("num_classes") or 10)
    stuck = sorted(n for n, b in base.items()
                   if (b.get("train_loss") or {}).get("mean", 0) > 0.9 * chance)  # fmt: skip
    if stuck:
        out.append(
            f"- Not converged at this budget (final training loss above 90% of chance, ln C = "
            f"{chance:.2f}): {', '.join(stuck)}. Their verdicts say nothing about their design."
        )
    for n, b in base.items():
        v = b.get("verdict_measured") or {}
        if v and not v.get("dominated"):
            lead = v.get("accuracy_lead_points")
            ratio = v.get("latency_lead_ratio")
            out.append(
                f"- {n} is not dominated on measured latency: "
                + (
                    f"{lead:+.1f} points more accurate than every found model as fast as it"
                    if lead is not None
                    else "faster than every found model"
                )  # fmt: skip
                + (
                    f"; the fastest found model as accurate is {ratio:.2f}x its latency"
                    if ratio is not None
                    else "; no found model is as accurate"
                )  # fmt: skip
                + "."
            )
    top = max(base.items(), key=lambda kv: (kv[1].get("test_accuracy") or {}).get("mean", -1))
    name, b = top
    acc, lat = b["test_accuracy"]["mean"], (b.get("timing") or {}).get("ort_median_ms")
    rpi = (b.get("predicted_rpi4") or {}).get("latency_ms")
    ok = [f for f in found if f["test_accuracy"]["mean"] >= acc]
    if lat and rpi:
        half = [f for f in ok if f["timing"]["ort_median_ms"] <= 0.5 * lat
                and (f.get("predicted_rpi4") or {}).get("latency_ms", math.inf) <= 0.5 * rpi]  # fmt: skip
        out.append(
            f"- Most accurate baseline: {name} ({100 * acc:.1f}%, {lat:.3f} ms measured, {rpi:.2f} ms "
            f"rpi4). Found models at least as accurate: {len(ok)}; of those at <= 0.5x its measured "
            f"and rpi4 latency: {len(half)}"
            + (f" (trial {', '.join(str(f['trial']) for f in half)})" if half else "")
            + "."
        )
    return out + [""]
