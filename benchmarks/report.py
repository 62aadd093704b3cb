"""Render benchmarks/REPORT.md and its plots from the JSON files the benchmarks wrote.

    python benchmarks/report.py [--results DIR] [--out FILE]

Reads whichever of search_quality, latency_fidelity, compression, ray_scaling, baselines and device_fidelity .json are in
``--results`` (a missing one is reported as not run), writes the plots next to them and the report to
``--out``. Every number in the report is read from those files; the machine and library versions are
those of the host rendering the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from compactnas.core.host import cpu_name

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "baselines", "search_quality", "compression", "latency_fidelity", "ray_scaling", "device_fidelity",
)  # fmt: skip
PACKAGES = ("torch", "timm", "optuna", "ray", "mlflow", "compactnas")

# -- formatting ------------------------------------------------------------------------------------


def pct(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def kb(v: Any) -> str:
    return "n/a" if v is None else f"{v / 1024:,.1f} KB"


def pm(stats: dict | None, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of a {'mean','std'} dict, scaled (accuracies to percent by default)."""
    if not stats:
        return "n/a"
    return f"{scale * stats['mean']:.{digits}f} ± {scale * stats.get('std', 0.0):.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def settings_line(settings: dict[str, Any] | None) -> str:
    if not settings:
        return "Settings: not recorded."
    parts = []
    for k, v in settings.items():
        if v is None:
            v = "none"
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list | tuple):
            v = ", ".join(str(x) for x in v)
        parts.append(f"{k}: {v}")
    return "Settings: " + "; ".join(parts) + "."


def short_arch(arch: str, limit: int = 60) -> str:
    return arch if len(arch) <= limit else arch[: limit - 3] + "..."


