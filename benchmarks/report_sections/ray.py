"""Section "Ray scaling", from ray_scaling.json."""

from __future__ import annotations

from .common import Ctx, num, settings_line, table


def render(ctx: Ctx) -> list[str]:
    d = ctx.data.get("ray_scaling")
    out = ["## Ray scaling", ""]
    if d is None:
        return out + ["Not run (no `ray_scaling.json`).", ""]
    out += [settings_line(d.get("settings")), ""]
    wall = d.get("wall_s", {})
    complete = d.get("completed_trials")
    if complete is None:  # files written before the key was renamed: "complete" held the counts
        complete = d["complete"] if isinstance(d.get("complete"), dict) else {}
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
