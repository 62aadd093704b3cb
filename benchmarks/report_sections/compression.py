"""Section "Compression", from compression.json."""

from __future__ import annotations

from .common import Ctx, num, pm, settings_line, short_arch, table


def render(ctx: Ctx) -> list[str]:
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
    sk = d.get("searched_keys")
    if sk and sk.get("variants"):
        dense = sk["variants"].get("dense")
        out += [
            f"The searched keys as a search trains them (compress evaluator, {sk.get('epochs')} "
            f"epochs, {sk.get('seeds')} seeds; test accuracy, %):",
            "",
        ]
        out += table(
            ["variant", "test accuracy", "points against dense", "size (B)"],
            [
                [name, pm(v["test_accuracy"]),
                 num(100 * (v["test_accuracy"]["mean"] - dense["test_accuracy"]["mean"]), 2)
                 if dense else "", num(round(v["size_bytes"]))]
                for name, v in sk["variants"].items()
            ],
        )  # fmt: skip
        out.append("")
    tg = d.get("targets", {})
    if tg:
        out += table(
            ["target", "measured", "met"],
            [[k, num(v.get("measured"), 2), num(bool(v.get("met")))] for k, v in tg.items()],
        )
        out.append("")
    return out