# -- machine ---------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# -- plots -----------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_baselines(run: dict, path: Path) -> None:
    """Test accuracy against measured latency, size, and predicted latency per device."""
    plt = _pyplot()
    models = [m for m in run["models"] if m.get("test_accuracy") is not None]
    devices = sorted({d for m in models for d in m.get("predicted_ms", {})})
    panels = [
        ("latency_ms", "measured latency on this host (ms)", None),
        ("size_bytes", "size (KB; baselines fp32, 4 B/param)", None),
    ]
    panels += [("predicted_ms", f"predicted latency, {d} (ms)", d) for d in devices]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows + 0.8), squeeze=False)
    found = [m for m in models if m["kind"] == "found"]
    base = [m for m in models if m["kind"] == "baseline"]
    markers = "sD^v<>pPX*h"
    colours = [plt.cm.tab10(k) for k in range(10) if k != 3]  # tab10's red marks the found models

    def x_of(m: dict, key: str, dev: str | None) -> float:
        if dev:
            return m[key][dev]
        return m[key] / 1024 if key == "size_bytes" else m[key]

    for ax, (key, label, dev) in zip(axes.flat, panels, strict=False):
        ax.scatter(
            [x_of(m, key, dev) for m in found], [100 * m["test_accuracy"] for m in found],
            s=36, c="tab:red", marker="o", label="found (search front)",
        )  # fmt: skip
        for j, m in enumerate(base):
            ax.scatter(
                [x_of(m, key, dev)], [100 * m["test_accuracy"]], s=44,
                marker=markers[j % len(markers)], color=colours[j % len(colours)], label=m["name"],
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"digits, seed {run.get('seed')}: found models and hand-designed baselines")
    fig.tight_layout(rect=(0, 0.1 if nrows > 1 else 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_search_quality(data: dict, path: Path) -> None:
    plt = _pyplot()
    runs = data.get("runs", [])
    samplers = list(data.get("samplers", {}))
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, s in enumerate(samplers):
        hv = [r["hypervolume"] for r in runs if r["sampler"] == s]
        ax.bar(i, data["samplers"][s]["hypervolume_mean"], color="0.85", edgecolor="0.4")
        ax.scatter([i] * len(hv), hv, c="tab:red", s=20, zorder=3)
    ax.set_xticks(range(len(samplers)), samplers)
    ax.set_ylabel("hypervolume (bars: mean, dots: seeds)")
    ax.set_title("search quality at equal trial budget")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency_fidelity(data: dict, path: Path) -> bool:
    plt = _pyplot()
    profiles = {
        n: p["validation"]["rows"]
        for n, p in data.get("profiles", {}).items()
        if p.get("validation", {}).get("rows")
    }
    if not profiles:
        return False
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.5 * len(profiles), 4.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], profiles.items(), strict=True):
        meas = [r["measured_ms"] for r in rows]
        pred = [r["predicted_ms"] for r in rows]
        ax.scatter(meas, pred, s=14, c="tab:red")
        lo, hi = min(meas + pred), max(meas + pred)
        ax.plot([lo, hi], [lo, hi], c="0.5", lw=1)
        ax.set_xlabel("measured (ms)")
        ax.set_ylabel("predicted (ms)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- sections --------------------------------------------------------------------------------------


class Ctx:
    def __init__(self, results: Path, out: Path, data: dict[str, dict | None]):
        self.results, self.out, self.data = results, out, data

    def img(self, path: Path, alt: str) -> str:
        return f"![{alt}]({os.path.relpath(path, self.out.parent)})"


def verdict_text(v: dict) -> str:
    if v.get("dominated"):
        best = v.get("best", {})
        speed = best.get("speedup")
        return (
            f"yes, by trial(s) {', '.join(str(t) for t in v['dominated_by'])} (best: trial "
            f"{best.get('trial')}, {best.get('accuracy_gain_points', 0):+.2f} points, "
            f"{num(speed, 1)}x faster)"
        )
    parts = []
    acc = v.get("accuracy_lead_points")
    lat = v.get("latency_lead_ratio")
    parts.append(
        f"leads the best found model at least as fast by {acc:.2f} points"
        if acc is not None
        else "no found model is as fast"
    )
    parts.append(
        f"the fastest found model at least as accurate is {lat:.2f}x its latency"
        if lat is not None
        else "no found model is as accurate"
    )
    return "no: " + "; ".join(parts)


def _model_name(m: dict) -> str:
    if m["kind"] == "found":
        return f"trial {m['trial']}: `{short_arch(m['arch'], 48)}`"
    return f"`{m['name']}`"


def _fit_note(run: dict) -> list[str]:
    """How well each side fits its training data in the budget, from the recorded training losses."""
    n = run.get("data", {}).get("num_classes")
    found = [m["train_loss"] for m in run["models"] if m["kind"] == "found" and m.get("train_loss")]
    base = [
        m["train_loss"] for m in run["models"] if m["kind"] == "baseline" and m.get("train_loss")
    ]
    if not found or not base:
        return []
    chance = f" (chance level for {n} classes is ln {n} = {math.log(n):.3f})" if n else ""
    return [
        f"Final training loss: found models {min(found):.3f} to {max(found):.3f}, baselines "
        f"{min(base):.3f} to {max(base):.3f}{chance}. At this budget a baseline that stays near "
        "chance has not learned the task yet; the verdicts are about this recipe and budget.",
        "",
    ]


def _verdict_lines(run: dict) -> list[str]:
    out = ["Verdicts (test accuracy and measured latency, this host):", ""]
    for mm in run["models"]:
        if mm["kind"] != "baseline":
            continue
        line = f"- `{mm['name']}`: {verdict_text(mm['verdict'])}"
        p10 = mm.get("verdict_p10")
        if p10 is not None:
            same = p10.get("dominated") == mm["verdict"].get("dominated")
            line += (
                "; the 10th-percentile timing agrees"
                if same
                else f"; with 10th-percentile timing: {verdict_text(p10)}"
            )
        preds = mm.get("verdict_predicted", {})
        if preds:
            line += "; on predicted latency: " + ", ".join(
                f"{dv} {'dominated' if v.get('dominated') else 'not dominated'}"
                for dv, v in preds.items()
            )
        out.append(line + ".")
    return out + [""]


def _longer_lines(run: dict) -> list[str]:
    rows = [m for m in run["models"] if m["kind"] == "baseline" and m.get("longer_training")]
    if not rows:
        return []
    out = [
        "Budget check (not an equal-recipe comparison): each baseline trained again with more epochs, "
        "against the same found models trained at the search's budget.",
        "",
    ]
    out += table(
        ["baseline", "epochs", "test acc", "train loss", "dominated by a found model"],
        [
            [f"`{m['name']}`", m["longer_training"]["epochs"],
             pct(m["longer_training"]["test_accuracy"]), num(m["longer_training"].get("train_loss")),
             verdict_text(m["longer_training"]["verdict"]) if "verdict" in m["longer_training"] else "n/a"]
            for m in rows
        ],
    )  # fmt: skip
    return out + [""]


def section_headline(ctx: Ctx) -> list[str]:
    d = ctx.data.get("baselines")
    out = ["## Found models against hand-designed baselines", ""]
    if d is None:
        return out + [
            "Not run (no `baselines.json`): `python benchmarks/baselines.py [--quick]`.",
            "",
        ]
    out += [settings_line(d.get("settings")), ""]
    if d.get("fairness_note"):
        out += [f"Fairness: {d['fairness_note']}", ""]
    m = d.get("machine", {})
    if m:
        out += [
            f"Measured on: {m.get('cpu')}, {m.get('cores')} cores; load average "
            f"{m.get('load_avg_start')} at the start, {m.get('load_avg_end')} at the end; "
            f"{d.get('mode', '?')} mode, {num(d.get('elapsed_s'), 0)} s in all.",
            "",
        ]
    runs = d.get("runs", [])
    if runs:
        verdicts = [
            (run.get("seed"), mm["verdict"]["dominated"])
            for run in runs
            for mm in run["models"]
            if mm["kind"] == "baseline"
        ]
        out += [
            f"**Dominated by at least one found model** (test accuracy and measured latency): "
            f"{sum(v for _, v in verdicts)} of {len(verdicts)} baseline runs "
            f"({len(runs)} seed(s)).",
            "",
        ]
    for i, run in enumerate(runs):
        sr, tc = run.get("search", {}), run.get("train_config", {})
        devices = sorted({dv for mm in run["models"] for dv in mm.get("predicted_ms", {})})
        shown = [mm for mm in run["models"] if mm["kind"] != "teacher"]
        out += [
            f"### Seed {run.get('seed')}",
            "",
            f"Search: {sr.get('n_complete')} of {sr.get('n_trials')} trials completed in "
            f"{num(sr.get('seconds'), 0)} s, hypervolume {num(sr.get('hypervolume'))}, "
            f"{sum(mm['kind'] == 'found' for mm in shown)} models on the front. Baselines: "
            f"{tc.get('epochs')} epochs, batch {tc.get('batch_size')}, {tc.get('optimizer')} at lr "
            f"{tc.get('lr')}, {tc.get('schedule')} schedule, training seed {tc.get('seed')}.",
            "",
        ]
        header = [
            "model", "kind", "test acc", "train loss", "latency (ms)", "p10 latency (ms)",
            "at search (ms)", "size", "MACs", "dominated by a found model",
        ]  # fmt: skip
        rows = [
            [
                _model_name(mm), mm["kind"], pct(mm.get("test_accuracy")), num(mm.get("train_loss")),
                num(mm.get("latency_ms")), num(mm.get("latency_p10_ms")),
                num(mm.get("search_latency_ms")), kb(mm.get("size_bytes")), num(mm.get("macs")),
                ("yes" if mm.get("verdict", {}).get("dominated") else "no")
                if mm["kind"] == "baseline" else "",
            ]
            for mm in shown
        ]  # fmt: skip
        out += table(header, rows) + [""]
        out += [
            "Latency: median over interleaved rounds of the search's own measurement "
            "(`measure_latency_ms`, batch 1, one thread), all models in one run; p10: hw_profiles' "
            "round-robin 10th percentile, which resists a busy neighbour; at search: what the search "
            "recorded for the candidate when it was evaluated.",
            "",
        ]
        out += _fit_note(run) + _verdict_lines(run) + _longer_lines(run)
        if devices:
            out += ["Predicted latency on published device profiles (roofline, ms):", ""]
            out += table(
                ["model", *devices],
                [
                    [_model_name(mm), *(num(mm.get("predicted_ms", {}).get(dv)) for dv in devices)]
                    for mm in shown
                ],
            )
            chk = run.get("predictor_check", {})
            if chk.get("n"):
                out += [
                    "",
                    "The found models are predicted from their architecture strings; the baselines by the "
                    "same roofline over a layer list traced from the module's operators. On the "
                    f"{chk['n']} found-model predictions the traced list differs from the string's by at "
                    f"most {pct(chk.get('max_relative_difference'), 4)}.",
                ]
            out.append("")
        if i == 0:
            png = ctx.results / "baselines_front.png"
            plot_baselines(run, png)
            out += [ctx.img(png, "found models and baselines"), ""]
    summ = d.get("summary", {})
    if len(d.get("runs", [])) > 1 and summ:
        out += ["Over all seeds:", ""]
        out += table(
            ["baseline", "dominated (measured)", "dominated (p10 timing)"],
            [
                [f"`{k}`", f"{v['dominated']}/{v['seeds']}", f"{v['dominated_p10']}/{v['seeds']}"]
                for k, v in summ.items()
            ],
        )
        out.append("")
    return out


def section_search_quality(ctx: Ctx) -> list[str]:
    d = ctx.data.get("search_quality")
    out = ["## Against random search", ""]
    if d is None:
        return out + ["Not run (no `search_quality.json`).", ""]
    out += [settings_line(d.get("settings")), ""]
    ref = d.get("reference_point")
    if ref:
        out += [
            "Hypervolume of (error, latency, size), normalised to one reference point shared by all "
            "runs: " + ", ".join(f"{k} {num(v)}" for k, v in ref.items()) + ".",
            "",
        ]
    rows = [
        [s, f"{v['hypervolume_mean']:.4f} ± {v['hypervolume_std']:.4f}",
         num(v.get("candidates_per_min_mean"), 1)]
        for s, v in d.get("samplers", {}).items()
    ]  # fmt: skip
    out += table(["sampler", "hypervolume (mean ± std over seeds)", "candidates / min"], rows)
    out += [
        "",
        f"Hypervolume ratio NSGA-II / random: {num(d.get('hypervolume_ratio_nsga2_over_random'))}.",
        "",
    ]
    runs = d.get("runs", [])
    if runs:
        out += table(
            ["sampler", "seed", "hypervolume", "complete", "best val acc", "seconds"],
            [
                [r["sampler"], r["seed"], num(r["hypervolume"], 4), r.get("n_complete"),
                 pct(r.get("best_accuracy")), num(r.get("elapsed_s"), 0)]
                for r in runs
            ],
        )  # fmt: skip
        png = ctx.results / "search_quality_hv.png"
        plot_search_quality(d, png)
        out += ["", ctx.img(png, "hypervolume per sampler"), ""]
    return out


def section_teacher(ctx: Ctx) -> list[str]:
    c, b = ctx.data.get("compression"), ctx.data.get("baselines")
    out = ["## Against the teacher", ""]
    if c is None:
        return out + ["Not run (no `compression.json`).", ""]
    t = c["teacher"]
    out += [
        f"Teacher `{t['model']}`: {num(t['params'])} parameters, {kb(t['size_bytes'])} (fp32), test "
        f"accuracy {pct(t['test_accuracy'])} (from `compression.json`, {c.get('mode', '?')} mode).",
        "",
    ]
    models = c.get("compression_ratio", {}).get("models", [])
    if models:
        out += ["Compressed, distilled models (`compression.json`):", ""]
        out += table(
            ["model", "size", "size ratio", "test acc (mean ± std)", "points lost"],
            [
                [f"`{short_arch(m['arch'])}`", kb(m["size_bytes"]), f"{m['ratio']:.0f}x",
                 pm(m["test_accuracy"]), f"{m['loss_points']:.2f}"]
                for m in models
            ],
        )  # fmt: skip
        out.append("")
    t_lat = t.get("latency_ms")
    if b is not None and b.get("runs"):
        run = b["runs"][0]
        trow = next((m for m in run["models"] if m["kind"] == "teacher"), None)
        if t_lat is None and trow is not None:
            t_lat = trow.get("latency_ms")
            src = (
                f"measured in `baselines.json`'s timing run (seed {run.get('seed')}), the same run "
                "as the found models"
            )
        else:
            src = "from `compression.json`"
        if t_lat is not None:
            found = [m for m in run["models"] if m["kind"] == "found"]
            out += [
                f"Found models of `baselines.json` (seed {run.get('seed')}) against the teacher; "
                f"teacher latency {num(t_lat)} ms {src}. Points lost are against the teacher's test "
                f"accuracy in `compression.json` (data split of its own run).",
                "",
            ]
            out += table(
                ["found model", "test acc", "points lost", "size ratio", "latency ratio"],
                [
                    [f"trial {m['trial']}", pct(m["test_accuracy"]),
                     f"{100 * (t['test_accuracy'] - m['test_accuracy']):.2f}",
                     f"{t['size_bytes'] / m['size_bytes']:.0f}x", f"{t_lat / m['latency_ms']:.1f}x"]
                    for m in found
                ],
            )  # fmt: skip
            out.append("")
    else:
        out += [
            "Teacher latency: n/a (not in `compression.json`, and `baselines.json` not run).",
            "",
        ]
    return out


def section_latency(ctx: Ctx) -> list[str]:
    d = ctx.data.get("latency_fidelity")
    out = ["## Latency fidelity", ""]
    if d is None:
        return out + ["Not run (no `latency_fidelity.json`).", ""]
    out += [
        settings_line({
            "quick": d.get("quick"), "space": d.get("space"), "input_shape": d.get("input_shape"),
            "threads": d.get("threads"), "host": d.get("host"), "cpu_count": d.get("cpu_count"),
            "torch": d.get("torch"), "onnxruntime": d.get("onnxruntime"),
        }),
        "",
    ]  # fmt: skip
    rows = []
    for name, p in d.get("profiles", {}).items():
        for label, key in (("", "validation"), (" (compressed space)", "validation_compressed")):
            v = p.get(key)
            if not v:
                continue
            m, b = v["model"], v["macs"]
            rows.append([
                f"{name}{label}", v.get("n"), p.get("units"), num(m["spearman"]), num(m["kendall"]),
                f"{m['mape']:.1f}%", pct(m["within_10pct"], 0), num(b["spearman"]),
                f"{b['mape']:.1f}%", pct(b["within_10pct"], 0),
            ])  # fmt: skip
    out += table(
        ["table", "archs", "units", "Spearman", "Kendall", "MAPE", "within 10%",
         "MACs Spearman", "MACs MAPE", "MACs within 10%"],
        rows,
    )  # fmt: skip
    tm = d.get("timing", {})
    if tm:
        out += [
            "",
            f"One prediction: {num(tm.get('predict_first_call_ms'))} ms first call, "
            f"{num(tm.get('predict_cached_ms'), 4)} ms cached; one measurement "
            f"{num(tm.get('one_measurement_s'))} s.",
        ]
    tg = d.get("targets", {})
    if tg:
        out += [
            "",
            "Targets: "
            + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in tg.items())
            + ".",
        ]
    png = ctx.results / "latency_fidelity.png"
    if plot_latency_fidelity(d, png):
        out += ["", ctx.img(png, "predicted against measured latency")]
    return out + [""]


