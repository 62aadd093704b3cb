"""Section "Found models against hand-designed baselines", from baselines.json."""

from __future__ import annotations

import math
from pathlib import Path

from .common import Ctx, kb, num, pct, pyplot, settings_line, short_arch, table


def plot_baselines(run: dict, path: Path) -> None:
    """Test accuracy against measured latency, size, and predicted latency per device."""
    plt = pyplot()
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


def render(ctx: Ctx) -> list[str]:
    d = ctx.data.get("baselines")
    out = ["## Note: found models against hand-designed baselines on 8x8 digits", "", _note(d), ""]
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
        out += _seed_lines(ctx, run, i)
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


def _note(d: dict | None) -> str:
    """Why this section is a note, with the baselines' test accuracies and chance read from the file."""
    arena = (
        "the arena above (real 32x32 images) is the comparison that says something about design."
    )
    runs = (d or {}).get("runs") or []
    accs = [m["test_accuracy"] for r in runs for m in r.get("models", [])
            if m.get("kind") == "baseline" and m.get("test_accuracy") is not None]  # fmt: skip
    classes = next((r["data"]["num_classes"] for r in runs if r.get("data")), None)
    if not accs or not classes:
        return f"Kept as a note: {arena}"
    return (
        f"Kept as a note: at 8x8 the hand-designed networks reach {pct(min(accs))} to "
        f"{pct(max(accs))} test accuracy (chance: {pct(1 / classes)}); {arena}"
    )


def _seed_lines(ctx: Ctx, run: dict, i: int) -> list[str]:
    """One seed's search, table of models, verdicts and predicted latencies (and, for the first, the plot)."""
    out: list[str] = []
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
    return out
