"""Section "Latency fidelity", from latency_fidelity.json."""

from __future__ import annotations

from pathlib import Path

from .common import Ctx, num, pct, pyplot, settings_line, table


def plot_latency_fidelity(data: dict, path: Path) -> bool:
    plt = pyplot()
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


def render(ctx: Ctx) -> list[str]:
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