def section_compression(ctx: Ctx) -> list[str]:
    d = ctx.data.get("compression")
    out = ["## Compression", ""]
    if d is None:
        return out + ["Not run (no `compression.json`).", ""]
    dist = d.get("distillation", {})
    seeds = dist.get("per_arch", [{}])[0].get("seeds") if dist.get("per_arch") else None
    out += [
        settings_line({
            "mode": d.get("mode"), "epochs": d.get("epochs"), "threads": d.get("threads"),
            "distillation seeds": seeds, "distillation": d.get("distill_settings"),
            "data": d.get("data", {}).get("name"),
        }),
        "",
    ]  # fmt: skip
    if dist.get("per_arch"):
        out += ["Distillation against none (test accuracy, %):", ""]
        out += table(
            ["architecture", "params", "distilled", "no teacher", "paired gain (points)"],
            [
                [f"`{short_arch(a['arch'])}`", num(a.get("params")), pm(a["distilled"]),
                 pm(a["baseline"]), pm(a["paired_gain"])]
                for a in dist["per_arch"]
            ],
        )  # fmt: skip
        out += ["", f"Mean paired gain: {num(dist.get('mean_gain_points'), 2)} points.", ""]
    q = d.get("int8", {})
    if q.get("ptq"):
        out += ["int8 against fp32 (test accuracy, %):", ""]
        out += table(
            ["architecture", "fp32", "int8 post-training", "points lost"],
            [
                [f"`{short_arch(a['arch'])}`", pm(a["fp32"]), pm(a["int8_ptq"]), f"{a['loss_points']:.2f}"]
                for a in q["ptq"]
            ],
        )  # fmt: skip
        qat = q.get("qat8")
        if qat:
            out += [
                "",
                f"8-bit quantization-aware training: {pm(qat['qat8'])} against fp32 {pm(qat['fp32'])}, "
                f"{qat['loss_points']:.2f} points lost.",
            ]
        out.append("")
    pr = d.get("pruning")
    if pr:
        out += [
            f"Pruned and fine-tuned against the same shape from scratch: {pm(pr['pruned_finetuned'])} "
            f"against {pm(pr['scratch'])} ({pr['gain_points']:+.2f} points; {num(pr.get('params'))} of "
            f"{num(pr.get('dense_params'))} parameters kept).",
            "",
        ]
    tt = d.get("trial_time")
    if tt:
        out += [
            "Wall time of one search trial: "
            + ", ".join(f"{k} {num(v.get('seconds'), 1)} s" for k, v in tt.items())
            + ".",
            "",
        ]
    tg = d.get("targets", {})
    if tg:
        out += table(
            ["target", "measured", "met"],
            [[k, num(v.get("measured"), 2), num(bool(v.get("met")))] for k, v in tg.items()],
        )
        out.append("")
    return out


