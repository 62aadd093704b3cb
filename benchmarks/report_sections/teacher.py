"""Section "Against the teacher", from compression.json and baselines.json."""

from __future__ import annotations

from .common import Ctx, kb, num, pct, pm, short_arch, table


def render(ctx: Ctx) -> list[str]:
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
