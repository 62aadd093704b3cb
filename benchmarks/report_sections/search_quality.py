"""Section "Against random search", from search_quality.json."""

from __future__ import annotations

from pathlib import Path

from .common import Ctx, num, pct, pyplot, settings_line, table


def plot_search_quality(data: dict, path: Path) -> None:
    plt = pyplot()
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


def render(ctx: Ctx) -> list[str]:
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
    default = d.get("default_sampler", "nsga2")  # files written before the default was named
    ratio = d.get(
        "hypervolume_ratio_default_over_random", d.get("hypervolume_ratio_nsga2_over_random")
    )
    out += [
        "",
        f"Hypervolume ratio {default} (the default) / random: {num(ratio)}.",
        "",
    ]
    v = d.get("verdict")
    if v:
        ahead = "more" if v["ahead_by_more_than_spread"] else "not more"
        out += [
            f"Lead over random: {num(v['lead'], 4)}, {ahead} than the spread over seeds "
            f"(the larger standard deviation, {num(v['spread'], 4)}).",
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