def section_ray(ctx: Ctx) -> list[str]:
    d = ctx.data.get("ray_scaling")
    out = ["## Ray scaling", ""]
    if d is None:
        return out + ["Not run (no `ray_scaling.json`).", ""]
    out += [settings_line(d.get("settings")), ""]
    wall = d.get("wall_s", {})
    complete = d.get("complete", {})
    if wall:
        out += table(
            ["run", "wall time (s)", "completed trials"],
            [[k, num(v, 1), complete.get(k, "n/a")] for k, v in wall.items()],
        )
        out.append("")
    for key, label in (
        ("speedup_2_workers_over_1", "Speedup, 2 Ray workers over 1"),
        ("speedup_2_workers_over_local", "Speedup, 2 Ray workers over the local backend"),
        ("ray_overhead_per_trial_s", "Ray overhead per trial against the local backend (s)"),
        ("same_candidates_in_all_runs", "Same candidates in all runs"),
    ):
        if key in d:
            out.append(f"- {label}: {num(d[key], 2)}")
    return out + [""]


def section_device_fidelity(ctx: Ctx) -> list[str]:
    # The section is rendered by the benchmark's own module (benchmarks/device_fidelity.py).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from device_fidelity import report_section

    return report_section(ctx.data.get("device_fidelity"), ctx.results, ctx.img)


SECTIONS: tuple[Callable[[Ctx], list[str]], ...] = (
    section_headline,
    section_search_quality,
    section_teacher,
    section_latency,
    section_compression,
    section_ray,
    section_device_fidelity,
)


def _safe(section: Callable[[Ctx], list[str]], ctx: Ctx) -> list[str]:
    """A results file whose layout changed costs its own section, not the whole report."""
    try:
        return section(ctx)
    except Exception as e:  # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        title = section.__name__.removeprefix("section_").replace("_", " ")
        return [
            f"## {title}",
            "",
            f"Could not render this section: {type(e).__name__}: {e} (report.py line {where.lineno}).",
            "",
        ]


def run_times(data: dict[str, dict | None]) -> dict[str, float]:
    """Seconds each benchmark recorded for itself, where its file says (layouts differ per benchmark)."""
    out: dict[str, float] = {}
    for name, d in data.items():
        if d is None:
            continue
        if isinstance(d.get("elapsed_s"), int | float):
            out[name] = float(d["elapsed_s"])
        elif name == "search_quality" and d.get("runs"):
            out[name] = float(sum(r.get("elapsed_s", 0.0) for r in d["runs"]))
        elif name == "ray_scaling" and isinstance(d.get("wall_s"), dict):
            out[name] = float(sum(d["wall_s"].values()))
        elif name == "latency_fidelity" and d.get("profiles"):
            out[name] = float(
                sum(
                    p.get("build_s", 0.0) + p.get("validate_s", 0.0) for p in d["profiles"].values()
                )
            )
    return out


def load(results: Path) -> dict[str, dict | None]:
    data: dict[str, dict | None] = {}
    for name in BENCHMARKS:
        p = results / f"{name}.json"
        try:
            data[name] = json.loads(p.read_text()) if p.is_file() else None
        except json.JSONDecodeError as e:
            print(f"report: {p} is not valid JSON ({e}); treated as not run", file=sys.stderr)
            data[name] = None
    return data


def render(results: Path, out: Path) -> str:
    data = load(results)
    ctx = Ctx(results, out, data)
    v = versions()
    ran = [n for n in BENCHMARKS if data[n] is not None]
    lines = [
        "# compactnas benchmark report",
        "",
        f"Rendered {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `benchmarks/report.py` "
        f"from `{os.path.relpath(results, out.parent)}/*.json`; every number below is read from those "
        "files. Present: " + (", ".join(ran) or "none") + ".",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "How to run: `make bench` (= `python benchmarks/run_all.py --quick`) runs every benchmark at "
        "the reduced budgets meant for a 2-core machine, then this report. The full settings "
        "(more trials, epochs, seeds and baselines) are `python benchmarks/run_all.py` without "
        "`--quick`, for a cluster or a bigger machine; one benchmark alone is `python "
        "benchmarks/NAME.py [--quick]`, then `python benchmarks/report.py`.",
        "",
    ]
    times = run_times(data)
    if times:
        lines += [
            "Recorded run times: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
            + f" ({sum(times.values()) / 60:.1f} min in all).",
            "",
        ]
    for section in SECTIONS:
        lines += _safe(section, ctx)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=HERE / "results", help="folder of *.json")
    p.add_argument("--out", type=Path, default=HERE / "REPORT.md")
    args = p.parse_args(argv)
    results, out = args.results.resolve(), args.out.resolve()
    if not results.is_dir():
        print(f"report: no results folder {results}", file=sys.stderr)
        return 2
    text = render(results, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
